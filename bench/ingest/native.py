"""bench/ingest, native rows: the native normaliser against the decode-only bound and the
Python normaliser, on the same 1000-span requests in one run.

    python -m bench.ingest.native [--requests 20] [--rounds 5]

Rows (spans per second of this process's CPU time, all its threads, so that other load on
a shared machine does not count; each row the median of interleaved rounds):
  1. decode-only bound: protobuf ``ParseFromString`` alone;
  2. Python path: decode + the Python normaliser (today's product path);
  3. native scan: bytes -> Arrow record batches inside Rust (no Python objects);
  4. native to pyarrow: the same, exported to ``pyarrow.RecordBatch`` (C data interface);
  5. end to end into the write-ahead log: native normalise straight to the log record's
     payload (Arrow IPC + CRC in Rust, as the service does) + append, acknowledged after the
     group's fdatasync (8 requests in flight per group), writer thread included;
  6. the loader, after the appends, per pass as the service runs it: the hot pass into DuckDB
     (every table but the raw spans: here llm_calls, groups of 8 requests), the raw ``spans``
     pass (Parquet span files, groups of 32, with DuckDB's checkpoint and the file merges it
     does between loads), and both.
With ``--baseline FILE.so`` (another build of the extension), rows 3-4 are measured for
both builds, interleaved, so that a change is compared within one run.

Then, unless ``--no-server``, the real service (``mlvigil serve`` in a subprocess) over
OTLP/HTTP and OTLP/gRPC: ``--clients`` concurrent senders of the same requests (HTTP on
kept-alive connections, as exporters send), measured in
the server process's CPU time (all its threads, from /proc): once at the last
acknowledgement (receive, normalise, log append + fdatasync, and whatever the loader threads
did meanwhile: their share is printed) and once when both loader passes have stored them
(llm_calls in DuckDB, raw spans in their files); each as a ratio to the decode bound measured
in the same run.

Then the loader thread at a paced rate (``--rate`` spans/s, default 100,000, for
``--seconds``): requests are normalised and appended at that pace while the loader thread
drains the log into DuckDB; prints the rate reached and the loader lag (age of the oldest
record not loaded, sampled every 20 ms: median, p99, max) and the most bytes not loaded.
Needs the extension built (scripts/setup.sh does it). One command for everything:

    bash scripts/bench.sh ingest [--rounds 5] [--clients 4] [--no-server]

and for the server's CPU by thread alone (bench/ingest/threads.py):

    bash scripts/bench.sh ingest --by-thread [--repeat 15] [--clients 4]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from bench.ingest.senders import http_sender, send_all
from bench.ingest.spans import llm_request
from bench.ingest.threads import by_thread, thread_cpu_s
from collector.loader import DuckDBLoader, LoaderThread, load_once
from collector.normalize import NormaliseOptions, normalise_traces
from collector.wal import HOT, PASSES, RAW_SPANS, Payload, WriteAheadLog, payload_of
from mlvigil.core.store.duckdb import DuckDBStore

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
        futures = [
            wal.append(payload_of(*mlvigil_native.normalise_traces(b, log_record=True)[3]))
            for b in bodies[i : i + 8]
        ]
        for f in futures:
            f.result()
    return len(bodies) * SPANS_PER_REQUEST / (time.process_time() - t0)


def _baseline(path: str) -> ModuleType:
    """Another build of the extension, loaded beside the installed one."""
    spec = importlib.util.spec_from_file_location("baseline_build.mlvigil_native", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _paced_lag(bodies: list[bytes], rate: float, seconds: float, tmp: Path, prenormalised: bool) -> None:
    """Append at ``rate`` spans/s for ``seconds`` with the loader thread draining; with
    ``prenormalised`` the requests are normalised beforehand (the loader's lag alone, when
    this machine's CPUs cannot also normalise at that rate)."""
    import mlvigil_native

    def logged(body: bytes) -> Payload:
        return payload_of(*mlvigil_native.normalise_traces(body, log_record=True)[3])

    batches = [logged(b) for b in bodies] if prenormalised else []
    wal = WriteAheadLog(tmp / "paced-wal", max_bytes=1 << 40, consumers=tuple(PASSES))
    store = DuckDBStore(tmp / "paced-db")
    loader = LoaderThread(wal, DuckDBLoader(store))
    lags: list[float] = []
    spans_lags: list[float] = []
    most_unloaded = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal most_unloaded
        while not stop.wait(0.02):
            lags.append(wal.lag_seconds())
            spans_lags.append(wal.lag_seconds(RAW_SPANS))
            most_unloaded = max(most_unloaded, wal.unloaded_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    interval = SPANS_PER_REQUEST / rate
    t0 = time.monotonic()
    sent, in_flight = 0, []
    while (now := time.monotonic()) - t0 < seconds:
        due = t0 + sent * interval
        if now < due:
            time.sleep(min(due - now, 0.01))
            continue
        i = sent % len(bodies)
        in_flight.append(wal.append(batches[i] if batches else logged(bodies[i])))
        sent += 1
        if len(in_flight) >= 8:
            in_flight.pop(0).result()
    for f in in_flight:
        f.result()
    reached = sent * SPANS_PER_REQUEST / (time.monotonic() - t0)
    caught_up = loader.drain(timeout=60)
    stop.set()
    sampler.join()
    loader.stop()
    wal.close()
    store.close()
    lags.sort()
    spans_lags.sort()

    def p(xs: list[float], q: float) -> float:
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    print(
        f"  loader thread{' (requests normalised beforehand)' if prenormalised else ''}"
        f" at {rate:,.0f} spans/s offered for {seconds:.0f}s: reached {reached:,.0f} spans/s;"
        f" hot pass lag median {p(lags, 0.5):.3f}s p99 {p(lags, 0.99):.3f}s max {p(lags, 1):.3f}s;"
        f" raw spans pass lag median {p(spans_lags, 0.5):.3f}s p99 {p(spans_lags, 0.99):.3f}s"
        f" max {p(spans_lags, 1):.3f}s; most bytes not loaded {most_unloaded / 1e6:.1f} MB;"
        f" {len(loader.groups)} hot groups; caught up after: {caught_up}"
    )


def _rounds(
    rows: dict[str, Callable[[bytes], object]], bodies: list[bytes], rounds: int, requests: int
) -> float:
    """Prints the in-process rows; the decode bound (median spans per CPU second)."""
    wal_row = "end to end: native + durable log append"
    hot_row, spans_row = "DuckDB loader, hot pass (llm_calls)", "loader, raw spans pass (Parquet files)"
    load_row = "DuckDB loader, both passes"
    rates: dict[str, list[float]] = {name: [] for name in [*rows, wal_row, hot_row, spans_row, load_row]}
    with tempfile.TemporaryDirectory() as tmp:
        wal = WriteAheadLog(Path(tmp) / "wal", max_bytes=1 << 40, consumers=tuple(PASSES))
        store = DuckDBStore(Path(tmp) / "db")
        loader = DuckDBLoader(store)
        for _ in range(rounds):
            for name, fn in rows.items():
                rates[name].append(_rate(fn, bodies))
            rates[wal_row].append(_wal_rate(bodies, wal))
            cpu = {}
            # group sizes as the service's passes take them under load (LoaderThread: the raw
            # spans pass lingers for 32 requests)
            for row, (log, wanted, group) in (
                (hot_row, (HOT, PASSES[HOT], 8)),
                (spans_row, (RAW_SPANS, PASSES[RAW_SPANS], 32)),
            ):
                t0, loaded = time.process_time(), 0
                while n := load_once(wal, loader, log, max_records=group, wanted=wanted)[0]:
                    loaded += n
                    if log == RAW_SPANS:  # it also checkpoints DuckDB and merges files (LoaderThread)
                        loader.maintain(log)
                cpu[row] = time.process_time() - t0
                rates[row].append(loaded * SPANS_PER_REQUEST / cpu[row])
            rates[load_row].append(loaded * SPANS_PER_REQUEST / sum(cpu.values()))
        wal.close()
        store.close()
    bound = statistics.median(rates["decode-only bound (protobuf)"])
    print(f"{requests} requests x {SPANS_PER_REQUEST} LLM spans, median of {rounds} rounds, per CPU second")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:42s} {med:>10,.0f} spans/s  {med / bound:5.2f} of the bound")
    ratio = statistics.median(rates[hot_row]) / statistics.median(rates[wal_row])
    print(f"  DuckDB hot pass rate / log append rate: {ratio:.2f}")
    return bound


def _server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loader_cpu_s(pid: int) -> float:
    """CPU seconds of the write-ahead log loader threads of process ``pid`` (named
    ``load-<pass>`` for the OS by the service: collector/loader.py, mlvigil/core/os_thread.py)."""
    return sum(cpu for name, cpu in thread_cpu_s(pid).values() if name.startswith("load-"))


def _served(
    bodies: list[bytes], transport: str, clients: int, repeat: int
) -> tuple[float, float, float, float]:
    """(spans per server CPU second at the last ack, the same once loaded into DuckDB,
    spans per wall second at the last ack, the loader threads' share of the CPU at the last
    ack) over ``transport`` against the real service."""
    import grpc

    from tests.harness import ServiceHandle

    with tempfile.TemporaryDirectory() as tmp:
        svc = ServiceHandle(Path(tmp) / "data", {"ingest": {"max_requests_in_flight": 64}}, None).start()
        assert svc.proc is not None
        try:
            channel = grpc.insecure_channel(
                svc.otlp_grpc.removeprefix("http://"),
                options=[("grpc.max_send_message_length", 64 << 20)],
            )
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=None,
                response_deserializer=None,
            )
            send = http_sender(svc) if transport == "http" else lambda body: export(body, timeout=60)

            # Warm-up (one-time imports on first use, e.g. pyarrow's pandas shim: ~1 s of CPU).
            send(bodies[0])
            svc.wait_for(lambda: svc.stats().get("llm_calls", 0) >= SPANS_PER_REQUEST, timeout=60)
            spans = len(bodies) * repeat * SPANS_PER_REQUEST
            cpu0, wall0 = _server_cpu_s(svc.proc.pid), time.perf_counter()
            loader0 = _loader_cpu_s(svc.proc.pid)
            send_all([b for _ in range(repeat) for b in bodies], clients, send)
            cpu_acked, wall = _server_cpu_s(svc.proc.pid) - cpu0, time.perf_counter() - wall0
            loader_acked = _loader_cpu_s(svc.proc.pid) - loader0
            # both passes: the llm_calls rows and the raw spans' files
            everything = spans + SPANS_PER_REQUEST
            svc.wait_for(
                lambda: min(svc.stats().get(t, 0) for t in ("llm_calls", "spans")) >= everything, timeout=300
            )
            cpu_loaded = _server_cpu_s(svc.proc.pid) - cpu0
            channel.close()
        finally:
            svc.stop()
    return spans / cpu_acked, spans / cpu_loaded, spans / wall, loader_acked / cpu_acked


