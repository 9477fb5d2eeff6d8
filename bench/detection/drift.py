"""bench/detection drift: drift monitors at fleet scale over a large store.

A store of ``--rows`` inference rows (25 features: 20 numeric + 5 categorical, ``--models``
models, 5,000 rows/s of traffic) plus one model with a 360k-row last hour, generated in
DuckDB and bulk-inserted. Then, in one run:

1. In process, per monitor (10k-row reference, 10k-row sliding window): the steady
   evaluation as a monitor runs it (``MonitorDetector.evaluate`` on a new window each time),
   the same window the way monitors read it before this change (``Store.query`` and JSON
   parsing per row, ``feature_columns``), and the bare statistics of that window
   (``compare`` on ready columns): the ratios say what the evaluation adds to the statistics.
   The same for a 360k-row (one hour) window.
2. Over the real service (``mlvigil serve`` on that store) for each monitor count: the first
   verdict of every monitor (one ``POST /api/v1/evaluate`` pass: references built, min-P
   calibrations queued, Bonferroni meanwhile), steady passes after new rows reached every
   model, per-detector evaluation seconds from ``/metrics``, peak RSS, and, for the count
   closest to 50, the OTLP ingest rate and export and ``/healthz`` latencies with the detectors
   idle and while passes run back to back. Last, a restart: how many calibrations the first
   pass finds ready. Each count's steady pass is printed beside the bare statistics of the
   same windows (``same_windows``: the newest rows at each pass, timed in process once the
   service has stopped): the ingest phases post 16 bodies over and over, so the newest
   windows drift and their statistics cost several times those of the older windows of 1.

    python -m bench.detection.drift [--rows 5000000] [--monitors 1,10,50,200] [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from detectors.drift.compare import compare
from detectors.drift.config import MonitorConfig, MonitorDefaults
from detectors.drift.monitor import MonitorDetector
from detectors.drift.monitors.windowed import compare_options
from detectors.drift.sources import INFERENCE_COLUMNS, feature_columns
from mlvigil.core.store.duckdb import DuckDBStore

NUMERIC = 20
CATEGORICAL = 5
RATE = 5000.0  # rows per second of the generated traffic, all models together
BIG_MODEL = "big"
BIG_ROWS = 360_000  # one hour at 100 rows/s
ROWS_PER_BODY = 200  # spans per OTLP export request


def _features_sql() -> str:
    # Normal numbers by Box-Muller; categories of 8 values with unequal shares.
    parts = [
        f"n{j} := round({j} + sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()), 5)"
        for j in range(NUMERIC)
    ]
    parts += [f"c{j} := 'v' || CAST(floor(pow(random(), 2) * 8) AS INTEGER)" for j in range(CATEGORICAL)]
    return f"CAST(to_json(struct_pack({', '.join(parts)})) AS VARCHAR)"


def generate(data_dir: Path, rows: int, models: int, end: float) -> float:
    """Fill a store; returns seconds taken. Rows of model ``m{i}`` interleave over time."""
    t0 = time.perf_counter()
    store = DuckDBStore(data_dir)
    con = store._con  # the bench writes directly: one INSERT ... SELECT per million rows
    chunk = 1_000_000
    for lo in range(0, rows, chunk):
        hi = min(rows, lo + chunk)
        con.execute(
            f"INSERT INTO inferences SELECT {end} - ({rows} - i) / {RATE} AS ts, 'bench' AS service,"
            f" 'm' || (i % {models}) AS model, NULL AS model_version, 'r' || i AS request_id,"
            f" {_features_sql()} AS features, '1' AS prediction, NULL AS score, NULL AS latency_s,"
            f" 'bench' AS source FROM range({lo}, {hi}) t(i)"
        )
    con.execute(
        f"INSERT INTO inferences SELECT {end} - 3600 + i * 3600.0 / {BIG_ROWS} AS ts, 'bench', '{BIG_MODEL}',"
        f" NULL, 'b' || i, {_features_sql()}, '1', NULL, NULL, 'bench' FROM range({BIG_ROWS}) t(i)"
    )
    store.close()
    return time.perf_counter() - t0


def monitor_config(name: str, model: str, start: float, end: float, **window: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "data",
        "service": "bench",
        "model": model,
        "reference": {"start": start, "end": end, "max_rows": 10_000},
        "window": window or {"size": 10_000, "min_size": 1000},
    }


def _detector(cfg: dict[str, Any]) -> MonitorDetector:
    return MonitorDetector(MonitorConfig.model_validate(cfg).resolved(MonitorDefaults()))


def in_process(data_dir: Path, models: int, begin: float, end: float, samples: int) -> dict[str, float]:
    """Steady per-monitor cost (monitor, old read path, bare statistics) on 10k and 360k windows."""
    store = DuckDBStore(data_dir)
    out: dict[str, float] = {}
    try:
        ref_end = begin + (end - begin) / 2
        dets = [_detector(monitor_config(f"d{i}", f"m{i % models}", begin, ref_end)) for i in range(samples)]
        t0 = time.perf_counter()
        for det in dets:
            det.evaluate(store, end)  # reference, first window, calibration computed inline
        out["first_inline_s"] = (time.perf_counter() - t0) / len(dets)
        monitor_s, old_s, stats_s = [], [], []
        for k, det in enumerate(dets):
            now = end - 3.7 * (k + 1)  # a window not seen before
            t0 = time.perf_counter()
            det.evaluate(store, now)
            monitor_s.append(time.perf_counter() - t0)
            rows = det.ctx.source.rows(store, until=now, last=10_000)
            cols = det.ctx.source.columns(rows, store)
            t0 = time.perf_counter()
            compare(det.reference.model, cols, compare_options(det.ctx))
            stats_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            old = store.query(
                "inferences", columns=INFERENCE_COLUMNS, until=now, where=det.ctx.source.where(), last=10_000
            )
            compare(det.reference.model, feature_columns(old), compare_options(det.ctx))
            old_s.append(time.perf_counter() - t0)
        out["monitor_s"] = statistics.median(monitor_s)
        out["stats_s"] = statistics.median(stats_s)
        out["old_s"] = statistics.median(old_s)

        big = _detector(
            monitor_config("big", BIG_MODEL, end - 3600, end - 1800, duration=3600, min_size=1000)
        )
        big.evaluate(store, end - 1)
        t0 = time.perf_counter()
        big.evaluate(store, end)
        out["big_monitor_s"] = time.perf_counter() - t0
        rows = big.ctx.source.rows(store, since=end - 3600, until=end)
        cols = big.ctx.source.columns(rows, store)
        out["big_rows"] = float(len(rows["ts"]))
        t0 = time.perf_counter()
        compare(big.reference.model, cols, compare_options(big.ctx))
        out["big_stats_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        old = store.query(
            "inferences", columns=INFERENCE_COLUMNS, since=end - 3600, until=end, where=big.ctx.source.where()
        )
        compare(big.reference.model, feature_columns(old), compare_options(big.ctx))
        out["big_old_s"] = time.perf_counter() - t0
    finally:
        store.close()
    return out


def same_windows(
    data_dir: Path, models: int, begin: float, end: float, pass_ends: list[float], samples: int
) -> float:
    """The bare statistics (``compare``, Bonferroni) of the windows the service's steady passes
    evaluated, in process on the store the service left: the newest rows at each pass, not the
    older ones ``in_process`` times (the newest are what the ingest phases posted, and drift).
    Each sampled monitor's windows are taken in pass order, as its worker met them (the KS
    p-values of the previous window cached); the median of its later passes, then of the
    monitors."""
    store = DuckDBStore(data_dir)
    try:
        ref_end = begin + (end - begin) / 2
        per_monitor = []
        for i in range(samples):
            det = _detector(monitor_config(f"d{i}", f"m{i % models}", begin, ref_end))
            det.reference.ensure(store, pass_ends[0], det.ctx.source)
            options = dataclasses.replace(compare_options(det.ctx), correction="bonferroni")
            took = []
            for until in pass_ends:
                rows = det.ctx.source.rows(store, until=until, last=10_000)
                cols = det.ctx.source.columns(rows, store)
                t0 = time.perf_counter()
                compare(det.reference.model, cols, options)
                took.append(time.perf_counter() - t0)
            per_monitor.append(statistics.median(took[1:] or took))
        return statistics.median(per_monitor)
    finally:
        store.close()


# -- over the service -----------------------------------------------------------------------
def _inference_body(n: int, models: int, seed: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    rng = np.random.default_rng(seed)
    now = time.time_ns()
    spans = []
    for i in range(n):
        feats: dict[str, Any] = {f"n{j}": round(float(j + rng.normal()), 5) for j in range(NUMERIC)}
        feats.update({f"c{j}": f"v{int(rng.random() ** 2 * 8)}" for j in range(CATEGORICAL)})
        attrs = {
            "mlvigil.model.name": f"m{(seed * n + i) % models}",
            "mlvigil.inference.request_id": f"s{seed}-{i}",
            "mlvigil.inference.features": json.dumps(feats),
            "mlvigil.inference.prediction": "1",
        }
        spans.append(
            Span(
                trace_id=rng.bytes(16),
                span_id=rng.bytes(8),
                name="predict",
                start_time_unix_nano=now - 1_000_000,
                end_time_unix_nano=now,
                attributes=[KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs.items()],
            )
        )
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value="bench"))]
                ),
                scope_spans=[ScopeSpans(spans=spans)],
            )
        ]
    )
    return req.SerializeToString()


def _post(url: str, body: bytes, content_type: str = "application/x-protobuf") -> tuple[int, float]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            resp.read()
            return resp.status, time.perf_counter() - t0
    except urllib.error.HTTPError as err:
        return err.code, time.perf_counter() - t0


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _q(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) * 1000 if values else float("nan")


def ingest_phase(svc: Any, bodies: list[bytes], seconds: float, busy: bool) -> dict[str, float]:
    """OTLP rows/s from two clients for ``seconds``, export and /healthz latency; with
    ``busy``, evaluation passes run back to back meanwhile."""
    stop = threading.Event()
    exports: list[float] = []
    health: list[float] = []
    rows = [0]
    passes: list[float] = []

    def client(k: int) -> None:
        i = k
        while not stop.is_set():
            status, took = _post(svc.otlp_http + "/v1/traces", bodies[i % len(bodies)])
            if status == 200:
                exports.append(took)
                rows[0] += ROWS_PER_BODY
            i += 2

    def healthz() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            urllib.request.urlopen(svc.api + "/healthz", timeout=60).read()
            health.append(time.perf_counter() - t0)
            stop.wait(0.2)

    def evaluator() -> None:
        while not stop.is_set():
            _, took = _post(svc.api + "/api/v1/evaluate", b"{}", "application/json")
            passes.append(took)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    threads.append(threading.Thread(target=healthz))
    if busy:
        threads.append(threading.Thread(target=evaluator))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    stop.wait(seconds)
    stop.set()
    # The rate over the clients' own time: an evaluation pass in progress outlives it.
    elapsed = time.perf_counter() - t0
    acknowledged = rows[0]
    for t in threads:
        t.join()
    return {
        "rows_per_s": acknowledged / elapsed,
        "export_p50_ms": _q(exports, 0.5),
        "export_p99_ms": _q(exports, 0.99),
        "healthz_p50_ms": _q(health, 0.5),
        "healthz_p99_ms": _q(health, 0.99),
        "passes": float(len(passes)),
    }


def _statuses(svc: Any) -> list[dict[str, Any]]:
    return [m["status"] for m in svc.get("/api/v1/monitors")["monitors"]]


def service_run(
    data_dir: Path,
    count: int,
    models: int,
    begin: float,
    end: float,
    *,
    steady_passes: int,
    ingest_seconds: float,
    calibration_wait: float,
    restart: bool,
    statistics_workers: int = 1,
    ingest_rounds: int = 1,
) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.harness import ServiceHandle

    ref_end = begin + (end - begin) / 2
    monitors = [monitor_config(f"d{i}", f"m{i % models}", begin, ref_end) for i in range(count)]
    config = {
        "detectors": {
            "interval": 3600,
            "drift": {"monitors": monitors, "statistics_workers": statistics_workers},
        },
        "ingest": {"queue_max_items": 1_000_000},
    }
    svc = ServiceHandle(data_dir, config, None).start(timeout=300)
    out: dict[str, Any] = {"monitors": count}
    try:
        _, took = _post(svc.api + "/api/v1/evaluate", b"{}", "application/json")
        out["first_pass_s"] = took
        states = _statuses(svc)
        out["verdicts"] = sum(s.get("status") in ("ok", "drift") for s in states)
        out["pending_first"] = sum(s.get("calibration") == "pending" for s in states)
        passes = []
        for k in range(steady_passes):
            # New rows (new times) for every model: every window slides.
            for j in range(models // ROWS_PER_BODY + 1):
                _post(svc.otlp_http + "/v1/traces", _inference_body(ROWS_PER_BODY, models, 1000 + k * 10 + j))
            _, took = _post(svc.api + "/api/v1/evaluate", b"{}", "application/json")
            passes.append(took)
            # Every row the pass saw is older than this, every row posted later younger.
            out.setdefault("pass_ends", []).append(time.time())
        bodies = [_inference_body(ROWS_PER_BODY, models, seed) for seed in range(16)]
        out["steady_pass_s"] = statistics.median(passes)
        out["steady_per_monitor_s"] = out["steady_pass_s"] / count
        if ingest_seconds:
            # Idle and busy phases alternate, so that drift in the machine's load (shared
            # machines) falls on both; each phase's figures are the median over the rounds.
            rounds: dict[str, list[dict[str, float]]] = {"idle": [], "busy": []}
            for _ in range(max(1, ingest_rounds)):
                rounds["idle"].append(ingest_phase(svc, bodies, ingest_seconds, busy=False))
                rounds["busy"].append(ingest_phase(svc, bodies, ingest_seconds, busy=True))
            for phase, runs in rounds.items():
                out[phase] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                out[phase]["rounds"] = [r["rows_per_s"] for r in runs]
        deadline = time.monotonic() + calibration_wait
        while time.monotonic() < deadline:
            _post(svc.api + "/api/v1/evaluate", b"{}", "application/json")
            if all(s.get("calibration") == "ready" for s in _statuses(svc)):
                break
            time.sleep(2.0)  # the worker computes meanwhile; polled with a deadline
        out["calibrated_before_restart"] = sum(s.get("calibration") == "ready" for s in _statuses(svc))
        assert svc.proc is not None
        out["peak_rss_mb"] = _peak_rss_mb(svc.proc.pid)
        if not restart:
            return out
        # Opening a 5M-row store takes 15-20 s on a loaded 2-core machine: more than
        # restart()'s default wait for readiness.
        svc.kill()
        svc.start(timeout=300)
        _, took = _post(svc.api + "/api/v1/evaluate", b"{}", "application/json")
        out["first_pass_after_restart_s"] = took
        out["calibrated_after_restart"] = sum(s.get("calibration") == "ready" for s in _statuses(svc))
    finally:
        try:
            svc.stop(timeout=120)
        except subprocess.TimeoutExpired:
            # A graceful stop can take long on a loaded machine (its last checkpoint, say):
            # the figures are taken; the next count starts a fresh service on the same store.
            print("  (the service did not stop within 120 s; killed)", file=sys.stderr)
            svc.kill()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.detection.drift", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="inference rows besides the 360k-row model")
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--monitors", default="1,10,50,200", help="monitor counts, comma-separated")
    ap.add_argument("--samples", type=int, default=10, help="monitors timed in process")
    ap.add_argument("--steady-passes", type=int, default=3)
    ap.add_argument("--ingest-seconds", type=float, default=15.0)
    ap.add_argument("--calibration-wait", type=float, default=120.0)
    ap.add_argument("--no-in-process", action="store_true", help="reuse the in-process numbers of --data-dir")
    ap.add_argument("--data-dir", type=Path, help="reuse (or keep) the generated store here")
    ap.add_argument(
        "--statistics-workers",
        type=int,
        default=1,
        help="detectors.drift.statistics_workers of the service (0: statistics in the service process)",
    )
    ap.add_argument("--ingest-rounds", type=int, default=1, help="idle/busy ingest phase pairs (medians)")
    ap.add_argument("--quick", action="store_true", help="500k rows, 1 and 10 monitors, short phases")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.monitors, args.samples = 500_000, "1,10", 4
        args.steady_passes, args.ingest_seconds, args.calibration_wait = 2, 8.0, 60.0
    counts = [int(c) for c in args.monitors.split(",") if c]
    tmp = Path(tempfile.mkdtemp(prefix="bench-detection-"))
    data_dir = args.data_dir or tmp / "data"
    meta = data_dir / "bench-meta.json"
    try:
        if meta.exists():
            end = json.loads(meta.read_text())["end"]
            print(f"store: reusing {data_dir}")
        else:
            end = time.time()
            took = generate(data_dir, args.rows, args.models, end)
            meta.write_text(json.dumps({"end": end, "rows": args.rows, "models": args.models}))
            print(
                f"store: {args.rows:,} rows + {BIG_ROWS:,} ({args.models} models) generated in {took:.1f} s"
            )
        begin = end - args.rows / RATE
        print(f"machine: {os.cpu_count()} cores")
        if args.no_in_process:
            r = json.loads((data_dir / "bench-in-process.json").read_text())
            print("\n== in process: from the earlier run on this store (--no-in-process) ==")
        else:
            print("\n== in process: one monitor, 25 features (20 numeric + 5 categorical) ==")
            r = in_process(data_dir, args.models, begin, end, args.samples)
            (data_dir / "bench-in-process.json").write_text(json.dumps(r))
        print(
            f"  10k-row window: monitor evaluation {r['monitor_s']:.3f} s,"
            f" bare statistics {r['stats_s']:.3f} s"
            f" (ratio {r['monitor_s'] / r['stats_s']:.2f}x); before (rows + JSON per row + stats)"
            f" {r['old_s']:.3f} s ({r['old_s'] / r['monitor_s']:.1f}x the monitor now)"
        )
        print(
            f"  first evaluation with the calibration inline (as before; tools): {r['first_inline_s']:.2f} s"
        )
        print(
            f"  {int(r['big_rows']):,}-row window: monitor {r['big_monitor_s']:.2f} s, bare statistics"
            f" {r['big_stats_s']:.2f} s (ratio {r['big_monitor_s'] / r['big_stats_s']:.2f}x);"
            f" before {r['big_old_s']:.2f} s"
        )
        print(
            "\n== over the service (POST /api/v1/evaluate passes;"
            " minp monitors, Bonferroni until calibrated) =="
        )
        ingest_at = min(counts, key=lambda c: abs(c - 50))
        for count in counts:
            res = service_run(
                data_dir,
                count,
                args.models,
                begin,
                end,
                steady_passes=args.steady_passes,
                ingest_seconds=args.ingest_seconds if count == ingest_at else 0.0,
                calibration_wait=args.calibration_wait if count == ingest_at else 0.0,
                restart=count == ingest_at or count <= 10,
                statistics_workers=args.statistics_workers,
                ingest_rounds=args.ingest_rounds,
            )
            per = res["steady_per_monitor_s"]
            same = same_windows(data_dir, args.models, begin, end, res["pass_ends"], min(count, args.samples))
            print(
                f"  {count} monitors: first verdicts {res['first_pass_s']:.2f} s"
                f" ({res['verdicts']}/{count} decided, {res['pending_first']} of them Bonferroni while"
                f" calibrating); steady pass {res['steady_pass_s']:.2f} s ({per:.3f} s per monitor,"
                f" {per / r['stats_s']:.2f}x the statistics above, {per / same:.2f}x the bare statistics"
                f" of the same windows: {same:.3f} s); peak RSS {res['peak_rss_mb']:.0f} MB"
            )
            if "first_pass_after_restart_s" in res:
                print(
                    f"     restart: first pass {res['first_pass_after_restart_s']:.2f} s, calibrations ready"
                    f" {res['calibrated_after_restart']}/{count}"
                    f" (before restart {res['calibrated_before_restart']})"
                )
            for phase in ("idle", "busy"):
                if phase in res:
                    p = res[phase]
                    print(
                        f"     ingest {phase:4s}: {p['rows_per_s']:.0f} rows/s over OTLP/HTTP; export p50/p99"
                        f" {p['export_p50_ms']:.0f}/{p['export_p99_ms']:.0f} ms; /healthz p50/p99"
                        f" {p['healthz_p50_ms']:.1f}/{p['healthz_p99_ms']:.1f} ms"
                        + (f"; {int(p['passes'])} passes" if phase == "busy" else "")
                    )
            if "busy" in res:
                print(
                    "     ingest while evaluating:"
                    f" {res['busy']['rows_per_s'] / res['idle']['rows_per_s']:.0%} of idle"
                )
    finally:
        if args.data_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
