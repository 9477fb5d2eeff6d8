"""The normalising step: OTLP export requests -> typed record rows (``RecordBatch``).

Each item is validated on its own; an invalid item is counted as rejected (OTLP partial
success) and written nowhere, while the rest of the request goes on. Every row is checked
against its columns (``mlvigil.core.records.check_row``) as the item is added, so a value no
column can hold rejects its item here, never the whole batch in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from collector import genai, ml
from collector.attributes import Attrs, attr_map, get_str, to_json, value_of
from mlvigil.core.records import RecordBatch


@dataclass
class NormaliseOptions:
    keep_llm_content: bool = False
    keep_raw_spans: bool = True
    max_content_chars: int = 8192


@dataclass
class Normalised:
    batch: RecordBatch = field(default_factory=RecordBatch)
    received: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    @property
    def accepted(self) -> int:
        return self.received - self.rejected

    def error_message(self) -> str:
        return "; ".join(f"{n} rejected: {r}" for r, n in sorted(self.reasons.items()))


@dataclass(frozen=True)
class ResourceInfo:
    service: str | None
    service_version: str | None
    host: str | None
    k8s_pod: str | None
    hw_id: str | None
    attrs_json: str


def resource_info(resource: Resource) -> ResourceInfo:
    attrs = attr_map(resource.attributes)
    return ResourceInfo(
        service=get_str(attrs, "service.name"),
        service_version=get_str(attrs, "service.version"),
        host=get_str(attrs, "host.name", "k8s.node.name"),
        k8s_pod=get_str(attrs, "k8s.pod.name"),
        hw_id=get_str(attrs, "hw.id"),
        attrs_json=to_json(attrs),
    )


def _resource(resource: Resource, n_items: int, out: Normalised) -> ResourceInfo | None:
    """The resource's info, or None with its ``n_items`` items rejected when it is unusable."""
    try:
        return resource_info(resource)
    except ValueError as exc:
        for _ in range(n_items):
            out.reject(f"resource: {exc}")
        return None


def normalise_traces(req: ExportTraceServiceRequest, opts: NormaliseOptions) -> Normalised:
    out = Normalised()
    batch = out.batch
    for rs in req.resource_spans:
        spans = [s for ss in rs.scope_spans for s in ss.spans]
        out.received += len(spans)
        res = _resource(rs.resource, len(spans), out)
        if res is None:
            continue
        common = {"service": res.service, "service_version": res.service_version, "host": res.host}
        span_attrs = [attr_map(span.attributes) for span in spans]
        # traceloop puts the workflow/entity names on parent spans; LLM spans inherit them.
        names_by_span: dict[bytes, tuple[str | None, str | None, bytes]] = {}
        for span, a in zip(spans, span_attrs, strict=True):
            if "traceloop.span.kind" in a:
                names_by_span[span.span_id] = (
                    get_str(a, *genai.WORKFLOW),
                    get_str(a, *genai.ENTITY),
                    span.parent_span_id,
                )
        for span, attrs in zip(spans, span_attrs, strict=True):
            if len(span.trace_id) != 16 or len(span.span_id) != 8:
                out.reject("invalid trace_id or span_id length")
                continue
            if span.end_time_unix_nano and span.end_time_unix_nano < span.start_time_unix_nano:
                out.reject("span ends before it starts")
                continue
            start_ns, end_ns = span.start_time_unix_nano, span.end_time_unix_nano
            ts = start_ns / 1e9
            duration = (end_ns - start_ns) / 1e9 if end_ns else None
            kind = "span"
            rows: list[tuple[str, dict[str, Any]]] = []
            try:
                if genai.is_llm_span(attrs):
                    row = genai.llm_row(span, attrs, opts.keep_llm_content, opts.max_content_chars, duration)
                    if row["workflow"] is None or row["entity"] is None:
                        _inherit_names(row, span.parent_span_id, names_by_span)
                    row.update(common, ts=ts, trace_id=span.trace_id.hex(), span_id=span.span_id.hex())
                    rows.append(("llm_calls", row))
                    kind = "llm"
                elif ml.is_training(attrs):
                    row = ml.training_row(attrs, duration)
                    row.update(ts=ts, service=res.service, host=res.host, k8s_pod=res.k8s_pod)
                    row["gpu_uuid"] = row["gpu_uuid"] or res.hw_id
                    rows.append(("training_steps", row))
                    kind = "training"
                elif ml.is_inference(attrs):
                    row = ml.inference_row(attrs, res.service, res.service_version)
                    row.update(ts=ts, latency_s=duration, source="otlp")
                    rows.append(("inferences", row))
                    kind = "inference"
                if ml.is_label(attrs):
                    row = ml.label_row(attrs, res.service)
                    row["ts"] = ts
                    rows.append(("labels", row))
                if opts.keep_raw_spans:
                    rows.append(
                        (
                            "spans",
                            {
                                "ts": ts,
                                "end_ts": end_ns / 1e9 if end_ns else None,
                                "trace_id": span.trace_id.hex(),
                                "span_id": span.span_id.hex(),
                                "parent_span_id": span.parent_span_id.hex() or None,
                                "name": span.name,
                                "kind": span.kind,
                                "status_code": span.status.code,
                                "service": res.service,
                                "record_kind": kind,
                                "resource_attrs": res.attrs_json,
                                "span_proto": span.SerializeToString(),
                            },
                        )
                    )
                batch.add_item(rows)
            except ValueError as exc:
                out.reject(str(exc))
    return out


