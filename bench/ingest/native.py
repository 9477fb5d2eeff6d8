"""bench/ingest, native rows: the native normaliser against the decode-only bound and the
Python normaliser, on the same 1000-span requests in one run.

    python -m bench.ingest.native [--requests 20] [--rounds 5]

Rows (spans per second of this thread's CPU time, so that other load on a shared machine
does not count; each row the median of interleaved rounds):
  1. decode-only bound: protobuf ``ParseFromString`` alone;
  2. Python path: decode + the Python normaliser (today's product path);
  3. native scan: bytes -> Arrow record batches inside Rust (no Python objects);
  4. native to pyarrow: the same, exported to ``pyarrow.RecordBatch`` (C data interface).
Needs the extension built: ``maturin develop --release`` in native/mlvigil-native.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest.spans import llm_request
from collector.normalize import NormaliseOptions, normalise_traces

SPANS_PER_REQUEST = 1000


def _rate(fn: Callable[[bytes], object], bodies: list[bytes]) -> float:
    t0 = time.thread_time()
    for body in bodies:
        fn(body)
    return len(bodies) * SPANS_PER_REQUEST / (time.thread_time() - t0)


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
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            rates[name].append(_rate(fn, bodies))
    bound = statistics.median(rates["decode-only bound (protobuf)"])
    print(
        f"{args.requests} requests x {SPANS_PER_REQUEST} LLM spans,"
        f" median of {args.rounds} rounds, per CPU second"
    )
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:42s} {med:>10,.0f} spans/s  {med / bound:5.2f} of the bound")


if __name__ == "__main__":
    main()
