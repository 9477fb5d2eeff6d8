"""Acknowledged data survives kill -9; SIGTERM flushes; overload answers 429/UNAVAILABLE."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from collector.pipeline import IngestPipeline, Overloaded
from mlvigil.core.metrics import Telemetry
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore
from tests.harness import ServiceHandle
from tests.otel_helpers import trace_export


def test_every_acknowledged_batch_survives_sigkill(service: ServiceHandle) -> None:
    acked: list[int] = []
    stop = threading.Event()
    killed = threading.Event()

    def stream(first: int) -> None:
        batch_no = first
        while not stop.is_set() and batch_no < first + 5000:
            batch_no += 1
            req = urllib.request.Request(
                service.otlp_http + "/v1/traces",
                data=trace_export(batch_no, 200),
                method="POST",
                headers={"Content-Type": "application/x-protobuf"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    if resp.status == 200:
                        acked.append(batch_no)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if killed.is_set():
                    return

    threads = [threading.Thread(target=stream, args=(k * 10_000,)) for k in range(3)]
    for t in threads:
        t.start()
    service.wait_for(lambda: len(acked) >= 30, timeout=60)
    killed.set()
    service.kill()  # SIGKILL, mid-stream
    stop.set()
    for t in threads:
        t.join(30)
    acked_at_kill = sorted(set(acked))
    service.start()
    stored = {int(r["trace_id"], 16) for r in service.get("/api/v1/records/spans", limit=100000)["rows"]}
    missing = [b for b in acked_at_kill if b not in stored]
    assert not missing, f"{len(missing)} acknowledged batches lost: {missing[:10]}"
    # Whole batches only: no batch is partially stored.
    counts = service.get("/api/v1/records/spans", limit=100000)["rows"]
    per_batch: dict[str, int] = {}
    for r in counts:
        per_batch[r["trace_id"]] = per_batch.get(r["trace_id"], 0) + 1
    assert set(per_batch.values()) == {200}


def _spans(service: ServiceHandle) -> Counter[tuple[str, str]]:
    rows = service.get("/api/v1/records/spans", limit=100_000)["rows"]
    return Counter((r["trace_id"], r["span_id"]) for r in rows)


def test_acknowledged_spans_are_replayed_from_the_log_exactly_once(
    service_factory: Callable[..., ServiceHandle],
) -> None:
    """Kill -9 after acknowledging; then take the loaded rows and the loader's position out of
    the store (as if the loader had not run before the crash): the restart replays the log,
    so every acknowledged span is back, once."""
    service = service_factory()
    for trace_no in range(1, 9):
        status, _, reply = service.request(
            "POST",
            service.otlp_http + "/v1/traces",
            trace_export(trace_no, 100),
            {"Content-Type": "application/x-protobuf"},
        )
        assert status == 200, reply
    expected = {(f"{t:032x}", f"{s:016x}") for t in range(1, 9) for s in range(1, 101)}
    service.wait_for(lambda: set(_spans(service)) == expected, timeout=30)
    service.kill()

    store = DuckDBStore(service.data_dir)
    try:
        assert store.log_position("ingest") is not None, "the spans came through the write-ahead log"
        store.span_files.expire(math.inf)
        store._write(lambda con: con.execute("DELETE FROM log_positions"))
        assert store.counts().get("spans", 0) == 0
    finally:
        store.close()

    service.start()
    service.wait_for(lambda: set(_spans(service)) == expected, timeout=30)
    seen = _spans(service)
    assert set(seen) == expected
    assert set(seen.values()) == {1}, "a replayed span was stored twice"


def test_sigterm_flushes_and_exits_zero(service: ServiceHandle) -> None:
    for i in range(1, 6):
        status, _, _ = service.request(
            "POST",
            service.otlp_http + "/v1/traces",
            trace_export(i, 50),
            {"Content-Type": "application/x-protobuf"},
        )
        assert status == 200
    assert service.stop() == 0
    service.start()
    assert service.stats()["spans"] == 250


class _GatedStore(DuckDBStore):
    """A real store whose commits wait for a gate: lets the test hold the writer busy."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def append_many(self, batches):  # type: ignore[no-untyped-def]
        self.entered.set()
        self.gate.wait(30)
        return super().append_many(batches)


def test_pipeline_is_bounded_and_overload_is_immediate(tmp_path: Path) -> None:
    store = _GatedStore(tmp_path)

    async def run() -> None:
        pipeline = IngestPipeline(store, Telemetry(), max_items=10, retry_after=3)
        await pipeline.start()
        first = RecordBatch()
        for i in range(8):
            first.add("logs", ts=float(i), body="x")
        t1 = asyncio.create_task(pipeline.submit(first))
        await asyncio.to_thread(store.entered.wait, 10)
        assert pipeline.depth == 8
        second = RecordBatch()
        for i in range(5):
            second.add("logs", ts=float(i), body="y")
        with pytest.raises(Overloaded) as err:
            await pipeline.submit(second)
        assert err.value.retry_after == 3
        assert pipeline.is_full() is False and pipeline.depth == 8
        store.gate.set()
        await t1
        await pipeline.submit(second)
        await pipeline.stop()

    asyncio.run(run())
    assert store.counts()["logs"] == 13
    store.close()


