"""Ingest append latency while retention deletes half of a large table, vs. idle.

    python -m bench.detection.retention [--rows 5000000] [--append-rows 100]

A store of ``--rows`` ``metric_points`` rows spread evenly over 30 days; a writer thread
appends ``--append-rows`` points every 5 ms (each append is one acknowledged ingest
transaction) and records how long each took: with nothing else running (idle), while one
DELETE removes the older half (retention before batching, on a copy of the store), and
while ``apply_retention`` removes it in batches. Printed: rows deleted, wall time and
transactions, append latency p50/p99/max in each phase, and the longest time retention held
the store's write lock at once (what an append can wait for; less sensitive than the append
maximum to a busy machine, which also stretches the append's own commit).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

DAY = 86400.0
PAUSE_S = 0.005


def fill(store: DuckDBStore, rows: int, now: float, chunk: int = 500_000) -> None:
    """``rows`` metric points spread evenly over the 30 days before ``now``, in ts order."""
    ts = np.linspace(now - 30 * DAY, now - 1.0, rows)
    rng = np.random.default_rng(0)
    for lo in range(0, rows, chunk):
        part = ts[lo : lo + chunk]
        n = len(part)
        batch = RecordBatch(
            columns={
                "metric_points": {
                    "ts": part.tolist(),
                    "service": ["gpu-agent"] * n,
                    "host": [f"node-{i % 16}" for i in range(lo, lo + n)],
                    "hw_id": [f"GPU-{i % 128:03d}" for i in range(lo, lo + n)],
                    "name": ["hw.gpu.utilization"] * n,
                    "unit": ["1"] * n,
                    "kind": ["gauge"] * n,
                    "value": rng.random(n).tolist(),
                    "count": [None] * n,
                    "monotonic": [None] * n,
                    "attributes": ["{}"] * n,
                }
            }
        )
        store.append(batch)


def _point_batch(rows: int, now: float) -> RecordBatch:
    batch = RecordBatch()
    for i in range(rows):
        batch.add("metric_points", ts=now, host="node-0", hw_id=f"GPU-{i:03d}", name="bench", value=1.0)
    return batch


class HoldTimer:
    """Stands in for the store's write lock and times each hold taken by one thread, with
    what took it (the store method holding it: ``_write`` a delete batch, ``_checkpoint`` a
    checkpoint of the deletes, ``_retention_mode`` the pass's start and end)."""

    def __init__(self, lock: threading.Lock, thread: threading.Thread) -> None:
        self._lock = lock
        self._thread = thread
        self._since = 0.0
        self._what = ""
        self.holds: list[float] = []
        self.by_what: dict[str, list[float]] = {}

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        if taken and threading.current_thread() is self._thread:
            self._since = time.perf_counter()
        return taken

    def release(self) -> None:
        if threading.current_thread() is self._thread:
            held = time.perf_counter() - self._since
            self.holds.append(held)
            self.by_what.setdefault(self._what, []).append(held)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        if threading.current_thread() is self._thread:
            self._what = sys._getframe(1).f_code.co_name
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Writer(threading.Thread):
    """Appends a small batch every ``PAUSE_S`` until stopped; keeps each append's latency."""

    def __init__(self, store: DuckDBStore, rows: int) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.rows = rows
        self.latencies: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            batch = _point_batch(self.rows, time.time())
            t0 = time.perf_counter()
            self.store.append(batch)
            self.latencies.append(time.perf_counter() - t0)
            self.stop.wait(PAUSE_S)


def _summary(lat: list[float]) -> str:
    if not lat:
        return "no appends"
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else [lat[0]] * 99
    p50, p99, top = 1000 * q[49], 1000 * q[98], 1000 * max(lat)
    return f"{len(lat)} appends, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {top:.1f} ms"


def single_delete(store: DuckDBStore, cutoffs: dict[str, float]) -> dict[str, int]:
    """Retention as it was: one DELETE per table, in one transaction (the comparison)."""
    out: dict[str, int] = {}
    for table, cutoff in cutoffs.items():
        out[table] = store._count_written(f'DELETE FROM "{table}" WHERE ts < ?', [cutoff])
    return out


@dataclass
class Phase:
    name: str
    deleted: int
    seconds: float
    batches: int
    latencies: list[float]
    holds: list[float] = field(default_factory=list)
    by_what: dict[str, list[float]] = field(default_factory=dict)


def _with_writer(
    store: DuckDBStore, append_rows: int, work: Callable[[DuckDBStore], dict[str, int]]
) -> Phase:
    writer = Writer(store, append_rows)
    timer = HoldTimer(store._write_lock, threading.current_thread())
    store._write_lock = timer  # type: ignore[assignment]
    writer.start()
    deadline = time.monotonic() + 10.0
    while len(writer.latencies) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)  # the writer is in its stride before retention starts
    t0 = time.perf_counter()
    deleted = work(store)
    seconds = time.perf_counter() - t0
    writer.stop.set()
    writer.join()
    store._write_lock = timer._lock
    return Phase(
        "",
        sum(deleted.values()),
        seconds,
        store.retention_batches,
        writer.latencies,
        timer.holds,
        timer.by_what,
    )


