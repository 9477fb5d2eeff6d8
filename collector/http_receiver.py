"""OTLP/HTTP receiver: POST /v1/traces, /v1/metrics, /v1/logs (protobuf or JSON, gzip).

Status codes follow the OTLP specification: 200 (with partial_success when some items were
rejected), 400 malformed, 401 bad token, 408 body not sent within ``ingest.read_timeout``,
413 too large (bytes, enforced while inflating; items; JSON containers), 415 unknown content
type or encoding, 429 with Retry-After when the queue or the in-flight limit is full, 503
while shutting down. Error bodies are google.rpc.Status in the request's encoding; the status
and Retry-After come from ``mlvigil.core.errors.refusal_of``, the mapping every listener uses.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from google.rpc import status_pb2

from collector.otlp_decode import JSON, PROTOBUF, encode_response
from collector.otlp_ingest import OtlpIngest
from mlvigil.core.auth import UNAUTHORIZED, bearer_ok
from mlvigil.core.config import split_addr
from mlvigil.core.errors import RPC_CODE_OF_HTTP, Refusal, refusal_of

# read_body re-exported: detectors.drift.api reads monitor bodies with it.
from mlvigil.core.http_body import content_encoding, read_chunks, server_options
from mlvigil.core.http_body import read_body as read_body

log = logging.getLogger(__name__)

SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}


def _error(refusal: Refusal, content_type: str) -> web.Response:
    """The refusal as a google.rpc.Status body in ``content_type`` (the OTLP/HTTP error form)."""
    status, headers = refusal.http, refusal.http_headers()
    st = status_pb2.Status(code=RPC_CODE_OF_HTTP.get(status, 2), message=refusal.reason)
    if content_type == PROTOBUF:
        return web.Response(
            status=status, body=st.SerializeToString(), content_type=PROTOBUF, headers=headers
        )
    return web.Response(
        status=status,
        text=json.dumps({"code": st.code, "message": refusal.reason}),
        content_type=JSON,
        headers=headers,
    )


class OtlpHttpReceiver:
    name = "otlp-http"

    def __init__(self, ingest: OtlpIngest, addr: str, max_bytes: int, token: str | None) -> None:
        self._ingest = ingest
        self._addr = addr
        self._max = max_bytes
        self._token = token
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        signal = SIGNALS[request.path]
        tel = self._ingest.telemetry
        ctype = request.content_type
        reply_type = ctype if ctype in (PROTOBUF, JSON) else JSON
        resp = await self._handle(request, signal, ctype, reply_type)
        tel.requests.labels(signal=signal, transport="http", code=str(resp.status)).inc()
        return resp

    async def _handle(self, request: web.Request, signal: str, ctype: str, reply_type: str) -> web.Response:
        if not bearer_ok(request.headers.getall("Authorization", []), self._token):
            return _error(UNAUTHORIZED, reply_type)
        if ctype not in (PROTOBUF, JSON):
            reason = f"unsupported content type {ctype!r}; use {PROTOBUF} or {JSON}"
            return _error(Refusal(415, "INVALID_ARGUMENT", reason), JSON)
        try:
            encoding = content_encoding(request)
            with self._ingest.admit():
                # Joined on the decode worker, not here on the event loop.
                body = await read_chunks(request, self._max, self._ingest.config.read_timeout)
                result = await self._ingest.export_bytes(
                    signal, body, ctype, "http", gzipped=encoding == "gzip"
                )
        except Exception as exc:
            refusal = refusal_of(exc)
            if refusal is None:
                raise
            return _error(refusal, reply_type)
        return web.Response(body=encode_response(result.response, reply_type), content_type=reply_type)

    async def start(self) -> None:
        # client_max_size is a backstop only: read_chunks enforces the limit while streaming.
        app = web.Application(client_max_size=self._max + 1)
        for path in SIGNALS:
            app.router.add_post(path, self.handle)
        self._runner = web.AppRunner(app, **server_options(self._ingest.config.read_timeout))
        await self._runner.setup()
        host, port = split_addr(self._addr)
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
