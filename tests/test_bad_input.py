"""Bad input gets a clear error, writes nothing, and the service stays up."""

from __future__ import annotations

import gzip
import json

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.harness import ServiceHandle

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


def _valid_request(n: int = 3) -> trace_service_pb2.ExportTraceServiceRequest:
    spans = [
        Span(
            trace_id=bytes([1] * 16),
            span_id=(i + 1).to_bytes(8, "big"),
            name=f"s{i}",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
        for i in range(n)
    ]
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )


def _post(
    svc: ServiceHandle, body: bytes, headers: dict[str, str], path: str = "/v1/traces"
) -> tuple[int, dict, bytes]:
    return svc.request("POST", svc.otlp_http + path, body, headers, auth=False)


def _nothing_written(svc: ServiceHandle) -> None:
    assert all(n == 0 for n in svc.stats().values()), svc.stats()


def _status_message(body: bytes) -> str:
    from google.rpc import status_pb2

    st = status_pb2.Status()
    st.ParseFromString(body)
    return st.message


def test_malformed_payloads_are_400_and_write_nothing(service: ServiceHandle) -> None:
    good = _valid_request().SerializeToString()
    cases = [
        ("truncated protobuf", good[: len(good) // 2], PB),
        ("garbage protobuf", b"\xff\xfe\x00garbage\x07\x08" * 10, PB),
        ("not JSON", b"{resourceSpans: [", JS),
        ("wrong JSON shape", json.dumps({"resourceSpans": {"not": "a list"}}).encode(), JS),
        ("JSON array", b"[1, 2]", JS),
        (
            "bad hex id",
            json.dumps(
                {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "01"}]}]}]}
            ).encode(),
            JS,
        ),
    ]
    for what, body, headers in cases:
        status, _, resp = _post(service, body, headers)
        assert status == 400, what
        message = _status_message(resp) if headers is PB else json.loads(resp)["message"]
        assert message, f"{what}: the 400 must say why"
    status, _, _ = _post(service, b"\x1f\x8b not really gzip", {**PB, "Content-Encoding": "gzip"})
    assert status == 400
    _nothing_written(service)
    # Still up and taking good data.
    assert _post(service, good, PB)[0] == 200
    assert service.stats()["spans"] == 3


def test_wrong_content_type_and_encoding_are_415(service: ServiceHandle) -> None:
    good = _valid_request().SerializeToString()
    assert _post(service, good, {"Content-Type": "text/plain"})[0] == 415
    assert _post(service, good, {**PB, "Content-Encoding": "br"})[0] == 415
    _nothing_written(service)


def test_oversize_and_gzip_bomb_are_413(service_factory) -> None:
    svc: ServiceHandle = service_factory({"ingest": {"max_request_bytes": 64 * 1024}})
    big = _valid_request(2000).SerializeToString()
    assert len(big) > 64 * 1024
    assert _post(svc, big, PB)[0] == 413
    # 100 MB of zeros compresses to ~100 kB... keep it under the compressed limit: 20 MB -> ~20 kB.
    bomb = gzip.compress(b"\x00" * (20 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    status, _, body = _post(svc, bomb, {**PB, "Content-Encoding": "gzip"})
    assert status == 413 and "exceeds" in _status_message(body)
    _nothing_written(svc)
    small = gzip.compress(_valid_request(2).SerializeToString())
    assert _post(svc, small, {**PB, "Content-Encoding": "gzip"})[0] == 200


def test_partial_success_rejects_only_the_bad_spans(service: ServiceHandle) -> None:
    req = _valid_request(3)
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id, bad.span_id, bad.name = b"short", bytes(8), "bad"
    status, _, body = _post(service, req.SerializeToString(), PB)
    assert status == 200
    resp = trace_service_pb2.ExportTraceServiceResponse()
    resp.ParseFromString(body)
    assert resp.partial_success.rejected_spans == 1
    assert "trace_id" in resp.partial_success.error_message
    assert service.stats()["spans"] == 3
    # JSON in, JSON out, with the same partial success.
    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0" * 32,
                                "spanId": "1" * 16,
                                "name": "ok",
                                "startTimeUnixNano": "5",
                                "endTimeUnixNano": "9",
                            },
                            {
                                "traceId": "0" * 32,
                                "spanId": "2" * 16,
                                "name": "backwards",
                                "startTimeUnixNano": "9",
                                "endTimeUnixNano": "5",
                            },
                        ]
                    }
                ]
            }
        ]
    }
    status, _, body = _post(service, json.dumps(doc).encode(), JS)
    assert status == 200 and json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"
    assert service.stats()["spans"] == 4


