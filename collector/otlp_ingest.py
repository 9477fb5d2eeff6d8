"""Transport-independent ingest: admit, decode and normalise off the loop, queue, await commit.

Decoding and normalising run on a small pool of worker threads (``ingest.decode_workers``),
never on the event loop that also serves the API, /healthz and the other receivers. How long
one request can hold the GIL is bounded by the decoders' limits (see ``otlp_decode``); how
many requests hold memory at once is bounded by ``ingest.max_requests_in_flight`` (beyond it:
``Overloaded``, answered 429 / UNAVAILABLE with Retry-After).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.normalize import NORMALISERS, Normalised, NormaliseOptions
from collector.otlp_decode import JsonLimits, count_items, decode, gunzip_limited
from collector.pipeline import IngestPipeline, Overloaded
from mlvigil.config import IngestConfig
from mlvigil.metrics import Telemetry

T = TypeVar("T")


class Busy(Overloaded):
    """Every in-flight place is taken; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, in_flight: int) -> None:
        super().__init__(retry_after)
        self.args = (
            f"{in_flight} requests already in flight (ingest.max_requests_in_flight);"
            f" retry after {retry_after}s",
        )


@dataclass
class ExportResult:
    response: Message
    accepted: int
    rejected: int


def _response(signal: str, rejected: int, message: str) -> Message:
    if signal == "traces":
        resp: Message = ExportTraceServiceResponse()
        if rejected:
            resp.partial_success.rejected_spans = rejected
    elif signal == "metrics":
        resp = ExportMetricsServiceResponse()
        if rejected:
            resp.partial_success.rejected_data_points = rejected
    else:
        resp = ExportLogsServiceResponse()
        if rejected:
            resp.partial_success.rejected_log_records = rejected
    if rejected:
        resp.partial_success.error_message = message
    return resp


class OtlpIngest:
    """Shared by the gRPC and HTTP receivers, the CloudEvents route and the in-process GPU agent."""

    def __init__(self, pipeline: IngestPipeline, telemetry: Telemetry, config: IngestConfig) -> None:
        self.pipeline = pipeline
        self.telemetry = telemetry
        self.config = config
        self.options = NormaliseOptions(
            keep_llm_content=config.keep_llm_content,
            keep_raw_spans=config.keep_raw_spans,
            max_content_chars=config.max_content_chars,
        )
        self.json_limits = JsonLimits(max_containers=config.max_json_containers)
        self._executor = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="ingest-decode")
        self._in_flight = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the ``max_requests_in_flight`` places while a request is handled;
        Overloaded when none is free (and when the queue is full), before its body is read."""
        if self.pipeline.is_full():
            raise Overloaded(self.pipeline.retry_after)
        if self._in_flight >= self.config.max_requests_in_flight:
            raise Busy(self.pipeline.retry_after, self._in_flight)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a decode worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _decode_normalise(self, signal: str, body: bytes, content_type: str, gzipped: bool) -> Normalised:
        if gzipped:
            body = gunzip_limited(body, self.config.max_request_bytes)
        message = decode(signal, body, content_type, self.json_limits)
        del body
        return self._normalise(signal, message)

    def _normalise(self, signal: str, message: Message) -> Normalised:
        count_items(signal, message, self.config.max_items_per_request)
        return NORMALISERS[signal](message, self.options)

    async def export_bytes(
        self, signal: str, body: bytes, content_type: str, transport: str, *, gzipped: bool = False
    ) -> ExportResult:
        """Decode, normalise and durably store one encoded export request. Raises BadRequest,
        TooLarge, and Overloaded/ShuttingDown from the queue."""
        t0 = time.perf_counter()
        result = await self.off_loop(self._decode_normalise, signal, body, content_type, gzipped)
        return await self._commit(signal, result, transport, t0)

    async def export(self, signal: str, request: Message, transport: str) -> ExportResult:
        """Normalise and durably store an already decoded ``request``."""
        t0 = time.perf_counter()
        result = await self.off_loop(self._normalise, signal, request)
        return await self._commit(signal, result, transport, t0)

    async def _commit(self, signal: str, result: Normalised, transport: str, t0: float) -> ExportResult:
        tel = self.telemetry
        tel.items_received.labels(signal=signal, transport=transport).inc(result.received)
        await self.pipeline.submit(result.batch, result.accepted)
        tel.items_accepted.labels(signal=signal, transport=transport).inc(result.accepted)
        for reason, n in result.reasons.items():
            tel.items_rejected.labels(signal=signal, transport=transport, reason=reason).inc(n)
        tel.request_duration.labels(signal=signal, transport=transport).observe(time.perf_counter() - t0)
        return ExportResult(
            _response(signal, result.rejected, result.error_message()), result.accepted, result.rejected
        )

    async def submit_metrics(self, request: Message) -> ExportResult:
        """For in-process producers (the GPU agent inside ``mlvigil serve``)."""
        return await self.export("metrics", request, "inprocess")
