"""Fuzzing every ingest path of a running service over real sockets (hypothesis).

OTLP traces, metrics and logs as protobuf (HTTP and gRPC) and as JSON, mutated protobuf
bytes, and KServe V1 / Open Inference Protocol V2 / Seldon CloudEvents. For every input:
no 5xx and no crash; every refusal is a 4xx that says why; and in an accepted export exactly
the items not named as rejected in the partial success are stored.

Each test runs a bounded number of examples against one service (well under a minute).
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1 import trace_pb2

from collector import genai, ml
from tests.harness import ServiceHandle

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# Keys the normalisers read, so that fuzzed values reach every column, not just raw spans.
KNOWN_KEYS = sorted(
    {
        *genai.PROVIDER,
        *genai.OPERATION,
        *genai.REQUEST_MODEL,
        *genai.RESPONSE_MODEL,
        *genai.INPUT_TOKENS,
        *genai.OUTPUT_TOKENS,
        *genai.TOTAL_TOKENS,
        *genai.TEMPERATURE,
        *genai.MAX_TOKENS,
        *genai.TTFT,
        *genai.WORKFLOW,
        *genai.ENTITY,
        "openinference.span.kind",
        "llm.invocation_parameters",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "traceloop.span.kind",
        *ml.MODEL,
        *ml.MODEL_VERSION,
        *ml.REQUEST_ID,
        ml.FEATURES,
        "mlvigil.feature.x",
        *ml.PREDICTION,
        *ml.SCORE,
        ml.LABEL_REQUEST_ID,
        *ml.LABEL_VALUE,
        ml.RUN_ID,
        *ml.TRAIN_FIELDS_INT.values(),
        *ml.TRAIN_FIELDS_FLOAT.values(),
        ml.STEP_TIME,
        "service.name",
        "host.name",
        "hw.id",
    }
)

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
EDGE_INTS = st.sampled_from([0, 1, -1, 2**31, 2**31 - 1, -(2**31) - 1, 2**53 + 1, 2**63 - 1, -(2**63)])
EDGE_FLOATS = st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e30, -1e30, 1e308, 5e-324, 0.5])
JSON_TEXT = st.sampled_from(
    [
        '{"max_tokens": Infinity, "temperature": NaN}',
        '{"max_tokens": 1e400}',
        '{"x": [1, 2, {"y": -Infinity}]}',
        "[" * 80 + "]" * 80,
        "{not json",
        '{"a": 99999999999999999999999999}',
        '[{"role": "user", "content": "hi"}]',
    ]
)


def _any_value() -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.text(max_size=20).map(lambda s: AnyValue(string_value=s)),
        JSON_TEXT.map(lambda s: AnyValue(string_value=s)),
        st.one_of(INT64, EDGE_INTS).map(lambda i: AnyValue(int_value=i)),
        st.one_of(st.floats(), EDGE_FLOATS).map(lambda f: AnyValue(double_value=f)),
        st.booleans().map(lambda b: AnyValue(bool_value=b)),
        st.binary(max_size=8).map(lambda b: AnyValue(bytes_value=b)),
        st.just(AnyValue()),
    )
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
            st.lists(st.tuples(st.text(max_size=8), inner), max_size=3).map(
                lambda kvs: AnyValue(
                    kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs])
                )
            ),
        ),
        max_leaves=6,
    )


NUMERIC_KEYS = sorted(
    {
        *genai.INPUT_TOKENS,
        *genai.OUTPUT_TOKENS,
        *genai.TOTAL_TOKENS,
        *genai.TEMPERATURE,
        *genai.MAX_TOKENS,
        *genai.TTFT,
        *ml.SCORE,
        *ml.TRAIN_FIELDS_INT.values(),
        *ml.TRAIN_FIELDS_FLOAT.values(),
        ml.STEP_TIME,
    }
)
NUMBER_VALUE = st.one_of(
    EDGE_INTS.map(lambda i: AnyValue(int_value=i)),
    EDGE_FLOATS.map(lambda f: AnyValue(double_value=f)),
    st.sampled_from(["1e400", "-5", "NaN", "12", "x"]).map(lambda t: AnyValue(string_value=t)),
)


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


# What makes an item an LLM call, a training step, an inference or a label (or none of them).
MARKERS = st.sampled_from(
    [
        [],
        [_kv("gen_ai.system", "openai")],
        [_kv("openinference.span.kind", "LLM"), _kv("llm.invocation_parameters", '{"max_tokens": Infinity}')],
        [_kv(ml.RUN_ID, "run")],
        [_kv("mlvigil.model.name", "m")],
        [_kv(ml.LABEL_REQUEST_ID, "r1")],
    ]
)
ATTRS = st.builds(
    lambda markers, numbers, rest: markers + numbers + rest,
    MARKERS,
    st.lists(
        st.builds(lambda k, v: KeyValue(key=k, value=v), st.sampled_from(NUMERIC_KEYS), NUMBER_VALUE),
        max_size=3,
    ),
    st.lists(
        st.builds(
            lambda k, v: KeyValue(key=k, value=v),
            st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12)),
            _any_value(),
        ),
        max_size=5,
    ),
)
NANOS = st.one_of(st.integers(min_value=0, max_value=2**64 - 1), st.just(1_700_000_000_000_000_000))
ID16 = st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))
ID8 = st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))


def _resource() -> st.SearchStrategy[Resource]:
    return ATTRS.map(lambda a: Resource(attributes=a))


SPAN = st.builds(
    lambda tid, sid, parent, start, end, attrs, name, kind, code: trace_pb2.Span(
        trace_id=tid,
        span_id=sid,
        parent_span_id=parent,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        attributes=attrs,
        name=name,
        kind=kind,
        status=trace_pb2.Status(code=code),
    ),
    ID16,
    ID8,
    st.one_of(st.just(b""), ID8),
    NANOS,
    NANOS,
    ATTRS,
    st.text(max_size=10),
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=0, max_value=2),
)
TRACES = st.lists(
    st.builds(
        lambda res, scopes: trace_pb2.ResourceSpans(resource=res, scope_spans=scopes),
        _resource(),
        st.lists(st.lists(SPAN, max_size=5).map(lambda s: trace_pb2.ScopeSpans(spans=s)), max_size=2),
    ),
    min_size=1,
    max_size=3,
).map(lambda rs: trace_service_pb2.ExportTraceServiceRequest(resource_spans=rs))

NUMBER_POINT = st.builds(
    lambda t, attrs, v: metrics_pb2.NumberDataPoint(time_unix_nano=t, attributes=attrs, **v),
    NANOS,
    ATTRS,
    st.one_of(
        st.one_of(st.floats(), EDGE_FLOATS).map(lambda f: {"as_double": f}),
        INT64.map(lambda i: {"as_int": i}),
        st.just({}),
    ),
)
HIST_POINT = st.builds(
    lambda t, count, total: metrics_pb2.HistogramDataPoint(time_unix_nano=t, count=count, sum=total),
    NANOS,
    st.one_of(st.integers(min_value=0, max_value=2**64 - 1), st.sampled_from([2**63 - 1, 2**63, 2**64 - 1])),
    st.one_of(st.floats(), EDGE_FLOATS),
)
METRIC = st.one_of(
    st.builds(
        lambda name, pts: metrics_pb2.Metric(name=name, gauge=metrics_pb2.Gauge(data_points=pts)),
        st.text(max_size=10),
        st.lists(NUMBER_POINT, max_size=4),
    ),
    st.builds(
        lambda name, pts, mono: metrics_pb2.Metric(
            name=name, sum=metrics_pb2.Sum(data_points=pts, is_monotonic=mono)
        ),
        st.text(max_size=10),
        st.lists(NUMBER_POINT, max_size=4),
        st.booleans(),
    ),
    st.builds(
        lambda name, pts: metrics_pb2.Metric(name=name, histogram=metrics_pb2.Histogram(data_points=pts)),
        st.text(max_size=10),
        st.lists(HIST_POINT, max_size=4),
    ),
    st.builds(lambda name: metrics_pb2.Metric(name=name), st.text(max_size=10)),
)
METRICS = st.lists(
    st.builds(
        lambda res, metrics: metrics_pb2.ResourceMetrics(
            resource=res, scope_metrics=[metrics_pb2.ScopeMetrics(metrics=metrics)]
        ),
        _resource(),
        st.lists(METRIC, max_size=4),
    ),
    min_size=1,
    max_size=2,
).map(lambda rm: metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=rm))

LOG = st.builds(
    lambda t, obs, sev, attrs, body, tid: logs_pb2.LogRecord(
        time_unix_nano=t,
        observed_time_unix_nano=obs,
        severity_number=sev,
        attributes=attrs,
        body=body,
        trace_id=tid,
    ),
    NANOS,
    NANOS,
    st.integers(min_value=0, max_value=24),
    ATTRS,
    _any_value(),
    st.one_of(st.just(b""), ID16),
)
LOGS = st.lists(
    st.builds(
        lambda res, recs: logs_pb2.ResourceLogs(
            resource=res, scope_logs=[logs_pb2.ScopeLogs(log_records=recs)]
        ),
        _resource(),
        st.lists(LOG, max_size=5),
    ),
    min_size=1,
    max_size=2,
).map(lambda rl: logs_service_pb2.ExportLogsServiceRequest(resource_logs=rl))

# signal -> (path, gRPC method, request type, table that gets one row per accepted item, response type)
SIGNALS: dict[str, tuple[str, str, type[Message], str, type[Message]]] = {
    "traces": (
        "/v1/traces",
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        trace_service_pb2.ExportTraceServiceRequest,
        "spans",
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "metrics": (
        "/v1/metrics",
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        metrics_service_pb2.ExportMetricsServiceRequest,
        "metric_points",
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "logs": (
        "/v1/logs",
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        logs_service_pb2.ExportLogsServiceRequest,
        "logs",
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}
_REJECTED = {"traces": "rejected_spans", "metrics": "rejected_data_points", "logs": "rejected_log_records"}


def _items(signal: str, req: Any) -> int:
    """Items as the service counts them: spans, data points (a metric without data: one),
    log records."""
    if signal == "traces":
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    if signal == "logs":
        return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                data = m.WhichOneof("data")
                n += len(getattr(m, data).data_points) if data else 1
    return n


def _otlp_json(req: Message) -> bytes:
    """OTLP/JSON as exporters write it: protobuf's JSON mapping, with ids in hex."""
    tree = json_format.MessageToDict(req)

    def hexify(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    node[k] = base64.b64decode(v).hex()
                else:
                    hexify(v)
        elif isinstance(node, list):
            for v in node:
                hexify(v)

    hexify(tree)
    return json.dumps(tree).encode()


def _http(svc: ServiceHandle, path: str, body: bytes, ctype: str) -> tuple[int, bytes]:
    status, _, resp = svc.request("POST", svc.otlp_http + path, body, {"Content-Type": ctype}, auth=False)
    return status, resp


def _check_export(svc: ServiceHandle, signal: str, req: Message | None, body: bytes, transport: str) -> None:
    """Send ``body``; no 5xx; a refusal says why; accepted items are all stored, exactly."""
    path, method, _, table, resp_type = SIGNALS[signal]
    assert svc.proc is not None and svc.proc.poll() is None, "the service is gone"
    before = svc.stats()[table]
    if transport == "grpc":
        with grpc.insecure_channel(svc.otlp_grpc) as channel:
            try:
                raw = channel.unary_unary(method)(body, timeout=30)
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (
                    err.code(),
                    err.details(),
                )
                assert err.details(), "a refusal must say why"
                event(f"grpc {err.code().name}")
                assert req is None or err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert svc.stats()[table] == before
                return
        status, resp_body = 200, raw
        ctype = "application/x-protobuf"
    else:
        ctype = "application/json" if transport == "json" else "application/x-protobuf"
        status, resp_body = _http(svc, path, body, ctype)
    assert status < 500, (status, resp_body[:300])
    event(f"{transport} {status}")
    if status != 200:
        assert status in (400, 413), status
        message = (
            json.loads(resp_body)["message"]
            if ctype == "application/json"
            else status_pb2.Status.FromString(resp_body).message
        )
        assert message, "a refusal must say why"
        assert svc.stats()[table] == before, "a refused request wrote something"
        return
    assert req is not None, "the service accepted what protobuf itself cannot decode"
    if ctype == "application/json":
        partial = json.loads(resp_body).get("partialSuccess", {})
        key = {"traces": "rejectedSpans", "metrics": "rejectedDataPoints", "logs": "rejectedLogRecords"}[
            signal
        ]
        rejected = int(partial.get(key, 0))
        message = partial.get("errorMessage", "")
    else:
        resp = resp_type.FromString(resp_body)
        partial_success: Any = getattr(resp, "partial_success")  # noqa: B009 (each response type has one)
        rejected = getattr(partial_success, _REJECTED[signal])
        message = partial_success.error_message
    event("some items rejected" if rejected else "all items accepted")
    if rejected:
        assert message, "a partial success must say why"
    assert svc.stats()[table] - before == _items(signal, req) - rejected


def _fuzz_signal(svc: ServiceHandle, signal: str, req: Message, transport: str) -> None:
    body = _otlp_json(req) if transport == "json" else req.SerializeToString()
    _check_export(svc, signal, req, body, transport)


TRANSPORTS = pytest.mark.parametrize("transport", ["protobuf", "json", "grpc"])


@TRANSPORTS
@FUZZ
@given(req=TRACES)
def test_fuzz_otlp_traces(service: ServiceHandle, req: Message, transport: str) -> None:
    _fuzz_signal(service, "traces", req, transport)


@TRANSPORTS
@FUZZ
@given(req=METRICS)
def test_fuzz_otlp_metrics(service: ServiceHandle, req: Message, transport: str) -> None:
    _fuzz_signal(service, "metrics", req, transport)


@TRANSPORTS
@FUZZ
@given(req=LOGS)
def test_fuzz_otlp_logs(service: ServiceHandle, req: Message, transport: str) -> None:
    _fuzz_signal(service, "logs", req, transport)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _replace(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


JSON_EDGE = st.one_of(
    st.sampled_from(
        ["1e999", "-1e999", "NaN", "Infinity", "99999999999999999999999", "-1", "0x10", "", "zz"]
    ),
    st.sampled_from([10**30, -(2**64), 2**64, 1e308, -0.0]),
)


@FUZZ
@given(
    signal=st.sampled_from(sorted(SIGNALS)),
    seed=st.one_of(TRACES, METRICS, LOGS),
    picks=st.lists(
        st.tuples(st.integers(min_value=0), st.one_of(JSON_EDGE, st.deferred(lambda: JSON_ANY))), max_size=3
    ),
)
def test_fuzz_otlp_json_values(
    service: ServiceHandle, signal: str, seed: Message, picks: list[tuple[int, Any]]
) -> None:
    """Valid OTLP/JSON with values swapped for odd ones (numbers out of range, numbers as
    strings, wrong types): decoded or refused with a reason, never a 5xx."""
    tree = json.loads(_otlp_json(seed))
    for pick, value in picks:
        paths = _paths(tree)
        tree = _replace(tree, paths[pick % len(paths)], value)
    body = json.dumps(tree).encode()
    # The oracle for what is stored: protobuf's own JSON parser, on the same document.
    request_type = SIGNALS[signal][2]
    try:
        hexed = json.loads(body)

        def unhex(node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                        node[k] = base64.b64encode(bytes.fromhex(v)).decode()
                    else:
                        unhex(v)
            elif isinstance(node, list):
                for v in node:
                    unhex(v)

        unhex(hexed)
        req: Message | None = json_format.ParseDict(hexed, request_type(), ignore_unknown_fields=True)
    except Exception:
        req = None
    _check_export(service, signal, req, body, "json")


@FUZZ
@given(
    signal=st.sampled_from(sorted(SIGNALS)),
    seed=st.one_of(TRACES, METRICS, LOGS),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.binary(min_size=0, max_size=4), st.integers(0, 4)), max_size=4
    ),
    transport=st.sampled_from(["protobuf", "grpc"]),
)
def test_fuzz_mutated_protobuf(
    service: ServiceHandle, signal: str, seed: Message, edits: list[tuple[int, bytes, int]], transport: str
) -> None:
    """Valid bytes with some replaced, inserted or cut: decoded or refused, never a 5xx."""
    body = bytearray(seed.SerializeToString())
    for pos, data, cut in edits:
        at = pos % (len(body) + 1)
        body[at : at + cut] = data
    request_type = SIGNALS[signal][2]
    try:
        req: Message | None = request_type.FromString(bytes(body))
    except (DecodeError, RuntimeError, ValueError):
        req = None
    _check_export(service, signal, req, bytes(body), transport)


# -- CloudEvents ----------------------------------------------------------------------------

JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    EDGE_FLOATS,
    st.text(max_size=8),
)
JSON_ANY: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
NUMBERS = st.lists(st.one_of(st.floats(), st.integers(min_value=-(2**64), max_value=2**64)), max_size=12)
SHAPE = st.one_of(
    st.lists(st.integers(min_value=0, max_value=6), max_size=3),
    st.lists(st.sampled_from([-1, 0, 2, 10**18, 2**63, 10**30]), min_size=1, max_size=3),
    st.sampled_from([[10**18, 2], [2, 10**18], [10**9, 10**9, 1]]),
    JSON_ANY,
)


