"""OTLP/gRPC receiver: the trace, metrics and logs Export services.

The methods take the request as raw bytes: the bearer token is checked before a byte of the
message is decoded, and decoding runs on a decode worker thread like every other receiver's.
Overload answers UNAVAILABLE with a google.rpc.RetryInfo detail (OTLP clients retry it and
honour the delay); messages above the size limit are refused by gRPC itself
(RESOURCE_EXHAUSTED) before they are handed to us; too many items: RESOURCE_EXHAUSTED;
undecodable: INVALID_ARGUMENT. Codes and retry delays come from ``mlvigil.core.errors.refusal_of``,
the mapping every listener uses.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc import error_details_pb2, status_pb2

from collector.otlp_decode import PROTOBUF
from collector.otlp_ingest import OtlpIngest
from mlvigil.core.auth import UNAUTHORIZED, bearer_ok
from mlvigil.core.config import split_addr
from mlvigil.core.errors import Refusal, refusal_of

log = logging.getLogger(__name__)

SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}


def _retry_trailer(code: grpc.StatusCode, message: str, seconds: int) -> tuple[tuple[str, bytes], ...]:
    info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds))
    detail = AnyProto()
    detail.Pack(info)
    st = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return (("grpc-status-details-bin", st.SerializeToString()),)


async def _abort(context: grpc.aio.ServicerContext, refusal: Refusal) -> None:
    """End the call with the refusal's code; a retry delay rides as RetryInfo (OTLP clients
    honour it)."""
    code = grpc.StatusCode[refusal.grpc]
    trailer = () if refusal.retry_after is None else _retry_trailer(code, refusal.reason, refusal.retry_after)
    await context.abort(code, refusal.reason, trailing_metadata=trailer)


def _export(
    ingest: OtlpIngest, signal: str, token: str | None
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    async def export(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        tel = ingest.telemetry
        code = "OK"
        try:
            if token is not None:
                values = [v for k, v in (context.invocation_metadata() or ()) if k == "authorization"]
                if not bearer_ok([str(v) for v in values], token):
                    code = UNAUTHORIZED.grpc
                    await _abort(context, UNAUTHORIZED)
            try:
                with ingest.admit():
                    result = await ingest.export_bytes(signal, request, PROTOBUF, "grpc")
            except Exception as exc:
                refusal = refusal_of(exc)
                if refusal is None:
                    raise
                code = refusal.grpc
                await _abort(context, refusal)
            return result.response.SerializeToString()
        finally:
            tel.requests.labels(signal=signal, transport="grpc", code=code).inc()

    return export


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
        # No request_deserializer: the handler gets the raw bytes (auth first, then decode).
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            _export(self._ingest, signal, self._token)
                        )
                    },
                )
                for signal, service in SERVICES.items()
            )
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
