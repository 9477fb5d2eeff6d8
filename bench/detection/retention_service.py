"""OTLP export latency of the running service while its retention pass deletes half a table.

    python -m bench.detection.retention_service [--rows 5000000]

The service's ingest is acknowledged once the records are in its write-ahead log (fdatasync,
collector/wal.py); the log's loader then appends them to DuckDB, where retention's batches
and checkpoints take turns with it (``python -m bench.detection.retention`` measures that
store append). This measures what a client sees: a store of ``--rows`` ``metric_points``
rows, half of which expire a minute after it is filled; the service starts (its first
retention pass finds nothing expired) and its second pass, a minute later, deletes the
expired half while two clients export 200-span OTLP/HTTP requests back to back. Printed:
export latency p50/p99/max before, during (the time the table's row count fell) and after
the pass, and how long the loader took to make the last export visible.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.detection.drift import ROWS_PER_BODY, _inference_body, _post
from mlvigil.core.store.duckdb import DuckDBStore

#: Seconds after the fill when the older half expires (the service's first pass is before it).
EXPIRE_AFTER_S = 60.0


def fill(data_dir: Path, rows: int, now: float) -> None:
    """``rows`` metric points: the first half expire ``EXPIRE_AFTER_S`` after ``now`` under a
    one-day retention, the second half are recent."""
    store = DuckDBStore(data_dir)
    con = store._con  # the bench writes directly: one INSERT ... SELECT per half
    half = rows // 2
    # The expiring half within its last second (all of it expires at once), the rest over an hour.
    for lo, hi, newest, span in ((0, half, now - 86400 + EXPIRE_AFTER_S, 1.0), (half, rows, now, 3600.0)):
        con.execute(
            f"INSERT INTO metric_points (ts, service, host, hw_id, name, unit, kind, value, attributes)"
            f" SELECT {newest} - {span} + i * {span} / {hi - lo}, 'gpu-agent', 'node-' || (i % 16),"
            f" 'GPU-' || (i % 128), 'hw.gpu.utilization', '1', 'gauge', random(), '{{}}'"
            f" FROM range(0, {hi - lo}) t(i)"
        )
    store.close()


def _ms(values: list[float], q: float) -> str:
    return f"{1000 * float(np.quantile(values, q)):.1f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.detection.retention_service", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--rows", type=int, default=5_000_000)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.harness import ServiceHandle

    with tempfile.TemporaryDirectory(prefix="mlvigil-retention-svc-") as tmp:
        data_dir = Path(tmp) / "data"
        now = time.time()
        fill(data_dir, args.rows, now)
        filled = time.time()
        config = {
            "storage": {"retention": {"metric_points": "1d"}, "retention_interval": f"{EXPIRE_AFTER_S:g}s"},
            "detectors": {"interval": 3600},
        }
        svc = ServiceHandle(data_dir, config, None).start(timeout=300)
        started = time.time()
        if started - now >= EXPIRE_AFTER_S:
            print("the service took too long to start: its first pass already deleted the rows")
            svc.stop()
            return 1
        bodies = [_inference_body(ROWS_PER_BODY, 10, seed) for seed in range(16)]
        stop = threading.Event()
        exports: list[tuple[float, float]] = []  # (when it was sent, latency)
        counts: list[tuple[float, int]] = []

        def client(k: int) -> None:
            i = k
            while not stop.is_set():
                sent = time.time()
                status, took = _post(svc.otlp_http + "/v1/traces", bodies[i % len(bodies)])
                if status == 200:
                    exports.append((sent, took))
                i += 2

        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        half = args.rows - args.rows // 2
        deadline = started + 2 * EXPIRE_AFTER_S + 60
        while time.time() < deadline:
            counts.append((time.time(), svc.stats()["metric_points"]))
            if counts[-1][1] <= half:
                break
            time.sleep(0.1)  # the count is polled with a deadline
        time.sleep(5.0)  # after the pass, for comparison
        stop.set()
        for t in threads:
            t.join()
        sent_last = max(s for s, _ in exports)
        acknowledged = sum(1 for _ in exports) * ROWS_PER_BODY
        t0 = time.time()
        while time.time() < t0 + 60 and svc.stats()["inferences"] < acknowledged:
            time.sleep(0.05)  # the loader catching up, polled with a deadline
        visible_s = time.time() - sent_last
        load = os.getloadavg()
        svc.stop()
    falling = [t for (t, c), (_, prev) in zip(counts[1:], counts, strict=False) if c < prev]
    if not falling:
        print("retention deleted nothing within the bench's time")
        return 1
    begin, end = falling[0] - 0.1, falling[-1]
    phases = {
        "before": [took for s, took in exports if s + took < begin],
        "during": [took for s, took in exports if s <= end and s + took >= begin],
        "after": [took for s, took in exports if s > end],
    }
    print(
        f"store: {args.rows:,} metric_points rows (filled in {filled - now:.1f} s), {half:,} expired;"
        f" load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    print(f"retention pass: the row count fell for {end - begin:.2f} s")
    for name, lat in phases.items():
        print(
            f"  {name:6s} {len(lat):4d} exports of {ROWS_PER_BODY} spans: p50 {_ms(lat, 0.5)} ms,"
            f" p99 {_ms(lat, 0.99)} ms, max {_ms(lat, 1.0)} ms"
        )
    print(f"the last export visible in the store {visible_s:.2f} s after it was sent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
