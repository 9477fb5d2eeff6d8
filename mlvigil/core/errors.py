"""Why a listener refuses a request, and the one mapping from that to HTTP status, gRPC code
and Retry-After that every listener answers with (OTLP/HTTP, OTLP/gRPC, the API).

Code that handles a request raises one of these exceptions (or ``StoreUnavailable`` from the
store); the listener calls ``refusal_of(exc)`` and writes the answer in its own encoding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pydantic import ValidationError

from mlvigil.core.store.base import StoreUnavailable

__all__ = [
    "ApiError",
    "BadRequest",
    "Overloaded",
    "ReadTimeout",
    "Refusal",
    "ShuttingDown",
    "StoreUnavailable",
    "TooLarge",
    "UnsupportedEncoding",
    "format_validation",
    "refusal_of",
]

#: Seconds a client is told to wait while the service shuts down (another replica, or this
#: one restarted, takes the retry).
SHUTDOWN_RETRY_AFTER = 5


class BadRequest(Exception):
    """The payload cannot be decoded (HTTP 400 / gRPC INVALID_ARGUMENT)."""


class TooLarge(Exception):
    """The payload, compressed or not, or its item count is above the configured limit
    (HTTP 413 / gRPC RESOURCE_EXHAUSTED)."""


class UnsupportedEncoding(Exception):
    """Content-Encoding other than gzip or identity (HTTP 415)."""


class ReadTimeout(Exception):
    """The body did not arrive within the read timeout (HTTP 408)."""


class Overloaded(Exception):
    """The queue or the in-flight limit is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"ingest queue full; retry after {retry_after}s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    """The service no longer accepts data (it is stopping)."""


class ApiError(Exception):
    """A request the API refuses: ``status`` and a reason the client can act on."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


@dataclass(frozen=True)
class Refusal:
    """How a listener answers a refused request."""

    #: HTTP status.
    http: int
    #: gRPC status code name (``grpc.StatusCode[...]``).
    grpc: str
    #: What was wrong and what to do, for the client.
    reason: str
    #: Seconds to wait before retrying: HTTP ``Retry-After``, gRPC ``google.rpc.RetryInfo``.
    retry_after: int | None = None
    #: Other HTTP headers to send (an ``ApiError``'s).
    headers: dict[str, str] = field(default_factory=dict)

    def http_headers(self) -> dict[str, str]:
        retry = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return {**self.headers, **retry}


#: gRPC code of an ``ApiError``'s HTTP status (RFC-style mapping of the gRPC HTTP guide).
_GRPC_OF_HTTP = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    429: "UNAVAILABLE",
    503: "UNAVAILABLE",
}

#: The code inside an OTLP/HTTP error body (google.rpc.Status) for each HTTP status, as the
#: OTLP specification maps them.
RPC_CODE_OF_HTTP = {400: 3, 401: 16, 408: 4, 413: 8, 415: 3, 429: 8, 503: 14}


def refusal_of(exc: BaseException) -> Refusal | None:
    """The answer to a request that raised ``exc``; None for an unexpected error (a 500)."""
    if isinstance(exc, ApiError):
        return Refusal(exc.status, _GRPC_OF_HTTP.get(exc.status, "UNKNOWN"), exc.reason, headers=exc.headers)
    if isinstance(exc, BadRequest):
        return Refusal(400, "INVALID_ARGUMENT", str(exc))
    if isinstance(exc, ValidationError):
        return Refusal(400, "INVALID_ARGUMENT", format_validation(exc, "request"))
    if isinstance(exc, RecursionError):  # a backstop: parsers are depth-bounded before they run
        return Refusal(400, "INVALID_ARGUMENT", "input nested too deep")
    if isinstance(exc, TooLarge):
        return Refusal(413, "RESOURCE_EXHAUSTED", f"{exc}; send less per request")
    if isinstance(exc, UnsupportedEncoding):
        return Refusal(415, "INVALID_ARGUMENT", str(exc))
    if isinstance(exc, ReadTimeout):
        return Refusal(408, "DEADLINE_EXCEEDED", str(exc))
    if isinstance(exc, Overloaded):
        return Refusal(429, "UNAVAILABLE", str(exc), exc.retry_after)
    if isinstance(exc, ShuttingDown):
        return Refusal(503, "UNAVAILABLE", str(exc) or "shutting down", SHUTDOWN_RETRY_AFTER)
    if isinstance(exc, StoreUnavailable):
        return Refusal(503, "UNAVAILABLE", str(exc), math.ceil(exc.retry_after))
    return None


def format_validation(exc: ValidationError, where: str) -> str:
    """``where.a.b: message`` for each error, ``; ``-joined (at most 10 listed)."""
    parts = []
    errors = exc.errors(include_url=False)
    for e in errors[:10]:
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{where}{loc}: {msg}")
    if len(errors) > 10:
        parts.append(f"and {len(errors) - 10} more")
    return "; ".join(parts)
