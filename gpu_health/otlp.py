"""Samples -> OTLP ``ExportMetricsServiceRequest``, and the OTLP/HTTP exporter the agent ships with.

One ResourceMetrics per GPU: the resource carries ``hw.id`` (the GPU UUID), ``hw.type``,
``hw.name``, ``host.name`` and, on Kubernetes, ``k8s.node.name``; the server's normaliser
reads ``hw.id`` and ``host.name`` from it. The exporter honours the standard
``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout, compression, protocol,
certificates) the way the OpenTelemetry SDK does, with the metrics-specific variable first.
"""

from __future__ import annotations

import gzip
import logging
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from gpu_health.names import METRICS
from gpu_health.sampler import GpuSample

log = logging.getLogger(__name__)

SCOPE_NAME = "mlvigil.gpu_health"
# Point attributes repeat pass after pass: their KeyValue messages are built once.
_KV_CACHE: dict[tuple[tuple[str, str], ...], list[KeyValue]] = {}
_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def parse_key_values(text: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` with percent-encoded values (OTEL_EXPORTER_OTLP_HEADERS, OTEL_RESOURCE_ATTRIBUTES)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[unquote(key.strip())] = unquote(value.strip())
    return out


def resource_attributes(node: str, env: Mapping[str, str]) -> dict[str, str]:
    """Attributes every GPU's resource shares: service, host, node and OTEL_RESOURCE_ATTRIBUTES."""
    attrs = parse_key_values(env.get("OTEL_RESOURCE_ATTRIBUTES", ""))
    attrs["service.name"] = env.get("OTEL_SERVICE_NAME") or attrs.get("service.name") or "mlvigil-agent"
    attrs["host.name"] = node
    if env.get("NODE_NAME"):
        attrs["k8s.node.name"] = env["NODE_NAME"]
    return attrs


def _kv(out: Any, attrs: Mapping[str, str] | Sequence[tuple[str, str]]) -> None:
    """Append string attributes to a repeated KeyValue field."""
    items = attrs.items() if isinstance(attrs, Mapping) else attrs
    for key, value in items:
        kv = out.add()
        kv.key = key
        kv.value.string_value = value


def build_request(
    samples: Sequence[GpuSample], shared: Mapping[str, str], start_time: float
) -> ExportMetricsServiceRequest:
    """One export request for one pass over all GPUs."""
    req = ExportMetricsServiceRequest()
    start_ns = int(start_time * 1e9)
    for sample in samples:
        rm = req.resource_metrics.add()
        _kv(rm.resource.attributes, shared)
        _kv(
            rm.resource.attributes,
            (("hw.id", sample.uuid), ("hw.type", "gpu"), ("hw.name", sample.name), ("hw.vendor", "NVIDIA")),
        )
        sm = rm.scope_metrics.add()
        sm.scope.name = SCOPE_NAME
        ts = int(sample.ts * 1e9)
        by_name: dict[str, object] = {}
        for name, value, attrs in sample.points:
            body = by_name.get(name)
            if body is None:
                spec = METRICS[name]
                metric = sm.metrics.add(name=name, unit=spec.unit)
                if spec.kind == "sum":
                    body = metric.sum
                    metric.sum.aggregation_temporality = _CUMULATIVE
                    metric.sum.is_monotonic = True
                else:
                    body = metric.gauge
                by_name[name] = body
            point = body.data_points.add(time_unix_nano=ts, as_double=value)  # type: ignore[attr-defined]
            if METRICS[name].kind == "sum":
                point.start_time_unix_nano = start_ns
            if attrs:
                kvs = _KV_CACHE.get(attrs)
                if kvs is None:
                    kvs = [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attrs]
                    if len(_KV_CACHE) < 65536:
                        _KV_CACHE[attrs] = kvs
                point.attributes.extend(kvs)
    return req


def _env(env: Mapping[str, str], name: str) -> str | None:
    """The metrics-specific variable first, then the general one (OTLP exporter spec)."""
    return env.get(f"OTEL_EXPORTER_OTLP_METRICS_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}") or None


@dataclass
class OtlpHttpSettings:
    endpoint: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    compression: str = "none"  # "gzip" | "none"
    protocol: str = "http/protobuf"  # or "http/json"
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, endpoint: str | None = None) -> OtlpHttpSettings:
        """Settings from OTEL_EXPORTER_OTLP_*; ``endpoint`` (a full URL) overrides the variables."""
        env = os.environ if env is None else env
        url = endpoint or env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        if not url:
            base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
            url = base.rstrip("/") + "/v1/metrics"
        protocol = _env(env, "PROTOCOL") or "http/protobuf"
        if protocol not in ("http/protobuf", "http/json"):
            raise ValueError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: the agent ships over OTLP/HTTP;"
                " use http/protobuf or http/json"
            )
        compression = (_env(env, "COMPRESSION") or "none").lower()
        if compression not in ("gzip", "none"):
            raise ValueError(f"OTEL_EXPORTER_OTLP_COMPRESSION={compression!r}: expected gzip or none")
        timeout_ms = float(_env(env, "TIMEOUT") or 10000)
        ctx: ssl.SSLContext | None = None
        ca, cert, key = _env(env, "CERTIFICATE"), _env(env, "CLIENT_CERTIFICATE"), _env(env, "CLIENT_KEY")
        if url.startswith("https") and (ca or cert):
            ctx = ssl.create_default_context(cafile=ca)
            if cert:
                ctx.load_cert_chain(cert, key)
        return cls(
            url, parse_key_values(_env(env, "HEADERS") or ""), timeout_ms / 1000.0, compression, protocol, ctx
        )


class ExportError(Exception):
    """The server did not accept an export; ``retryable`` as the OTLP spec defines it."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class OtlpHttpExporter:
    """Posts export requests to one OTLP/HTTP endpoint.

    A failed export is not retried: the next pass carries fresh gauges and cumulative
    counters, so nothing a rule needs is lost by dropping one request.
    """

    def __init__(self, settings: OtlpHttpSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def export(self, req: ExportMetricsServiceRequest) -> int:
        """Send ``req``; returns the points the server rejected (partial success)."""
        s = self.settings
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=s.timeout_s))
        headers = dict(s.headers)
        if s.protocol == "http/json":
            body = json_format.MessageToJson(req, use_integers_for_enums=True, indent=None).encode()
            headers["Content-Type"] = "application/json"
        else:
            body = req.SerializeToString()
            headers["Content-Type"] = "application/x-protobuf"
        if s.compression == "gzip":
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(
                s.endpoint,
                data=body,
                headers=headers,
                ssl=s.ssl_context if s.ssl_context is not None else True,
            ) as resp:
                payload = await resp.read()
                if resp.status // 100 != 2:
                    retryable = resp.status in (429, 502, 503, 504)
                    raise ExportError(f"HTTP {resp.status} from {s.endpoint}: {payload[:200]!r}", retryable)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ExportError(f"{s.endpoint}: {exc or type(exc).__name__}", True) from None
        if not payload or s.protocol == "http/json":
            return 0
        ack = ExportMetricsServiceResponse()
        try:
            ack.ParseFromString(payload)
        except Exception:
            return 0
        if ack.partial_success.rejected_data_points:
            log.warning(
                "server rejected %d points: %s",
                ack.partial_success.rejected_data_points,
                ack.partial_success.error_message,
            )
        return int(ack.partial_success.rejected_data_points)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
