"""What every HTTP listener shares: aiohttp server settings that bound slow clients, and the
request body read within a size limit and a time limit (gzip inflated with the same bound).

A body above the limit is refused (``TooLarge``, 413) as soon as it passes it, never held whole.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from aiohttp import web

from mlvigil.core.errors import BadRequest, ReadTimeout, TooLarge, UnsupportedEncoding


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


async def read_limited(request: web.Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, refusing (TooLarge) as soon as it passes ``limit`` bytes, and (ReadTimeout)
    when it has not all arrived within ``timeout`` seconds."""
    return b"".join(await read_chunks(request, limit, timeout))


async def read_chunks(request: web.Request, limit: int, timeout: float | None = None) -> list[bytes]:
    """``read_limited`` as the chunks that arrived, for a caller that joins them off the
    event loop (a 1 MB body is a 1 MB copy)."""
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
    return chunks


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


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Inflate gzip ``data`` but never past ``limit`` bytes, so a gzip bomb costs nothing."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"invalid gzip body: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"decompressed body exceeds {limit} bytes")
    if not inflater.eof:
        raise BadRequest("invalid gzip body: truncated stream")
    return out
