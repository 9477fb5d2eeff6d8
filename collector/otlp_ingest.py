"""Transport-independent OTLP export handling: normalise, queue, await the durable commit."""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from collector.normalize import NORMALISERS, NormaliseOptions
from collector.pipeline import IngestPipeline
from mlvigil.config import IngestConfig
from mlvigil.metrics import Telemetry


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
    """Shared by the gRPC and HTTP receivers (and the in-process GPU agent)."""

    def __init__(self, pipeline: IngestPipeline, telemetry: Telemetry, config: IngestConfig) -> None:
        self.pipeline = pipeline
        self.telemetry = telemetry
        self.options = NormaliseOptions(
            keep_llm_content=config.keep_llm_content,
            keep_raw_spans=config.keep_raw_spans,
            max_content_chars=config.max_content_chars,
        )

    async def export(self, signal: str, request: Message, transport: str) -> ExportResult:
        """Normalise and durably store ``request``; raises Overloaded/ShuttingDown from the queue."""
        t0 = time.perf_counter()
        result = NORMALISERS[signal](request, self.options)
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
