"""OTLP/HTTP receiver: POST /v1/traces, /v1/metrics, /v1/logs (protobuf or JSON, gzip).

Status codes follow the OTLP specification: 200 (with partial_success when some items were
rejected), 400 malformed, 401 bad token, 408 body not sent within ``ingest.read_timeout``,
413 too large (bytes, enforced while inflating; items; JSON containers), 415 unknown content
type or encoding, 429 with Retry-After when the queue or the in-flight limit is full, 503
while shutting down. Error bodies are google.rpc.Status in the request's encoding.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from google.rpc import status_pb2

from collector.otlp_decode import (
    JSON,
    PROTOBUF,
    BadRequest,
    TooLarge,
    encode_response,
    gunzip_limited,
)
from collector.otlp_ingest import OtlpIngest
from collector.pipeline import Overloaded, ShuttingDown
from mlvigil.auth import bearer_ok
from mlvigil.config import split_addr
from mlvigil.store import StoreUnavailable

log = logging.getLogger(__name__)

SIGNALS = {"/v1/traces": "traces", "/v1/metrics": "metrics", "/v1/logs": "logs"}
_GRPC_CODES = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 429: 8, 503: 14}


def _error(status: int, message: str, content_type: str, retry_after: int | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    st = status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message)
    if content_type == PROTOBUF:
        return web.Response(
            status=status, body=st.SerializeToString(), content_type=PROTOBUF, headers=headers
        )
    return web.Response(
        status=status,
        text=json.dumps({"code": st.code, "message": message}),
        content_type=JSON,
        headers=headers,
    )


def server_options(read_timeout: float) -> dict[str, Any]:
    """aiohttp server settings every HTTP listener uses (pass to ``web.AppRunner``).

    aiohttp has no header timeout of its own, but it closes a connection on which no complete
    request has arrived within ``keepalive_timeout`` of its opening (or of the last response),
    so that bounds slow headers (slow-loris); ``read_limited`` bounds the body.
    """
    # auto_decompress off: aiohttp would inflate gzip without a bound; read_body does it bounded.
    return {
        "access_log": None,
        "handle_signals": False,
        "auto_decompress": False,
        "keepalive_timeout": read_timeout,
    }


class ReadTimeout(Exception):
    """The body did not arrive within the read timeout (HTTP 408)."""


async def read_limited(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, refusing (TooLarge) as soon as it passes ``limit`` bytes, and (ReadTimeout)
    when it has not all arrived within ``timeout`` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"body of {request.content_length} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"body exceeds {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ReadTimeout(f"request body not received within {timeout:g}s (ingest.read_timeout)") from None
    return b"".join(chunks)


def content_encoding(request: web.Request) -> str:
    """``gzip`` or ``identity``; UnsupportedEncoding for anything else."""
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding == "gzip":
        return encoding
    if encoding not in ("identity", ""):
        raise UnsupportedEncoding(f"unsupported content encoding {encoding!r}; use gzip or none")
    return "identity"


async def read_body(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, inflated if gzip, never holding more than ``limit`` bytes either way."""
    encoding = content_encoding(request)
    body = await read_limited(request, limit, timeout)
    return gunzip_limited(body, limit) if encoding == "gzip" else body


class UnsupportedEncoding(Exception):
    """Content-Encoding other than gzip or identity (HTTP 415)."""


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
            return _error(401, "missing or wrong bearer token", reply_type)
        if ctype not in (PROTOBUF, JSON):
            return _error(415, f"unsupported content type {ctype!r}; use {PROTOBUF} or {JSON}", JSON)
        try:
            encoding = content_encoding(request)
            with self._ingest.admit():
                body = await read_limited(request, self._max, self._ingest.config.read_timeout)
                result = await self._ingest.export_bytes(
                    signal, body, ctype, "http", gzipped=encoding == "gzip"
                )
        except UnsupportedEncoding as exc:
            return _error(415, str(exc), reply_type)
        except ReadTimeout as exc:
            return _error(408, str(exc), reply_type)
        except TooLarge as exc:
            return _error(413, str(exc), reply_type)
        except BadRequest as exc:
            return _error(400, str(exc), reply_type)
        except Overloaded as exc:
            return _error(429, str(exc), reply_type, exc.retry_after)
        except ShuttingDown as exc:
            return _error(503, str(exc), reply_type, 5)
        except StoreUnavailable as exc:
            return _error(503, str(exc), reply_type, exc.retry_after)
        return web.Response(body=encode_response(result.response, reply_type), content_type=reply_type)

    async def start(self) -> None:
        # client_max_size is a backstop only: read_limited enforces the limit while streaming.
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