def test_bearer_token_on_receivers_and_api(service_factory) -> None:
    svc: ServiceHandle = service_factory(env={"MLVIGIL_AUTH_TOKEN": "s3cret"})
    good = _valid_request().SerializeToString()
    assert _post(svc, good, PB)[0] == 401
    assert _post(svc, good, {**PB, "Authorization": "Bearer wrong"})[0] == 401
    assert svc.request("GET", "/api/v1/stats", auth=False)[0] == 401
    status, headers, _ = svc.request("GET", "/api/v1/stats", headers={"Authorization": "Bearer nope"})
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    assert svc.request("GET", svc.api + "/healthz", headers={"Authorization": "x"})[0] == 200
    with grpc.insecure_channel(svc.otlp_grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(_valid_request(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(_valid_request(), timeout=10, metadata=(("authorization", "Bearer wrong"),))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    _nothing_written(svc)
    assert _post(svc, good, {**PB, "Authorization": "Bearer s3cret"})[0] == 200
    with grpc.insecure_channel(svc.otlp_grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(_valid_request(), timeout=10, metadata=(("authorization", "Bearer s3cret"),))
    assert svc.stats()["spans"] == 6


def test_grpc_oversize_is_refused(service_factory) -> None:
    svc: ServiceHandle = service_factory({"ingest": {"max_request_bytes": 32 * 1024}})
    with grpc.insecure_channel(svc.otlp_grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(_valid_request(2000), timeout=10)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stub.Export(_valid_request(5), timeout=10)
    assert svc.stats()["spans"] == 5


def test_self_telemetry_counts_rejections(service: ServiceHandle) -> None:
    _post(service, b"garbage", PB)
    req = _valid_request(2)
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id = b"x"
    _post(service, req.SerializeToString(), PB)
    status, _, body = service.request("GET", "/metrics")
    text = body.decode()
    assert status == 200
    assert 'mlvigil_receiver_requests_total{code="400",signal="traces",transport="http"} 1.0' in text
    assert 'mlvigil_receiver_items_accepted_total{signal="traces",transport="http"} 2.0' in text
    assert 'reason="invalid trace_id or span_id length"' in text
    assert "mlvigil_ingest_queue_items" in text and "mlvigil_receiver_request_duration_seconds_bucket" in text


# -- issue 13 item 2: out-of-range numbers reject their item, never the export ----------------


def _kv(key: str, value: object) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    else:
        v.string_value = str(value)
    return KeyValue(key=key, value=v)


def _span(i: int, **attrs: object) -> Span:
    return Span(
        trace_id=bytes([7] * 16),
        span_id=(1000 + i).to_bytes(8, "big"),
        name=f"n{i}",
        start_time_unix_nano=1_700_000_000_000_000_000 + i,
        end_time_unix_nano=1_700_000_001_000_000_000 + i,
        attributes=[_kv(k, v) for k, v in attrs.items()],
    )


def _llm(i: int, **attrs: object) -> Span:
    return _span(i, **{"gen_ai.system": "openai", "gen_ai.request.model": "m", **attrs})


def _traces(spans: list[Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])]
    )


def _out_of_range_spans() -> tuple[list[Span], int]:
    """Spans with a value no column can hold (rejected), among good ones; and the bad count."""
    bad = [
        _llm(1, **{"gen_ai.usage.input_tokens": float("inf")}),
        _llm(2, **{"gen_ai.usage.input_tokens": 1e30}),
        _llm(3, **{"gen_ai.usage.input_tokens": float("nan")}),
        _llm(4, **{"gen_ai.usage.input_tokens": 2**63 - 1, "gen_ai.usage.output_tokens": 1}),  # sum > int64
        _llm(5, **{"gen_ai.usage.output_tokens": -3}),
        _llm(6, **{"gen_ai.request.max_tokens": "1e400"}),
        _span(7, **{"mlvigil.train.run_id": "r", "mlvigil.train.step": 1e30}),
        _span(8, **{"mlvigil.train.run_id": "r", "mlvigil.train.rank": 2**40}),
        _span(9, **{"mlvigil.train.run_id": "r", "mlvigil.train.world_size": float("-inf")}),
    ]
    good = [
        _llm(20, **{"gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3.0}),
        _span(
            21, **{"mlvigil.train.run_id": "r", "mlvigil.train.step": 5, "mlvigil.train.loss": float("nan")}
        ),
        _span(
            22,
            **{
                "openinference.span.kind": "LLM",
                "llm.model_name": "m",
                "llm.invocation_parameters": '{"max_tokens": Infinity, "temperature": NaN}',
            },
        ),
        _span(23, **{"mlvigil.inference.features": '{"x": Infinity, "y": 1}', "mlvigil.model.name": "m"}),
    ]
    return bad + good, len(bad)


def test_out_of_range_numbers_reject_only_their_spans(service: ServiceHandle) -> None:
    spans, n_bad = _out_of_range_spans()
    status, _, body = _post(service, _traces(spans).SerializeToString(), PB)
    assert status == 200, body
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == n_bad
    message = resp.partial_success.error_message
    for column in ("llm_calls.input_tokens", "llm_calls.total_tokens", "llm_calls.output_tokens"):
        assert column in message, message
    for column in ("llm_calls.max_tokens", "training_steps.step", "training_steps.rank"):
        assert column in message, message
    assert service.stats()["spans"] == len(spans) - n_bad
    llm = {r["span_id"]: r for r in service.get("/api/v1/records/llm_calls")["rows"]}
    assert llm[(1020).to_bytes(8, "big").hex()]["output_tokens"] == 3
    # A setting that is not a finite number is no setting: NULL, the call is kept.
    oi = llm[(1022).to_bytes(8, "big").hex()]
    assert oi["max_tokens"] is None and oi["temperature"] is None
    # Infinity has no JSON spelling: the JSON column says null.
    inf = service.get("/api/v1/records/inferences")["rows"]
    assert [r["features"] for r in inf] == [{"x": None, "y": 1}]
    # The same export over gRPC: partial success too, not UNKNOWN for the whole request.
    with grpc.insecure_channel(service.otlp_grpc) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        again = [
            Span(**{**_fields(s), "span_id": (5000 + i).to_bytes(8, "big")}) for i, s in enumerate(spans)
        ]
        grpc_resp = stub.Export(_traces(again), timeout=30)
    assert grpc_resp.partial_success.rejected_spans == n_bad
    assert service.stats()["spans"] == 2 * (len(spans) - n_bad)


def _fields(span: Span) -> dict:
    return {f.name: v for f, v in span.ListFields()}


def test_out_of_range_numbers_in_otlp_json(service: ServiceHandle) -> None:
    def span(i: int, tokens: object) -> dict:
        return {
            "traceId": "07" * 16,
            "spanId": f"{i:016x}",
            "name": "chat",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
            "attributes": [
                {"key": "gen_ai.system", "value": {"stringValue": "openai"}},
                {"key": "gen_ai.usage.input_tokens", "value": tokens},
            ],
        }

    doc = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            span(1, {"doubleValue": "Infinity"}),
                            span(2, {"doubleValue": 1e300}),
                            span(3, {"intValue": "12"}),
                            span(4, {"doubleValue": "NaN"}),
                        ]
                    }
                ]
            }
        ]
    }
    status, _, body = _post(service, json.dumps(doc).encode(), JS)
    assert status == 200, body
    partial = json.loads(body)["partialSuccess"]
    assert partial["rejectedSpans"] == "3" and "llm_calls.input_tokens" in partial["errorMessage"]
    assert [r["input_tokens"] for r in service.get("/api/v1/records/llm_calls")["rows"]] == [12]


