"""Store benchmark: rows/s into PostgreSQL vs embedded DuckDB on the same batches, and the
detectors' queries on N rows, printed side by side.

The batches are GPU samples as the agent writes them (``metric_points``: 10,000 GPUs, a few
metrics each) and LLM calls (``llm_calls``); both stores get the very same ``RecordBatch``
objects through ``append_many`` (group commit), so the numbers include what the service pays
(Arrow conversion for DuckDB, binary COPY for PostgreSQL), not a raw loader's best case.
CPU is reported per side: this process (client) and, for PostgreSQL, the server backend
that ran the COPY (from /proc), so rows/s per core can be read off.

Run: ``python -m bench.store [--sizes 1000000,10000000] [--batch 5000] [--dsn DSN]``. Without
``--dsn`` a throw-away PostgreSQL server is started (tests/pg.py; Debian's postgresql).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlvigil.core.records import RecordBatch
from mlvigil.core.store.base import Store
from mlvigil.core.store.duckdb import DuckDBStore
from mlvigil.core.store.postgres import PostgresStore

GPUS = 10_000
METRICS = ("hw.gpu.utilization", "hw.gpu.memory.usage", "hw.gpu.temperature", "hw.gpu.power")


def gpu_batches(rows: int, batch: int, t_end: float, seed: int = 1) -> Iterator[list[RecordBatch]]:
    """``rows`` GPU samples, 1 Hz per GPU and metric, ending at ``t_end``, in chunks of up to
    200 batches (10 M rows as Python objects would not fit this machine's memory at once)."""
    rng = random.Random(seed)
    per_second = GPUS * len(METRICS)
    seconds = max(1, rows // per_second)
    out: list[RecordBatch] = []
    b = RecordBatch()
    n = 0
    for s in range(seconds + 1):
        ts = t_end - seconds + s
        for g in range(GPUS):
            for m in METRICS:
                if n >= rows:
                    break
                b.add(
                    "metric_points",
                    ts=ts,
                    service="gpu-agent",
                    host=f"node-{g // 8}",
                    hw_id=f"GPU-{g:05d}",
                    name=m,
                    unit="1",
                    kind="gauge",
                    value=rng.random() * 100,
                    attributes='{"hw.type":"gpu"}',
                )
                n += 1
                if b.rows("metric_points") >= batch:
                    out.append(b)
                    b = RecordBatch()
                    if len(out) >= 200:
                        yield out
                        out = []
    if b.rows("metric_points"):
        out.append(b)
    if out:
        yield out


def llm_batches(rows: int, batch: int, t_end: float, seed: int = 2) -> list[RecordBatch]:
    rng = random.Random(seed)
    out: list[RecordBatch] = []
    b = RecordBatch()
    for i in range(rows):
        b.add(
            "llm_calls",
            ts=t_end - rows / 5000 + i / 5000,
            service=f"app-{i % 20}",
            dialect="gen_ai",
            provider="openai",
            operation="chat",
            request_model="gpt-4o-mini",
            response_model="gpt-4o-mini",
            input_tokens=rng.randint(10, 2000),
            output_tokens=rng.randint(10, 500),
            total_tokens=0,
            latency_s=rng.random() * 3,
            finish_reasons='["stop"]',
        )
        if b.rows("llm_calls") >= batch:
            out.append(b)
            b = RecordBatch()
    if b.rows("llm_calls"):
        out.append(b)
    return out


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(
    store: Store, batches: list[RecordBatch], group: int, server_pid: int | None, into: dict[str, float]
) -> None:
    """Append ``batches`` in group commits; adds rows, wall and CPU seconds to ``into``."""
    rows = sum(sum(b.rows(t) for t in b.columns) for b in batches)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    srv0 = _proc_cpu(server_pid) if server_pid else 0.0
    for i in range(0, len(batches), group):
        errors = [e for e in store.append_many(batches[i : i + group]) if e is not None]
        if errors:
            raise SystemExit(f"load failed: {errors[0]}")
    for key, value in (
        ("rows", rows),
        ("wall", time.perf_counter() - wall0),
        ("client_cpu", time.process_time() - cpu0),
        ("server_cpu", (_proc_cpu(server_pid) - srv0) if server_pid else 0.0),
    ):
        into[key] = into.get(key, 0.0) + value


def queries(t_end: float) -> dict[str, Callable[[Store], Any]]:
    """The reads detectors make each pass (GPU health rules, LLM traffic drift)."""
    return {
        "gpu: subjects seen in 5 min": lambda s: s.distinct(
            "metric_points", ["hw_id"], since=t_end - 300, where={"name": "hw.gpu.utilization"}
        ),
        "gpu: one GPU's metric, 1 h": lambda s: s.query(
            "metric_points",
            columns=["ts", "value"],
            since=t_end - 3600,
            where={"hw_id": "GPU-00042", "name": "hw.gpu.temperature"},
        ),
        "gpu: newest 1,000 samples": lambda s: s.query(
            "metric_points", columns=["ts", "hw_id", "value"], last=1000
        ),
        "llm: calls of one app, 10 min": lambda s: s.query(
            "llm_calls",
            columns=["ts", "latency_s", "input_tokens", "output_tokens"],
            since=t_end - 600,
            where={"service": "app-3"},
        ),
    }


def timed(fn: Callable[[Store], Any], store: Store, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(store)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", default="1000000,10000000", help="rows of GPU samples per run, comma-separated"
    )
    ap.add_argument("--llm-rows", type=int, default=200_000, help="LLM call rows loaded besides")
    ap.add_argument("--batch", type=int, default=5000, help="rows per RecordBatch (one OTLP export)")
    ap.add_argument("--group", type=int, default=8, help="batches per group commit")
    ap.add_argument("--dsn", help="an existing PostgreSQL database (default: start a throw-away server)")
    args = ap.parse_args(argv)
    sizes = [int(float(x)) for x in args.sizes.split(",") if x.strip()]
    server = None
    if not args.dsn:
        from tests.pg import PostgresServer

        server = PostgresServer().start()
    print(f"cores: {os.cpu_count()}; batch {args.batch} rows, {args.group} batches per commit")
    try:
        for size in sizes:
            t_end = time.time()
            data = Path(tempfile.mkdtemp(prefix="bench-store-"))
            dsn = args.dsn or server.create_database()  # type: ignore[union-attr]
            pg = PostgresStore(dsn)
            stores: dict[str, Store] = {"duckdb": DuckDBStore(data), "postgres": pg}
            # Connected, with today's partitions, before the clock starts.
            pg.append_many(llm_batches(1, 1, t_end) + next(gpu_batches(1, 1, t_end)))
            assert pg._writer is not None
            pids = {"duckdb": None, "postgres": pg._writer.info.backend_pid}
            results: dict[str, dict[str, Any]] = {s: {"gpu": {}, "llm": {}} for s in stores}
            try:
                # The same batches to both stores, chunk by chunk.
                for chunk in gpu_batches(size, args.batch, t_end):
                    for name, store in stores.items():
                        load(store, chunk, args.group, pids[name], results[name]["gpu"])
                llm = llm_batches(args.llm_rows, args.batch, t_end)
                for name, store in stores.items():
                    load(store, llm, args.group, pids[name], results[name]["llm"])
                for name, store in stores.items():
                    results[name]["queries"] = {q: timed(fn, store) for q, fn in queries(t_end).items()}
                _print(size, args.llm_rows, results)
            finally:
                for store in stores.values():
                    store.close()
                shutil.rmtree(data, ignore_errors=True)
    finally:
        if server is not None:
            server.stop()
    return 0


def _print(size: int, llm_rows: int, results: dict[str, dict[str, Any]]) -> None:
    print(f"\n== {size:,} GPU sample rows (+ {llm_rows:,} LLM call rows) ==")
    print(f"{'':34}{'duckdb':>16}{'postgres':>16}")
    for kind in ("gpu", "llm"):
        row = [results[s][kind] for s in ("duckdb", "postgres")]
        print(f"{kind + ' load rows/s (wall)':34}" + "".join(f"{r['rows'] / r['wall']:>16,.0f}" for r in row))
        per_core = [r["rows"] / max(1e-9, r["client_cpu"] + r["server_cpu"]) for r in row]
        print(f"{kind + ' rows per CPU-second':34}" + "".join(f"{x:>16,.0f}" for x in per_core))
        print(
            f"{'  of which client / server CPU s':34}"
            + "".join(f"{r['client_cpu']:>8.1f}/{r['server_cpu']:<7.1f}" for r in row)
        )
    for q in results["duckdb"]["queries"]:
        print(
            f"{q:34}"
            + "".join(f"{results[s]['queries'][q] * 1000:>13.1f} ms" for s in ("duckdb", "postgres"))
        )
