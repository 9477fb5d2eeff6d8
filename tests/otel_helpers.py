"""Producers built on the official OpenTelemetry SDK, for the end-to-end tests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter


def http_span_exporter(endpoint: str, token: str | None = None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers)


def grpc_span_exporter(addr: str, token: str | None = None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    headers = (("authorization", f"Bearer {token}"),) if token else None
    return OTLPSpanExporter(endpoint=addr, insecure=True, headers=headers)


@contextmanager
def tracer_provider(
    exporter: SpanExporter, service: str, *, batched: bool = False, **resource: str
) -> Iterator[TracerProvider]:
    """A provider that exports each span synchronously (so the test knows when it was acknowledged),
    or with ``batched`` in batches of up to 512 as production SDKs do (all sent when the block ends)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
    if batched:
        provider.add_span_processor(
            BatchSpanProcessor(exporter, max_export_batch_size=512, schedule_delay_millis=100)
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


def trace_export(trace_no: int, n: int) -> bytes:
    """A protobuf OTLP trace export of ``n`` bare spans of trace ``trace_no`` (span ids 1..n),
    timed now: recent, so retention never drops them on a restart."""
    now = time.time_ns()
    spans = [
        Span(
            trace_id=trace_no.to_bytes(16, "big"),
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"export-{trace_no}",
            start_time_unix_nano=now + i,
            end_time_unix_nano=now + i + 5,
        )
        for i in range(n)
    ]
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()


CLOUDEVENTS_PATH = "/api/v1/ingest/cloudevents"


def post_kserve(svc: Any, rid: str, service: str, request: dict[str, Any], response: dict[str, Any]) -> None:
    """One inference as KServe's payload logger sends it: a request and a response CloudEvent
    (binary mode) with the same id; each must be accepted (202)."""
    for ce_type, body in (
        ("org.kubeflow.serving.inference.request", request),
        ("org.kubeflow.serving.inference.response", response),
    ):
        headers = {
            "Content-Type": "application/json",
            "Ce-Specversion": "1.0",
            "Ce-Id": rid,
            "Ce-Type": ce_type,
            "Ce-Source": "http://localhost:9081/",
            "Ce-Inferenceservicename": service,
            "Ce-Namespace": "models",
            "Ce-Component": "predictor",
        }
        status, _, _ = svc.request("POST", CLOUDEVENTS_PATH, json.dumps(body).encode(), headers)
        assert status == 202
