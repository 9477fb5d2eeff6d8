"""bench/ingest, native rows: the native normaliser against the decode-only bound and the
Python normaliser, on the same 1000-span requests in one run.

    python -m bench.ingest.native [--requests 20] [--rounds 5]

Rows (spans per second of this process's CPU time, all its threads, so that other load on
a shared machine does not count; each row the median of interleaved rounds):
  1. decode-only bound: protobuf ``ParseFromString`` alone;
  2. Python path: decode + the Python normaliser (today's product path);
  3. native scan: bytes -> Arrow record batches inside Rust (no Python objects);
  4. native to pyarrow: the same, exported to ``pyarrow.RecordBatch`` (C data interface);
  5. end to end into the write-ahead log: native + append, acknowledged after the group's
     fdatasync (8 requests in flight per group), writer thread included;
  6. the DuckDB loader: the log into DuckDB (llm_calls + spans), after the appends.
Needs the extension built: ``maturin develop --release`` in native/mlvigil-native.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest.spans import llm_request
from collector.normalize import NormaliseOptions, normalise_traces
from collector.wal import DuckDBLoader, WriteAheadLog, load_once
from mlvigil.store.duckdb import DuckDBStore

SPANS_PER_REQUEST = 1000


def _rate(fn: Callable[[bytes], object], bodies: list[bytes]) -> float:
    t0 = time.process_time()
    for body in bodies:
        fn(body)
    return len(bodies) * SPANS_PER_REQUEST / (time.process_time() - t0)


def _wal_rate(bodies: list[bytes], wal: WriteAheadLog) -> float:
    import mlvigil_native

    t0 = time.process_time()
    for i in range(0, len(bodies), 8):
        futures = [wal.append(mlvigil_native.normalise_traces(b)[3]) for b in bodies[i : i + 8]]
        for f in futures:
            f.result()
    return len(bodies) * SPANS_PER_REQUEST / (time.process_time() - t0)


def main() -> None:
    import mlvigil_native

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bodies = [llm_request(SPANS_PER_REQUEST, seed=i) for i in range(args.requests)]
    opts = NormaliseOptions()
    rows: dict[str, Callable[[bytes], object]] = {
        "decode-only bound (protobuf)": ExportTraceServiceRequest.FromString,
        "Python path (decode + normalise)": lambda b: normalise_traces(
            ExportTraceServiceRequest.FromString(b), opts
        ),
        "native scan (bytes -> Arrow, in Rust)": mlvigil_native.scan_traces_count,
        "native to pyarrow RecordBatches": mlvigil_native.normalise_traces,
    }
    wal_row, load_row = "end to end: native + durable log append", "DuckDB loader (log -> llm_calls, spans)"
    rates: dict[str, list[float]] = {name: [] for name in [*rows, wal_row, load_row]}
    with tempfile.TemporaryDirectory() as tmp:
        wal = WriteAheadLog(Path(tmp) / "wal", max_bytes=1 << 40)
        store = DuckDBStore(Path(tmp) / "db")
        loader = DuckDBLoader(store)
        for _ in range(args.rounds):
            for name, fn in rows.items():
                rates[name].append(_rate(fn, bodies))
            rates[wal_row].append(_wal_rate(bodies, wal))
            t0, loaded = time.process_time(), 0
            while n := load_once(wal, loader, max_records=8)[0]:
                loaded += n
            rates[load_row].append(loaded * SPANS_PER_REQUEST / (time.process_time() - t0))
        wal.close()
        store.close()
    bound = statistics.median(rates["decode-only bound (protobuf)"])
    print(
        f"{args.requests} requests x {SPANS_PER_REQUEST} LLM spans,"
        f" median of {args.rounds} rounds, per CPU second"
    )
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:42s} {med:>10,.0f} spans/s  {med / bound:5.2f} of the bound")
    ratio = statistics.median(rates[load_row]) / statistics.median(rates[wal_row])
    print(f"  DuckDB load rate / log append rate: {ratio:.2f}")


if __name__ == "__main__":
    main()
