"""The contract every listener that takes data keeps, checked on the real running service.

One set of checks, run against each listener (OTLP/HTTP, OTLP/gRPC, KServe/Seldon payload
logging as CloudEvents, the API's label feedback), the way river's ``test_drift_detectors.py``
runs one set against every detector:

- a body above ``ingest.max_request_bytes``: 413 (gRPC RESOURCE_EXHAUSTED), nothing written;
- a malformed body: 400 (gRPC INVALID_ARGUMENT) with a reason, nothing written;
- overload (every ``ingest.max_requests_in_flight`` place taken): 429 or 503 with a
  Retry-After (gRPC UNAVAILABLE with a RetryInfo delay), nothing written;
- with a token set: no token or a wrong one is 401 (gRPC UNAUTHENTICATED), nothing written;
  the right one is accepted and its data stored.

A new listener joins by adding a ``Listener`` to ``LISTENERS`` (docs/extending-receivers.md).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from tests.harness import ServiceHandle

pytestmark = pytest.mark.timeout(180)

TOKEN = "contract-token"
MAX_BYTES = 64 * 1024
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: The HTTP status each gRPC code stands for in this contract.
GRPC_AS_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
}


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status, or the one GRPC_AS_HTTP gives the gRPC code
    reason: str
    retry_after: float | None


@dataclass(frozen=True)
class Listener:
    name: str
    #: The record table its data goes to.
    table: str
    #: A valid body (one item, distinct per ``n``) and a malformed one.
    valid: Callable[[int], bytes]
    malformed: bytes
    #: Send ``body`` with ``token`` (None: no Authorization) to the service.
    send: Callable[[ServiceHandle, bytes, str | None], Answer]


# -- HTTP listeners ------------------------------------------------------------------------------
def _http(
    url: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    token: str | None,
    reason_of: Callable[..., str],
) -> Answer:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    if token is not None:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    try:
        conn.request("POST", path, body, headers)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    retry = resp.getheader("Retry-After")
    return Answer(resp.status, reason_of(data) if resp.status >= 400 else "", float(retry) if retry else None)


def _rpc_status_message(data: bytes) -> str:
    return status_pb2.Status.FromString(data).message


def _api_error(data: bytes) -> str:
    return str(json.loads(data)["error"])


def _spans(n: int) -> bytes:
    scope = ScopeSpans()
    scope.spans.add(
        trace_id=bytes([7] * 16),
        span_id=(n + 1).to_bytes(8, "big"),
        name="contract",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_001_000_000_000,
    )
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[scope])])
    return request.SerializeToString()


def _otlp_http(svc: ServiceHandle, body: bytes, token: str | None) -> Answer:
    headers = {"Content-Type": "application/x-protobuf"}
    return _http(svc.otlp_http, "/v1/traces", body, headers, token, _rpc_status_message)


def _cloudevents(svc: ServiceHandle, body: bytes, token: str | None) -> Answer:
    # Binary mode, as KServe's payload logger sends a request.
    headers = {
        "Content-Type": "application/json",
        "Ce-Specversion": "1.0",
        "Ce-Id": f"contract-{time.monotonic_ns()}",
        "Ce-Type": "org.kubeflow.serving.inference.request",
        "Ce-Source": "http://localhost:9081/",
        "Ce-Inferenceservicename": "contract",
    }
    return _http(svc.api, "/api/v1/ingest/cloudevents", body, headers, token, _api_error)


def _labels(svc: ServiceHandle, body: bytes, token: str | None) -> Answer:
    return _http(svc.api, "/api/v1/labels", body, {"Content-Type": "application/json"}, token, _api_error)


# -- gRPC ----------------------------------------------------------------------------------------
def _otlp_grpc(svc: ServiceHandle, body: bytes, token: str | None) -> Answer:
    metadata = (("authorization", f"Bearer {token}"),) if token is not None else ()
    with grpc.insecure_channel(svc.otlp_grpc) as channel:
        raw = channel.unary_unary(TRACE_EXPORT)  # bytes in, bytes out
        try:
            raw(body, timeout=30, metadata=metadata)
        except grpc.RpcError as err:
            retry = None
            trailer = dict(err.trailing_metadata() or ()).get("grpc-status-details-bin")
            if trailer:
                for detail in status_pb2.Status.FromString(trailer).details:
                    info = error_details_pb2.RetryInfo()
                    if detail.Unpack(info):
                        retry = info.retry_delay.seconds + info.retry_delay.nanos / 1e9
            return Answer(GRPC_AS_HTTP.get(err.code(), 500), err.details() or "", retry)
    return Answer(200, "", None)


LISTENERS = [
    Listener("otlp-http", "spans", _spans, b"\xff\xfe not protobuf", _otlp_http),
    Listener("otlp-grpc", "spans", _spans, b"\xff\xfe not protobuf", _otlp_grpc),
    Listener(
        "cloudevents",
        "inferences",
        lambda n: json.dumps({"instances": [[float(n), 1.0]]}).encode(),
        b'{"instances": [[1.0, 2.0]',
        _cloudevents,
    ),
    Listener(
        "api-labels",
        "labels",
        lambda n: json.dumps({"labels": [{"request_id": f"r{n}", "label": n}]}).encode(),
        # One good label and one without a request id: the whole request is refused.
        json.dumps({"labels": [{"request_id": "ok", "label": 1}, {"request_id": "", "label": 2}]}).encode(),
        _labels,
    ),
]


# -- the service ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceHandle]:
    """One service for the module: a token, a small body limit and one request in flight."""
    data: Path = tmp_path_factory.mktemp("contract") / "data"
    config = {"ingest": {"max_request_bytes": MAX_BYTES, "max_requests_in_flight": 1}}
    handle = ServiceHandle(data, config, {"MLVIGIL_AUTH_TOKEN": TOKEN})
    try:
        yield handle.start()
    finally:
        handle.kill()


def _count(svc: ServiceHandle, table: str) -> int:
    return svc.stats().get(table, 0)


def _held_place(svc: ServiceHandle) -> socket.socket:
    """A request that holds the one in-flight place: headers and half of its body sent."""
    body = _spans(10_000)
    port = int(svc.otlp_http.rsplit(":", 1)[1])
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow.sendall(
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[: len(body) // 2]
    )
    return slow


def _place_free(svc: ServiceHandle) -> bool:
    # An empty export writes nothing and is answered 200 once a place is free.
    return _otlp_http(svc, b"", TOKEN).status == 200


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda item: item.name)
def test_accepts_valid_data_with_the_token(svc: ServiceHandle, listener: Listener) -> None:
    before = _count(svc, listener.table)
    answer = listener.send(svc, listener.valid(1), TOKEN)
    assert answer.status in (200, 202), answer
    svc.wait_for(lambda: _count(svc, listener.table) > before, timeout=10)


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda item: item.name)
def test_oversize_body_is_refused(svc: ServiceHandle, listener: Listener) -> None:
    before = _count(svc, listener.table)
    answer = listener.send(svc, b"x" * (MAX_BYTES + 1024), TOKEN)
    assert answer.status == 413, answer
    assert _count(svc, listener.table) == before


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda item: item.name)
def test_malformed_body_is_refused_with_a_reason(svc: ServiceHandle, listener: Listener) -> None:
    before = _count(svc, listener.table)
    answer = listener.send(svc, listener.malformed, TOKEN)
    assert answer.status == 400, answer
    assert len(answer.reason) > 10, answer
    assert _count(svc, listener.table) == before


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda item: item.name)
def test_overload_says_when_to_retry(svc: ServiceHandle, listener: Listener) -> None:
    svc.wait_for(lambda: _place_free(svc), timeout=30)
    before = _count(svc, listener.table)
    slow = _held_place(svc)
    try:
        answer = svc.wait_for(
            lambda: (a := listener.send(svc, listener.valid(2), TOKEN)).status in (429, 503) and a,
            timeout=10,
        )
        assert answer.retry_after is not None and answer.retry_after > 0, answer
        assert answer.reason, answer
        assert _count(svc, listener.table) == before
    finally:
        slow.close()
    svc.wait_for(lambda: _place_free(svc), timeout=30)


@pytest.mark.parametrize("listener", LISTENERS, ids=lambda item: item.name)
def test_token_is_required(svc: ServiceHandle, listener: Listener) -> None:
    before = _count(svc, listener.table)
    for token in (None, "wrong-token"):
        answer = listener.send(svc, listener.valid(3), token)
        assert answer.status == 401, (token, answer)
    assert _count(svc, listener.table) == before
