"""How a browser presents the API's bearer token: a login form that sets a session cookie.

With ``server.auth_token`` set, every console page needs the token, like the API. A browser
cannot add an ``Authorization`` header to a link it follows, so ``/ui/login`` takes the token
once and answers with a cookie holding a value derived from it (HMAC-SHA256 of a fixed label
keyed by the token, so the cookie is not the token and stops working when the token changes).

The cookie is ``HttpOnly`` and ``SameSite=Strict``: other sites can neither read it nor make
the browser send it. It authorises reads (GET, HEAD) anywhere on the API, so the console's
links to raw records and JSON work, and the console's own actions (POST under ``/ui/``), which
also must come from the same origin. Everything else still needs the bearer header.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import quote, urlsplit

from aiohttp import web

PREFIX = "/ui"
COOKIE = "mlvigil_console"
LOGIN = "/ui/login"
#: Paths under /ui/ that need no session: the login form and the CSS/JS it uses.
_OPEN_PREFIXES = ("/ui/static/",)
_SESSION_LABEL = b"mlvigil-console-session-v1"
_READS = frozenset({"GET", "HEAD"})


def is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def is_open(path: str) -> bool:
    return path == LOGIN or path.startswith(_OPEN_PREFIXES)


def session_value(token: str) -> str:
    return hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).hexdigest()


def same_origin(request: web.Request) -> bool:
    """A state-changing request from a page of this service (Origin, else Referer, names our host)."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source:
        return False
    return urlsplit(source).netloc == request.host


def session_ok(request: web.Request, token: str | None) -> bool:
    """Whether the request carries a valid console session for what it asks."""
    if token is None:
        return True
    value = request.cookies.get(COOKIE)
    if not value or not hmac.compare_digest(value.encode(), session_value(token).encode()):
        return False
    if request.method in _READS:
        return True
    return is_console(request.path) and same_origin(request)


def refuse(request: web.Request) -> web.Response | None:
    """A browser asking for a console page without a session goes to the login form (None: not a
    console page, or a client that sent a bearer token, which gets the API's 401)."""
    if not is_console(request.path) or request.method not in _READS or "Authorization" in request.headers:
        return None
    target = quote(request.path_qs, safe="/")
    return web.Response(status=303, headers={"Location": f"{LOGIN}?next={target}"})


def safe_next(value: str | None) -> str:
    """Where to go after login: only a console path on this service (never another site)."""
    if not value or not value.startswith(PREFIX + "/") or value.startswith("//") or "\\" in value:
        return PREFIX + "/findings"
    return value


def set_session(response: web.StreamResponse, token: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE, session_value(token), path="/", httponly=True, samesite="Strict", secure=secure
    )


def clear_session(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")
