"""Producers built on the official OpenTelemetry SDK, for the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter


def http_span_exporter(endpoint: str, token: str | None = None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {"Authorization": f"Bearer {token}"} if token else None
    return OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers)


def grpc_span_exporter(addr: str, token: str | None = None) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    headers = (("authorization", f"Bearer {token}"),) if token else None
    return OTLPSpanExporter(endpoint=addr, insecure=True, headers=headers)


@contextmanager
def tracer_provider(exporter: SpanExporter, service: str, **resource: str) -> Iterator[TracerProvider]:
    """A provider that exports each span synchronously (so the test knows when it was acknowledged)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()
