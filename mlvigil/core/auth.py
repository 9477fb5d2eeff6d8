"""The one token check, used by every listener (OTLP/HTTP, OTLP/gRPC, the API, the console login).

RFC 9110 section 11.1: the auth scheme is case-insensitive, so ``bearer x`` is ``Bearer x``.
A request carrying the Authorization header more than once is refused on every transport:
proxies and servers disagree on which copy wins, so accepting either would let a request
mean different things to different hops.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from mlvigil.core.errors import Refusal

#: The answer to a request without the right token, on every listener.
UNAUTHORIZED = Refusal(
    401, "UNAUTHENTICATED", "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
)


def bearer_ok(values: Sequence[str] | str | None, token: str | None) -> bool:
    """True when auth is off (``token`` None) or exactly one header carries ``Bearer <token>``.

    ``values`` is every value of the Authorization header the request carried (HTTP:
    ``headers.getall``; gRPC: the ``authorization`` metadata entries), or one value.
    """
    if token is None:
        return True
    if values is None:
        return False
    if isinstance(values, str):
        values = [values]
    if len(values) != 1:
        return False
    scheme, _, credentials = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return token_matches(credentials.strip(), token)


def token_matches(given: str, token: str) -> bool:
    """``given`` is ``token``, compared in constant time (a header, or the console's login form)."""
    try:
        # aiohttp hands undecodable header bytes over as lone surrogates: not a match, not a crash.
        given_bytes = given.encode()
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(given_bytes, token.encode())