def measure(
    rows: int, append_rows: int, idle_s: float, tmp: Path, settings: list[tuple[int, int]]
) -> tuple[float, list[Phase]]:
    """Fills one store, copies it, and runs the idle phase, the single DELETE on one copy and
    the batched retention on one copy per ``(batch rows, checkpoint bytes)`` setting."""
    now = time.time()
    cutoffs = {"metric_points": now - 15 * DAY}
    base = DuckDBStore(tmp / "base", min_free_bytes=0)
    t0 = time.perf_counter()
    fill(base, rows, now)
    fill_s = time.perf_counter() - t0
    base.close()  # checkpointed: a settled database, as after hours of ingest
    phases: list[Phase] = []
    names = ["single DELETE (before)"] + [
        f"batched ({batch:,} rows, checkpoint at {ckpt / 2**20:g} MiB)" for batch, ckpt in settings
    ]
    for i, name in enumerate(names):
        (tmp / str(i)).mkdir()
        shutil.copy(base.path, tmp / str(i) / base.path.name)
        batch, ckpt = settings[i - 1] if i else settings[0]
        store = DuckDBStore(
            tmp / str(i), min_free_bytes=0, retention_batch_rows=batch, retention_checkpoint_bytes=ckpt
        )
        try:
            if not phases:
                idle = Writer(store, append_rows)
                idle.start()
                time.sleep(idle_s)
                idle.stop.set()
                idle.join()
                phases.append(Phase("idle", 0, idle_s, 0, idle.latencies))
            single = "single" in name
            phase = _with_writer(
                store,
                append_rows,
                (lambda st: single_delete(st, cutoffs))
                if single
                else (lambda st: st.apply_retention(cutoffs)),
            )
            phase.name = name
            if "single" in name:
                phase.batches = 1
            phases.append(phase)
        finally:
            store.close()
    return fill_s, phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.detection.retention", description=(__doc__ or "").split("\n")[0]
    )
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--append-rows", type=int, default=100)
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument(
        "--settings",
        default="20000:2097152",
        help="batched runs, each BATCH_ROWS:CHECKPOINT_BYTES, comma-separated (default: the store's)",
    )
    args = ap.parse_args(argv)
    settings = [(int(b), int(c)) for b, c in (s.split(":") for s in args.settings.split(","))]
    with tempfile.TemporaryDirectory(prefix="mlvigil-retention-") as tmp:
        fill_s, phases = measure(args.rows, args.append_rows, args.idle_s, Path(tmp), settings)
    print(
        f"store: {args.rows:,} metric_points rows (filled in {fill_s:.1f} s); {args.append_rows}-row appends"
    )
    for ph in phases:
        what = (
            "idle"
            if ph.name == "idle"
            else (
                f"{ph.name}: deleted {ph.deleted:,} rows in {ph.seconds:.2f} s, {ph.batches} transaction(s)"
            )
        )
        print(f"{what}\n    append latency: {_summary(ph.latencies)}")
        if ph.holds:
            print(
                f"    retention's write-lock holds: {len(ph.holds)}, longest {1000 * max(ph.holds):.1f} ms,"
                f" p99 {1000 * sorted(ph.holds)[int(0.99 * (len(ph.holds) - 1))]:.1f} ms"
            )
            for what, holds in sorted(ph.by_what.items()):
                busy = [h for h in holds if h >= 0.001]  # a checkpoint of a small WAL does nothing
                print(
                    f"      {what}: {len(holds)} ({len(busy)} of 1 ms or more),"
                    f" median {1000 * statistics.median(busy or holds):.1f} ms,"
                    f" longest {1000 * max(holds):.1f} ms"
                )
    for ph in phases[2:]:
        worst = max(ph.latencies) if ph.latencies else 0.0
        verdict = "met" if worst < 0.050 else "NOT met"
        print(f"goal: appends during retention under 50 ms: {verdict} (max {1000 * worst:.1f} ms, {ph.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