def _inherit_names(
    row: dict[str, Any], parent: bytes, names: dict[bytes, tuple[str | None, str | None, bytes]]
) -> None:
    hops = 0
    while parent in names and hops < 32 and (row["workflow"] is None or row["entity"] is None):
        workflow, entity, parent = names[parent]
        row["workflow"] = row["workflow"] or workflow
        row["entity"] = row["entity"] or entity
        hops += 1


def normalise_metrics(req: ExportMetricsServiceRequest, opts: NormaliseOptions) -> Normalised:
    out = Normalised()
    batch = out.batch
    for rm in req.resource_metrics:
        n_points = sum(
            len(getattr(m, d).data_points) if (d := m.WhichOneof("data")) else 1
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        res = _resource(rm.resource, n_points, out)
        if res is None:
            out.received += n_points
            continue
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                data = metric.WhichOneof("data")
                if data is None:
                    out.received += 1
                    out.reject("metric without data")
                    continue
                body = getattr(metric, data)
                monotonic = bool(getattr(body, "is_monotonic", False)) if data == "sum" else None
                for point in body.data_points:
                    out.received += 1
                    try:
                        attrs = attr_map(point.attributes)
                        if data in ("gauge", "sum"):
                            which = point.WhichOneof("value")
                            if which is None:
                                out.reject("number data point without a value")
                                continue
                            value: float = float(getattr(point, which))
                            count = None
                        else:
                            value = point.sum
                            count = point.count
                        batch.add_item(
                            [
                                (
                                    "metric_points",
                                    {
                                        "ts": point.time_unix_nano / 1e9,
                                        "service": res.service,
                                        "host": get_str(attrs, "host.name") or res.host,
                                        "hw_id": get_str(attrs, "hw.id") or res.hw_id,
                                        "name": metric.name,
                                        "unit": metric.unit or None,
                                        "kind": data,
                                        "value": value,
                                        "count": count,
                                        "monotonic": monotonic,
                                        "attributes": to_json(attrs) if attrs else None,
                                    },
                                )
                            ]
                        )
                    except ValueError as exc:
                        out.reject(str(exc))
    return out


def normalise_logs(req: ExportLogsServiceRequest, opts: NormaliseOptions) -> Normalised:
    out = Normalised()
    batch = out.batch
    for rl in req.resource_logs:
        n_records = sum(len(sl.log_records) for sl in rl.scope_logs)
        out.received += n_records
        res = _resource(rl.resource, n_records, out)
        if res is None:
            continue
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9
                rows: list[tuple[str, dict[str, Any]]] = []
                try:
                    attrs: Attrs = attr_map(rec.attributes)
                    if ml.is_training(attrs):
                        row = ml.training_row(attrs, None)
                        row.update(ts=ts, service=res.service, host=res.host, k8s_pod=res.k8s_pod)
                        row["gpu_uuid"] = row["gpu_uuid"] or res.hw_id
                        rows.append(("training_steps", row))
                    elif ml.is_inference(attrs):
                        row = ml.inference_row(attrs, res.service, res.service_version)
                        row.update(ts=ts, source="otlp")
                        rows.append(("inferences", row))
                    if ml.is_label(attrs):
                        row = ml.label_row(attrs, res.service)
                        row["ts"] = ts
                        rows.append(("labels", row))
                    body = value_of(rec.body) if rec.HasField("body") else None
                    rows.append(
                        (
                            "logs",
                            {
                                "ts": ts,
                                "service": res.service,
                                "severity_number": rec.severity_number,
                                "severity_text": rec.severity_text or None,
                                "body": body if isinstance(body, str) or body is None else str(body),
                                "trace_id": rec.trace_id.hex() or None,
                                "span_id": rec.span_id.hex() or None,
                                "attributes": to_json(attrs) if attrs else None,
                            },
                        )
                    )
                    batch.add_item(rows)
                except ValueError as exc:
                    out.reject(str(exc))
    return out


NORMALISERS = {"traces": normalise_traces, "metrics": normalise_metrics, "logs": normalise_logs}