def test_overload_answers_429_and_grpc_unavailable(tmp_path: Path) -> None:
    """The real receivers in front of a held writer: HTTP 429 + Retry-After, gRPC UNAVAILABLE + RetryInfo."""
    from google.rpc import error_details_pb2, status_pb2

    from collector.grpc_receiver import OtlpGrpcReceiver
    from collector.http_receiver import OtlpHttpReceiver
    from collector.otlp_ingest import OtlpIngest
    from mlvigil.core.config import IngestConfig

    store = _GatedStore(tmp_path)
    results: dict[str, object] = {}

    async def run() -> None:
        tel = Telemetry()
        pipeline = IngestPipeline(store, tel, max_items=100, retry_after=2)
        ingest = OtlpIngest(pipeline, tel, IngestConfig())
        http = OtlpHttpReceiver(ingest, "127.0.0.1:0", 1 << 20, None)
        grpc_rx = OtlpGrpcReceiver(ingest, "127.0.0.1:0", 1 << 20, None)
        for c in (pipeline, http, grpc_rx):
            await c.start()

        def post(n: int) -> tuple[int, str | None]:
            req = urllib.request.Request(
                f"http://127.0.0.1:{http.port}/v1/traces",
                data=trace_export(n, 150),
                method="POST",
                headers={"Content-Type": "application/x-protobuf"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    return resp.status, None
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("Retry-After")

        first = asyncio.create_task(asyncio.to_thread(post, 1))  # fills the queue, writer held
        await asyncio.to_thread(store.entered.wait, 10)
        results["http"] = await asyncio.to_thread(post, 2)

        def grpc_call() -> tuple[grpc.StatusCode, float]:
            with grpc.insecure_channel(f"127.0.0.1:{grpc_rx.port}") as ch:
                stub = trace_service_pb2_grpc.TraceServiceStub(ch)
                req = trace_service_pb2.ExportTraceServiceRequest.FromString(trace_export(3, 10))
                try:
                    stub.Export(req, timeout=10)
                except grpc.RpcError as e:
                    md = dict(e.trailing_metadata() or ())
                    st = status_pb2.Status.FromString(md["grpc-status-details-bin"])
                    info = error_details_pb2.RetryInfo()
                    st.details[0].Unpack(info)
                    return e.code(), info.retry_delay.seconds
            return grpc.StatusCode.OK, 0

        results["grpc"] = await asyncio.to_thread(grpc_call)
        store.gate.set()
        results["first"] = await first
        for c in (http, grpc_rx, pipeline):
            await c.stop()

    asyncio.run(run())
    assert results["http"] == (429, "2")
    assert results["grpc"] == (grpc.StatusCode.UNAVAILABLE, 2)
    assert results["first"] == (200, None)
    assert store.counts()["spans"] == 150, "the refused batches wrote nothing"
    store.close()


def test_readyz_stays_ready_while_the_queue_is_full(service_factory: Callable[..., ServiceHandle]) -> None:
    """Backpressure is answered per request (429 for a full queue, 503 for a write-ahead log
    over its bound); readiness means "can serve", so neither may take the only endpoint out
    of a Kubernetes Service."""
    service = service_factory({"ingest": {"queue_max_items": 1, "log_max_bytes": 1}})
    codes: list[int] = []
    stop = threading.Event()

    def load(first: int) -> None:
        n = first
        while not stop.is_set() and n < first + 2000:
            n += 1
            req = urllib.request.Request(
                service.otlp_http + "/v1/traces",
                data=trace_export(n, 500),
                method="POST",
                headers={"Content-Type": "application/x-protobuf"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    codes.append(resp.status)
            except urllib.error.HTTPError as e:
                codes.append(e.code)

    def refused() -> int:
        return codes.count(429) + codes.count(503)

    threads = [threading.Thread(target=load, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        ready: list[int] = []
        # Probe readiness while the queue is full, until the load has been refused a while.
        deadline = time.monotonic() + 60
        while (refused() < 20 or len(ready) < 50) and time.monotonic() < deadline:
            ready.append(service.request("GET", "/readyz")[0])
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert refused() >= 20, f"the queue / log was never full: {sorted(set(codes))}"
    assert set(ready) == {200}, f"/readyz answered {sorted(set(ready))} under backpressure"