def _served_rows(bodies: list[bytes], bound: float, clients: int, repeat: int) -> None:
    for transport in ("http", "grpc"):
        acked, loaded, wall, loader_share = _served(bodies, transport, clients, repeat)
        label = "OTLP/HTTP" if transport == "http" else "OTLP/gRPC"
        for what, rate in (("acknowledged", acked), ("all loaded (both passes)", loaded)):
            name = f"{label} via mlvigil serve, {what}"
            print(f"  {name:42s} {rate:>10,.0f} spans/s  {rate / bound:5.2f} of the bound")
        print(
            f"    ({wall:,.0f} spans/s of wall time to the last acknowledgement, {clients} clients;"
            f" the DuckDB loader threads were {loader_share:.0%} of the server CPU to it)"
        )


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _overload(
    bodies: list[bytes],
    seconds: float,
    clients: int,
    in_flight: int,
    storage: dict[str, object] | None = None,
) -> None:
    """Memory under sustained overload: ``clients`` senders (more than the service's
    ``max_requests_in_flight``) post 1000-span requests as fast as they can for ``seconds``;
    the service must refuse (429/503 + Retry-After) rather than grow. RSS of the server
    sampled every 0.2 s: at rest (after one request), peak in each half of the run, and at
    the end (everything loaded)."""
    from tests.harness import ServiceHandle

    with tempfile.TemporaryDirectory() as tmp:
        config = {"ingest": {"max_requests_in_flight": in_flight}, "storage": storage or {}}
        svc = ServiceHandle(Path(tmp) / "data", config, None).start()
        assert svc.proc is not None
        pid = svc.proc.pid
        url = svc.otlp_http + "/v1/traces"
        headers = {"Content-Type": "application/x-protobuf"}
        try:
            svc.request("POST", url, bodies[0], headers)
            svc.wait_for(lambda: svc.stats().get("llm_calls", 0) >= SPANS_PER_REQUEST, timeout=60)
            rest = _rss_mb(pid)
            codes: dict[int, int] = {}
            lock = threading.Lock()
            deadline = time.monotonic() + seconds

            def client(i: int) -> None:
                n = i
                while time.monotonic() < deadline:
                    status, _, _ = svc.request("POST", url, bodies[n % len(bodies)], headers)
                    n += 1
                    with lock:
                        codes[status] = codes.get(status, 0) + 1

            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            samples: list[float] = []
            while any(t.is_alive() for t in threads):
                samples.append(_rss_mb(pid))
                time.sleep(0.2)  # sampling period, not synchronisation
            for t in threads:
                t.join()
            accepted = codes.get(200, 0)
            svc.wait_for(
                lambda: svc.stats().get("llm_calls", 0) >= (accepted + 1) * SPANS_PER_REQUEST, timeout=300
            )
            end = _rss_mb(pid)
        finally:
            svc.stop()
    half = max(1, len(samples) // 2)
    refused = sum(n for c, n in codes.items() if c in (429, 503))
    other = {c: n for c, n in codes.items() if c not in (200, 429, 503)}
    print(
        f"  sustained overload, {seconds:.0f} s, {clients} clients, max_requests_in_flight {in_flight}:"
        f" {accepted:,} accepted ({accepted * SPANS_PER_REQUEST / seconds:,.0f} spans/s), {refused:,} refused"
        f" (429/503){f', other {other}' if other else ''}"
    )
    print(
        f"    server RSS: at rest {rest:,.0f} MB, peak {max(samples[:half]):,.0f} MB (first half)"
        f" / {max(samples[half:] or samples):,.0f} MB (second half), end (all loaded) {end:,.0f} MB"
    )
    if seconds >= 60:  # long runs: the peak of each tenth, to show whether it levels off
        step = max(1, len(samples) // 10)
        peaks = [max(samples[i : i + step]) for i in range(0, len(samples), step)]
        print(f"    peak RSS per tenth of the run (MB): {' '.join(f'{p:,.0f}' for p in peaks)}")


def main() -> None:
    import mlvigil_native

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", help="another build of the extension (.so) to compare")
    parser.add_argument("--rate", type=float, default=100_000.0, help="spans/s for the loader lag run")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the loader lag run")
    parser.add_argument("--lag-only", action="store_true", help="only the loader lag runs")
    parser.add_argument("--no-server", action="store_true", help="leave out the rows of the real service")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders to the real service")
    parser.add_argument("--repeat", type=int, default=5, help="times each request is sent to the service")
    parser.add_argument("--overload-seconds", type=float, default=20.0, help="overload run length (0: none)")
    parser.add_argument("--overload-clients", type=int, default=24, help="senders in the overload run")
    parser.add_argument("--overload-only", action="store_true", help="only the overload run")
    parser.add_argument(
        "--by-thread", action="store_true", help="only the server's CPU by thread (bench/ingest/threads.py)"
    )
    args = parser.parse_args()
    if args.by_thread:
        by_thread(args.repeat, args.clients)
        return
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
    if args.baseline:
        base = _baseline(args.baseline)
        rows["  baseline build: native scan"] = base.scan_traces_count
        rows["  baseline build: to pyarrow"] = base.normalise_traces
    if args.overload_only:
        _overload(bodies, args.overload_seconds, args.overload_clients, in_flight=8)
        return
    if not args.lag_only:
        bound = _rounds(rows, bodies, args.rounds, args.requests)
        if not args.no_server:
            print("the real service (server process CPU, all threads):")
            _served_rows(bodies, bound, args.clients, args.repeat)
            if args.overload_seconds > 0:
                _overload(bodies, args.overload_seconds, args.overload_clients, in_flight=8)
    with tempfile.TemporaryDirectory() as tmp:
        for prenormalised in (False, True):
            run_dir = Path(tmp) / f"paced-{prenormalised}"
            run_dir.mkdir()
            _paced_lag(bodies, args.rate, args.seconds, run_dir, prenormalised)


if __name__ == "__main__":
    main()