@st.composite
def _tensor(draw: st.DrawFn, data_key: str = "data") -> dict[str, Any]:
    data = draw(st.one_of(NUMBERS, st.lists(NUMBERS, max_size=4), JSON_ANY))
    consistent = isinstance(data, list) and draw(st.booleans())
    shape = [len(data)] if consistent else draw(SHAPE)
    tensor: dict[str, Any] = {
        "name": draw(st.one_of(st.text(max_size=6), JSON_ANY)),
        "shape": shape,
        data_key: data,
    }
    if draw(st.booleans()):
        tensor["datatype"] = "FP32"
    return tensor


SELDON_BODY = st.fixed_dictionaries(
    {
        "data": st.fixed_dictionaries(
            {"names": st.one_of(st.lists(st.text(max_size=4), max_size=4), JSON_ANY)},
            optional={
                "ndarray": st.lists(st.one_of(NUMBERS, JSON_SCALAR), max_size=5),
                "tensor": _tensor("values"),
            },
        )
    }
)
REQUEST_BODY = st.one_of(
    st.fixed_dictionaries(
        {
            "instances": st.lists(
                st.one_of(NUMBERS, st.dictionaries(st.text(max_size=4), JSON_SCALAR), JSON_SCALAR), max_size=6
            )
        }
    ),
    st.fixed_dictionaries(
        {"inputs": st.lists(st.one_of(_tensor(), _tensor(), JSON_ANY), min_size=1, max_size=3)}
    ),
    SELDON_BODY,
    st.fixed_dictionaries({"jsonData": JSON_ANY}),
    JSON_ANY,
)
RESPONSE_BODY = st.one_of(
    st.fixed_dictionaries({"predictions": st.lists(st.one_of(JSON_SCALAR, NUMBERS), max_size=6)}),
    st.fixed_dictionaries(
        {"outputs": st.lists(st.one_of(_tensor(), JSON_ANY), min_size=1, max_size=2)},
        optional={"model_version": JSON_ANY},
    ),
    SELDON_BODY,
    st.fixed_dictionaries({"jsonData": JSON_ANY}),
    JSON_ANY,
)


