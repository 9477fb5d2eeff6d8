"""bench/ingest: end-to-end ingest of realistic LLM spans against the decode-only bound.

Three measurements on the same 1000-span requests, in one run:
  1. decode-only bound: protobuf parsing alone (``ParseFromString``), one core;
  2. in-process end to end: decode + normalise + durable group commit to DuckDB
     (the path a request takes after the socket), one event-loop thread + the writer;
  3. over the wire: the real ``mlvigil serve`` taking OTLP/HTTP from concurrent clients.
Then a cProfile of (2), and memory under sustained overload (RSS of a server with a small
queue while clients send as fast as they can; the queue must answer 429, not grow).

    python -m bench.ingest.run [--requests 60] [--overload-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest.spans import llm_request
from collector.normalize import NormaliseOptions, normalise_traces
from collector.pipeline import IngestPipeline
from mlvigil.core.metrics import Telemetry
from mlvigil.core.store.duckdb import DuckDBStore

SPANS_PER_REQUEST = 1000
PHOENIX_SPANS_PER_S = 65.0  # Arize Phoenix 20.26 on this kind of machine (issue 2's figure)


def decode_only(bodies: list[bytes]) -> float:
    t0 = time.perf_counter()
    for body in bodies:
        ExportTraceServiceRequest.FromString(body)
    return len(bodies) * SPANS_PER_REQUEST / (time.perf_counter() - t0)


async def _in_process(bodies: list[bytes], data_dir: Path, concurrency: int) -> float:
    store = DuckDBStore(data_dir)
    pipeline = IngestPipeline(store, Telemetry(), max_items=1_000_000)
    await pipeline.start()
    opts = NormaliseOptions()
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            body = queue.pop()
            result = normalise_traces(ExportTraceServiceRequest.FromString(body), opts)
            await pipeline.submit(result.batch, result.accepted)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    await pipeline.stop()
    assert store.counts()["llm_calls"] == len(bodies) * SPANS_PER_REQUEST
    store.close()
    return len(bodies) * SPANS_PER_REQUEST / elapsed


def in_process(bodies: list[bytes], concurrency: int = 8) -> float:
    with tempfile.TemporaryDirectory() as d:
        return asyncio.run(_in_process(bodies, Path(d), concurrency))


def profile(bodies: list[bytes]) -> str:
    prof = cProfile.Profile()
    prof.enable()
    in_process(bodies)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(12)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())[:3500]


def _start_server(data_dir: Path, config: dict[str, object]):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.harness import ServiceHandle

    return ServiceHandle(data_dir, config, None).start()


def _post(url: str, body: bytes) -> int:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def over_the_wire(bodies: list[bytes], clients: int = 4) -> float:
    tmp = Path(tempfile.mkdtemp())
    svc = _start_server(tmp / "data", {"ingest": {"queue_max_items": 1_000_000}})
    try:
        url = svc.otlp_http + "/v1/traces"
        queue = list(bodies)
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                assert _post(url, body) == 200

        threads = [threading.Thread(target=client) for _ in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        assert svc.stats()["llm_calls"] == len(bodies) * SPANS_PER_REQUEST
        return len(bodies) * SPANS_PER_REQUEST / elapsed
    finally:
        svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def overload(body: bytes, seconds: float, clients: int = 16) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp())
    svc = _start_server(tmp / "data", {"ingest": {"queue_max_items": 5000}})
    assert svc.proc is not None
    pid = svc.proc.pid
    codes: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    url = svc.otlp_http + "/v1/traces"
    rss: list[float] = [_rss_mb(pid)]

    def client() -> None:
        while time.monotonic() < deadline:
            code = _post(url, body)
            with lock:
                codes[code] = codes.get(code, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        rss.append(_rss_mb(pid))
        time.sleep(0.2)  # RSS sampling period
    svc.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    half = len(rss) // 2
    return {
        "rss_start_mb": rss[0],
        "rss_max_mb": max(rss),
        "rss_max_first_half_mb": max(rss[: max(1, half)]),
        "rss_max_second_half_mb": max(rss[half:]),
        "accepted_200": codes.get(200, 0),
        "refused_429": codes.get(429, 0),
        "other": sum(n for c, n in codes.items() if c not in (200, 429)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=60, help="1000-span requests per measurement")
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    bodies = [llm_request(SPANS_PER_REQUEST, seed=i) for i in range(args.requests)]
    print(
        f"workload: {args.requests} requests x {SPANS_PER_REQUEST} LLM spans "
        f"({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB/request), cpus={os.cpu_count()}"
    )
    bound = decode_only(bodies)
    print(f"decode-only bound (protobuf parse, 1 core):          {bound:12,.0f} spans/s")
    e2e = in_process(bodies)
    print(
        f"mlvigil in-process e2e (decode+normalise+commit):    {e2e:12,.0f} spans/s"
        f"   ratio to bound {e2e / bound:.3f}"
    )
    wire = over_the_wire(bodies)
    print(
        f"mlvigil over OTLP/HTTP (4 clients, real server):     {wire:12,.0f} spans/s"
        f"   ratio to bound {wire / bound:.3f}"
    )
    print(
        f"reference: Arize Phoenix 20.26 ~{PHOENIX_SPANS_PER_S:.0f} spans/s on this kind of machine "
        f"(issue figure, not re-run): mlvigil/phoenix = {wire / PHOENIX_SPANS_PER_S:,.0f}x"
    )
    if not args.no_profile:
        print("\nprofile of the in-process path (top by own time):")
        print(profile(bodies[: max(10, args.requests // 3)]))
    print(f"\nsustained overload, {args.overload_seconds:.0f}s, 16 clients, queue bound 5000 items:")
    for k, v in overload(bodies[0], args.overload_seconds).items():
        print(f"  {k:26s} {v:10.1f}")


if __name__ == "__main__":
    main()
