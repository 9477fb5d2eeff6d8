"""bench/ingest/limits: the answer to, and the peak RSS of the service for, each oversized input.

For each input class, starts a fresh ``mlvigil serve`` with the default limits (memory a
previous input left in the allocator would hide the next one's), reads its resting RSS, sends
the input and reads the process's peak RSS (``VmHWM``). Prints the table docs/limits.md quotes.

    python -m bench.ingest.limits
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans


def _bare_spans(n: int) -> bytes:
    """Spans of nothing but ids: ~30 bytes each, so 16 MB holds 550,000 of them."""
    scope = ScopeSpans()
    for i in range(n):
        scope.spans.add(trace_id=bytes([3] * 16), span_id=(i + 1).to_bytes(8, "big"))
    req = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[scope])])
    return req.SerializeToString()


def _spans(n: int, attrs: int = 0) -> bytes:
    kvs = [KeyValue(key=f"gen_ai.attr{j}", value=AnyValue(string_value="v" * 40)) for j in range(attrs)]
    scope = ScopeSpans()
    for i in range(n):
        scope.spans.add(
            trace_id=bytes([3] * 16),
            span_id=(i + 1).to_bytes(8, "big"),
            name="chat",
            start_time_unix_nano=1_700_000_000_000_000_000,
            end_time_unix_nano=1_700_000_001_000_000_000,
            attributes=kvs,
        )
    req = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[scope])])
    return req.SerializeToString()


# Addresses of the service now running, filled in per input class.
PORTS: dict[str, str] = {}


def _post(url: str, body: bytes, headers: dict[str, str]) -> str:
    parts = urllib.parse.urlsplit(url.format(**PORTS))
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=300)
    try:
        conn.request("POST", parts.path, body, headers)
        resp = conn.getresponse()
        return f"{resp.status}: {resp.read()[:90]!r}"
    finally:
        conn.close()


def _grpc(addr: str, body: bytes) -> str:
    with grpc.insecure_channel(addr) as channel:
        try:
            channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")(
                body, timeout=300
            )
            return "OK"
        except grpc.RpcError as err:
            return f"{err.code().name}: {(err.details() or '')[:90]}"


def _slow_loris(port: int, n: int = 200) -> str:
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(n)]
    for s in socks:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    closed = 0
    for s in socks:
        try:
            if not s.recv(1):
                closed += 1
        except OSError:
            closed += 1
        s.close()
    return f"{closed} of {n} closed by the server after {time.monotonic() - t0:.0f}s"


def _memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.harness import ServiceHandle

    pb = {"Content-Type": "application/x-protobuf"}
    js = {"Content-Type": "application/json"}
    ce = {"Content-Type": "application/json", "Ce-Specversion": "1.0", "Ce-Id": "x"}
    req_type = {**ce, "Ce-Type": "org.kubeflow.serving.inference.request"}
    traces = "{otlp_http}/v1/traces"
    cloudevents = "{api}/api/v1/ingest/cloudevents"
    classes: list[tuple[str, Callable[[], str]]] = [
        (
            "KServe V2 tensor claiming shape [10^18, 2] (97 bytes)",
            lambda: _post(
                cloudevents,
                json.dumps(
                    {"inputs": [{"name": "x", "shape": [10**18, 2], "datatype": "FP32", "data": [1, 2]}]}
                ).encode(),
                req_type,
            ),
        ),
        (
            "CloudEvent of 20,000 instances (request, then response)",
            lambda: (
                _post(
                    cloudevents,
                    json.dumps({"instances": [[float(i), 1.0] for i in range(20_000)]}).encode(),
                    req_type,
                )
                + " / "
                + _post(
                    cloudevents,
                    json.dumps({"predictions": list(range(20_000))}).encode(),
                    {**ce, "Ce-Type": "org.kubeflow.serving.inference.response"},
                )
            ),
        ),
        (
            "CloudEvent of 100,001 instances",
            lambda: _post(
                cloudevents, json.dumps({"instances": [[1]] * 100_001}).encode(), {**req_type, "Ce-Id": "y"}
            ),
        ),
        ("OTLP protobuf, 16 MB, 39,000 spans with attributes", lambda: _post(traces, _spans(39_000, 6), pb)),
        ("OTLP protobuf, 16 MB, 550,000 bare spans (HTTP)", lambda: _post(traces, _bare_spans(550_000), pb)),
        (
            "OTLP protobuf, 16 MB, 550,000 bare spans (gRPC)",
            lambda: _grpc(PORTS["otlp_grpc"], _bare_spans(550_000)),
        ),
        ("OTLP body of 17 MB", lambda: _post(traces, b"\0" * (17 * 2**20), pb)),
        (
            "gzip bomb: 1 MB inflating to 1 GB",
            lambda: _post(traces, gzip.compress(b"\0" * 2**30), {**pb, "Content-Encoding": "gzip"}),
        ),
        (
            "OTLP/JSON, 6 MB, 2 million empty values",
            lambda: _post(traces, b'{"resourceSpans":[' + b",".join([b"{}"] * 2_000_000) + b"]}", js),
        ),
        (
            "OTLP/JSON, 16 MB of nested arrays",
            lambda: _post(traces, b"[" * (8 * 2**20) + b"]" * (8 * 2**20), js),
        ),
        (
            "200 slow-header connections (read_timeout 10s)",
            lambda: _slow_loris(int(PORTS["otlp_http"].rsplit(":", 1)[1])),
        ),
    ]
    print("| input | answer | RSS at rest / peak (MB) |\n|---|---|---|")
    for name, send in classes:
        svc = ServiceHandle(
            Path(tempfile.mkdtemp()) / "data", {"ingest": {"read_timeout": "10s"}}, None
        ).start()
        try:
            assert svc.proc is not None
            PORTS.update(api=svc.api, otlp_http=svc.otlp_http, otlp_grpc=svc.otlp_grpc)
            rest = _memory_mb(svc.proc.pid, "VmRSS")
            answer = send()
            peak = _memory_mb(svc.proc.pid, "VmHWM")
            print(f"| {name} | {answer} | {rest:.0f} / {peak:.0f} |", flush=True)
        finally:
            svc.kill()


if __name__ == "__main__":
    main()
