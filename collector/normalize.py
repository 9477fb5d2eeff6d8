"""The normalising step: OTLP export requests -> typed record rows (``RecordBatch``).

Each item is validated on its own; an invalid item is counted as rejected (OTLP partial
success) and written nowhere, while the rest of the request goes on.
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
from mlvigil.records import RecordBatch


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


def _add(cols: dict[str, list[Any]], row: dict[str, Any]) -> None:
    for name, column in cols.items():
        column.append(row.get(name))


def normalise_traces(req: ExportTraceServiceRequest, opts: NormaliseOptions) -> Normalised:
    out = Normalised()
    batch = out.batch
    for rs in req.resource_spans:
        res = resource_info(rs.resource)
        common = {"service": res.service, "service_version": res.service_version, "host": res.host}
        spans = [s for ss in rs.scope_spans for s in ss.spans]
        out.received += len(spans)
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
            try:
                if genai.is_llm_span(attrs):
                    row = genai.llm_row(span, attrs, opts.keep_llm_content, opts.max_content_chars, duration)
                    if row["workflow"] is None or row["entity"] is None:
                        _inherit_names(row, span.parent_span_id, names_by_span)
                    row.update(common, ts=ts, trace_id=span.trace_id.hex(), span_id=span.span_id.hex())
                    _add(batch.table("llm_calls"), row)
                    kind = "llm"
                elif ml.is_training(attrs):
                    row = ml.training_row(attrs, duration)
                    row.update(ts=ts, service=res.service, host=res.host, k8s_pod=res.k8s_pod)
                    row["gpu_uuid"] = row["gpu_uuid"] or res.hw_id
                    _add(batch.table("training_steps"), row)
                    kind = "training"
                elif ml.is_inference(attrs):
                    row = ml.inference_row(attrs, res.service, res.service_version)
                    row.update(ts=ts, latency_s=duration, source="otlp")
                    _add(batch.table("inferences"), row)
                    kind = "inference"
                if ml.is_label(attrs):
                    row = ml.label_row(attrs, res.service)
                    row["ts"] = ts
                    _add(batch.table("labels"), row)
            except ValueError as exc:
                out.reject(str(exc))
                continue
            if opts.keep_raw_spans:
                raw = batch.table("spans")
                raw["ts"].append(ts)
                raw["end_ts"].append(end_ns / 1e9 if end_ns else None)
                raw["trace_id"].append(span.trace_id.hex())
                raw["span_id"].append(span.span_id.hex())
                raw["parent_span_id"].append(span.parent_span_id.hex() or None)
                raw["name"].append(span.name)
                raw["kind"].append(span.kind)
                raw["status_code"].append(span.status.code)
                raw["service"].append(res.service)
                raw["record_kind"].append(kind)
                raw["resource_attrs"].append(res.attrs_json)
                raw["span_proto"].append(span.SerializeToString())
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
    cols = out.batch.table("metric_points")
    for rm in req.resource_metrics:
        res = resource_info(rm.resource)
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
                        count = int(point.count)
                    hw = get_str(attrs, "hw.id") or res.hw_id
                    cols["ts"].append(point.time_unix_nano / 1e9)
                    cols["service"].append(res.service)
                    cols["host"].append(get_str(attrs, "host.name") or res.host)
                    cols["hw_id"].append(hw)
                    cols["name"].append(metric.name)
                    cols["unit"].append(metric.unit or None)
                    cols["kind"].append(data)
                    cols["value"].append(value)
                    cols["count"].append(count)
                    cols["monotonic"].append(monotonic)
                    cols["attributes"].append(to_json(attrs) if attrs else None)
    return out


def normalise_logs(req: ExportLogsServiceRequest, opts: NormaliseOptions) -> Normalised:
    out = Normalised()
    batch = out.batch
    for rl in req.resource_logs:
        res = resource_info(rl.resource)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                out.received += 1
                attrs: Attrs = attr_map(rec.attributes)
                ts = (rec.time_unix_nano or rec.observed_time_unix_nano) / 1e9
                try:
                    if ml.is_training(attrs):
                        row = ml.training_row(attrs, None)
                        row.update(ts=ts, service=res.service, host=res.host, k8s_pod=res.k8s_pod)
                        row["gpu_uuid"] = row["gpu_uuid"] or res.hw_id
                        _add(batch.table("training_steps"), row)
                    elif ml.is_inference(attrs):
                        row = ml.inference_row(attrs, res.service, res.service_version)
                        row.update(ts=ts, source="otlp")
                        _add(batch.table("inferences"), row)
                    if ml.is_label(attrs):
                        row = ml.label_row(attrs, res.service)
                        row["ts"] = ts
                        _add(batch.table("labels"), row)
                except ValueError as exc:
                    out.reject(str(exc))
                    continue
                body = value_of(rec.body) if rec.HasField("body") else None
                _add(
                    batch.table("logs"),
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
    return out


NORMALISERS = {"traces": normalise_traces, "metrics": normalise_metrics, "logs": normalise_logs}