def test_out_of_range_metric_points_and_log_records(service: ServiceHandle) -> None:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
    from opentelemetry.proto.metrics.v1.metrics_pb2 import (
        Histogram,
        HistogramDataPoint,
        Metric,
        ResourceMetrics,
        ScopeMetrics,
    )

    points = [
        HistogramDataPoint(time_unix_nano=1, count=2**64 - 1, sum=1.0),
        HistogramDataPoint(time_unix_nano=2, count=2**63, sum=1.0),
        HistogramDataPoint(time_unix_nano=3, count=7, sum=float("inf")),
    ]
    req = metrics_service_pb2.ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                scope_metrics=[
                    ScopeMetrics(metrics=[Metric(name="h", histogram=Histogram(data_points=points))])
                ]
            )
        ]
    )
    status, _, body = _post(service, req.SerializeToString(), PB, "/v1/metrics")
    assert status == 200, body
    resp = metrics_service_pb2.ExportMetricsServiceResponse.FromString(body)
    assert resp.partial_success.rejected_data_points == 2
    assert "metric_points.count" in resp.partial_success.error_message
    assert [r["count"] for r in service.get("/api/v1/records/metric_points")["rows"]] == [7]

    records = [
        LogRecord(
            time_unix_nano=1, attributes=[_kv("mlvigil.train.run_id", "r"), _kv("mlvigil.train.step", 1e19)]
        ),
        LogRecord(
            time_unix_nano=2, attributes=[_kv("mlvigil.train.run_id", "r"), _kv("mlvigil.train.step", 9)]
        ),
        LogRecord(
            time_unix_nano=3,
            attributes=[_kv("mlvigil.train.run_id", "r"), _kv("mlvigil.train.rank", -(2**33))],
        ),
    ]
    logs = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])]
    )
    status, _, body = _post(service, logs.SerializeToString(), PB, "/v1/logs")
    assert status == 200, body
    lresp = logs_service_pb2.ExportLogsServiceResponse.FromString(body)
    assert lresp.partial_success.rejected_log_records == 2
    assert "training_steps.step" in lresp.partial_success.error_message
    assert service.stats()["logs"] == 1 and service.stats()["training_steps"] == 1