@st.composite
def _event(draw: st.DrawFn) -> tuple[str, Any]:
    """A CloudEvent type and a body of the matching half (now and then a mismatched one)."""
    half = draw(st.sampled_from(["request", "response"]))
    source = draw(st.sampled_from(["org.kubeflow.serving", "io.seldon.serving"]))
    ce_type = draw(st.sampled_from([f"{source}.inference.{half}"] * 4 + ["com.example.other"]))
    mismatched = draw(st.integers(0, 9)) == 0
    body = draw(REQUEST_BODY if (half == "request") != mismatched else RESPONSE_BODY)
    return ce_type, body


@FUZZ
@given(ce=_event(), structured=st.booleans(), spec=st.sampled_from(["1.0", "1.0", "1.0", "0.3", "2"]))
def test_fuzz_cloudevents(service: ServiceHandle, ce: tuple[str, Any], structured: bool, spec: str) -> None:
    """KServe V1/V2 and Seldon payload-logger events: stored whole (one row per instance) or
    refused with a reason; never a 5xx."""
    ce_type, body = ce
    ce_id = uuid.uuid4().hex
    if structured:
        doc = {"specversion": spec, "id": ce_id, "type": ce_type, "source": "fuzz", "data": body}
        headers = {"Content-Type": "application/cloudevents+json"}
        raw = json.dumps(doc).encode()
    else:
        headers = {
            "Content-Type": "application/json",
            "Ce-Specversion": spec,
            "Ce-Id": ce_id,
            "Ce-Type": ce_type,
        }
        headers["Ce-Source"] = "fuzz"
        raw = json.dumps(body).encode()
    assert service.proc is not None and service.proc.poll() is None, "the service is gone"
    before = service.stats()["inferences"]
    status, _, resp = service.request("POST", "/api/v1/ingest/cloudevents", raw, headers)
    assert status < 500, (status, resp[:300], raw[:300])
    event(f"cloudevent {status}")
    if status == 202:
        accepted = json.loads(resp)["accepted"]
        assert service.stats()["inferences"] - before == accepted
        if accepted:  # an event may carry no instance (202, nothing stored)
            rows = service.get("/api/v1/records/inferences", limit=accepted)["rows"]
            assert all(r["request_id"].startswith(ce_id) for r in rows)
    else:
        assert status in (400, 413), status
        assert json.loads(resp)["error"], "a refusal must say why"
        assert service.stats()["inferences"] == before
