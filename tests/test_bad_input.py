"""Bad input gets a clear error, writes nothing, and the service stays up."""

from __future__ import annotations

import gzip
import json

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
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
