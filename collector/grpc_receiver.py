"""OTLP/gRPC receiver: the trace, metrics and logs Export services.

Overload answers UNAVAILABLE with a google.rpc.RetryInfo detail (OTLP clients retry it and
honour the delay); messages above the size limit are refused by gRPC itself
(RESOURCE_EXHAUSTED) before they are handed to us.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from google.protobuf import duration_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from collector.http_receiver import bearer_ok
from collector.otlp_ingest import OtlpIngest
from collector.pipeline import Overloaded, ShuttingDown
from mlvigil.config import split_addr
from mlvigil.store import StoreUnavailable

log = logging.getLogger(__name__)


def _retry_trailer(code: grpc.StatusCode, message: str, seconds: int) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    detail = AnyProto()
    detail.Pack(info)
    st = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return (("grpc-status-details-bin", st.SerializeToString()),)


class _Export:
    def __init__(self, ingest: OtlpIngest, signal: str, token: str | None) -> None:
        self._ingest = ingest
        self._signal = signal
        self._token = token

    async def Export(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        tel = self._ingest.telemetry
        code = "OK"
        try:
            if self._token is not None:
                md = dict(context.invocation_metadata() or ())
                if not bearer_ok(md.get("authorization"), self._token):
                    code = "UNAUTHENTICATED"
                    await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            try:
                result = await self._ingest.export(self._signal, request, "grpc")
            except Overloaded as exc:
                code = "UNAVAILABLE"
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    str(exc),
                    trailing_metadata=_retry_trailer(grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after),
                )
            except ShuttingDown as exc:
                code = "UNAVAILABLE"
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            except StoreUnavailable as exc:
                code = "UNAVAILABLE"
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    str(exc),
                    trailing_metadata=_retry_trailer(grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after),
                )
            return result.response
        finally:
            tel.requests.labels(signal=self._signal, transport="grpc", code=code).inc()


class OtlpGrpcReceiver:
    name = "otlp-grpc"

    def __init__(self, ingest: OtlpIngest, addr: str, max_bytes: int, token: str | None) -> None:
        self._ingest = ingest
        self._addr = addr
        self._max = max_bytes
        self._token = token
        self._server: grpc.aio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max),
                ("grpc.so_reuseport", 0),
            ]
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
            _Export(self._ingest, "traces", self._token), server
        )
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
            _Export(self._ingest, "metrics", self._token), server
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
            _Export(self._ingest, "logs", self._token), server
        )
        host, port = split_addr(self._addr)
        self.port = server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise OSError(f"cannot listen for OTLP/gRPC on {self._addr}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server:
            # Let in-flight exports finish (they resolve once their batch is committed).
            await self._server.stop(grace=5)
