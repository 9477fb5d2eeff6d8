"""The console's routes under ``/ui/``: login, static files, the page handlers and the
retraining actions. The pages themselves are rendered by ``findings_pages`` and
``fleet_pages`` (monitors, runs, GPUs).

Each page handler validates its query, then renders in a worker thread (the store is read
there, never on the event loop). Errors are pages too: a bad filter is a 400 page saying
which parameter and what it accepts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from mlvigil.app.console import auth, findings_pages, fleet_pages
from mlvigil.app.console.evidence import DRIFT_KINDS, GPU_WINDOW_S
from mlvigil.app.console.render import BadRequest, esc, page
from mlvigil.core.auth import token_matches

if TYPE_CHECKING:
    from mlvigil.app.console.history import StatisticHistory
    from mlvigil.core.context import ServiceContext

#: The longest run id or GPU uuid a page accepts.
MAX_FILTER_CHARS = findings_pages.MAX_FILTER_CHARS
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,256}$")
_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


class Console:
    def __init__(self, ctx: ServiceContext, history: StatisticHistory) -> None:
        self.ctx = ctx
        self.history = history
        token = ctx.config.server.auth_token
        self._token = token.resolve() if token else None
        self._grafana = ctx.config.server.grafana_url

    # -- plumbing ----------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ui", self.home),
            web.get("/ui/", self.home),
            web.get("/ui/login", self.login_form),
            web.post("/ui/login", self.login),
            web.post("/ui/logout", self.logout),
            web.get("/ui/static/{name}", self.static),
            web.get("/ui/findings", self.findings),
            web.get("/ui/findings/{finding_id}", self.finding),
            web.get("/ui/monitors", self.monitors),
            web.get("/ui/runs", self.runs),
            web.get("/ui/runs/{run_id}", self.run),
            web.get("/ui/gpus", self.gpus),
            web.get("/ui/gpus/{gpu_uuid}", self.gpu),
            web.post("/ui/actions/triggers/{trigger_id}/{action}", self.trigger_action),
        ]

    async def _render(
        self, title: str, active: str, build: Callable[[], str], status: int = 200
    ) -> web.Response:
        try:
            body = await asyncio.to_thread(build)
        except BadRequest as exc:
            title, body, status = "Bad request", f'<p class="error">{esc(exc)}</p>', 400
        except web.HTTPNotFound as exc:
            title, body, status = "Not found", f'<p class="error">{esc(exc.text)}</p>', 404
        html = page(title, body, active=active, logout=self._token is not None)
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Content-Security-Policy": _CSP},
        )

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/findings")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound(text=f"no console file {name!r}")
        data = resources.files("mlvigil.app.console").joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=_STATIC[name], headers={"Cache-Control": "max-age=300"})

    # -- login ---------------------------------------------------------------------------------
    def _login_page(self, next_path: str, message: str = "", status: int = 200) -> web.Response:
        body = (
            (f'<p class="error">{esc(message)}</p>' if message else "")
            + '<form method="post" action="/ui/login" class="login">'
            f'<input type="hidden" name="next" value="{esc(next_path)}">'
            '<label>API token <input type="password" name="token" autocomplete="current-password"'
            ' required autofocus></label> <button type="submit">Log in</button></form>'
            '<p class="muted">The token is the one the API takes as <code>Authorization: Bearer</code>'
            " (server.auth_token). The browser keeps a session cookie derived from it.</p>"
        )
        html = page("Log in", body)
        return web.Response(
            text=html, status=status, content_type="text/html", headers={"Content-Security-Policy": _CSP}
        )

    async def login_form(self, request: web.Request) -> web.Response:
        next_path = auth.safe_next(request.query.get("next"))
        if self._token is None:
            raise web.HTTPFound(next_path)
        return self._login_page(next_path)

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        next_path = auth.safe_next(str(form.get("next", "")))
        if self._token is None:
            raise web.HTTPSeeOther(next_path)
        given = str(form.get("token", "")).strip()
        if not given or not token_matches(given, self._token):
            return self._login_page(
                next_path, "Wrong token: use the API's bearer token (server.auth_token).", 401
            )
        resp = web.HTTPSeeOther(next_path)
        auth.set_session(resp, self._token, secure=request.secure)
        raise resp

    async def logout(self, request: web.Request) -> web.Response:
        resp = web.HTTPSeeOther(auth.LOGIN)
        auth.clear_session(resp)
        raise resp

    # -- findings ----------------------------------------------------------------------------
    async def findings(self, request: web.Request) -> web.Response:
        q = request.query
        return await self._render("Findings", "findings", lambda: findings_pages.findings_page(self.ctx, q))

    async def finding(self, request: web.Request) -> web.Response:
        fid = request.match_info["finding_id"]
        if not _ID.match(fid):
            raise web.HTTPNotFound(text="no such finding")
        return await self._render(
            "Finding",
            "findings",
            lambda: findings_pages.finding_page(self.ctx, self.history, self._grafana, fid),
        )

    async def trigger_action(self, request: web.Request) -> web.Response:
        tid, action = request.match_info["trigger_id"], request.match_info["action"]
        if request.headers.get("X-Mlvigil-Console") != "1":
            return web.json_response(
                {"error": "console actions need the X-Mlvigil-Console: 1 header"}, status=403
            )
        if (
            self._token is not None
            and "Authorization" not in request.headers
            and not auth.same_origin(request)
        ):
            return web.json_response({"error": "console actions must come from a console page"}, status=403)
        retrain = self.ctx.services.get("retrain")
        if retrain is None:
            return web.json_response({"error": "no retraining configured"}, status=404)
        if action not in ("approve", "reject", "dry-run") or not _ID.match(tid):
            return web.json_response(
                {"error": f"unknown action {action!r}; approve, reject or dry-run"}, status=404
            )
        try:
            if action == "dry-run":
                doc = await asyncio.to_thread(retrain.preview, tid)
            else:
                fn = retrain.approve if action == "approve" else retrain.reject
                doc = await asyncio.to_thread(fn, tid, "console", "")
        except KeyError:
            return web.json_response({"error": f"no such trigger {tid!r}"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(json.loads(json.dumps(doc, default=str)))

    # -- monitors, runs, GPUs ------------------------------------------------------------------
    async def monitors(self, request: web.Request) -> web.Response:
        return await self._render(
            "Drift monitors", "monitors", lambda: fleet_pages.monitors_page(self.ctx, self.history)
        )

    async def runs(self, request: web.Request) -> web.Response:
        return await self._render("Training runs", "runs", lambda: fleet_pages.runs_page(self.ctx))

    async def run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["run_id"]
        if len(run_id) > MAX_FILTER_CHARS:
            raise web.HTTPNotFound(text="no such run")
        return await self._render(
            f"Training run {run_id}", "runs", lambda: fleet_pages.run_page(self.ctx, run_id)
        )

    async def gpus(self, request: web.Request) -> web.Response:
        return await self._render("GPUs", "gpus", lambda: fleet_pages.gpus_page(self.ctx))

    async def gpu(self, request: web.Request) -> web.Response:
        uuid = request.match_info["gpu_uuid"]
        if len(uuid) > 256:
            raise web.HTTPNotFound(text="no such GPU")
        try:
            hours = float(request.query.get("hours", GPU_WINDOW_S / 3600))
        except ValueError:
            hours = -1.0
        if not 0 < hours <= 24 * 14:
            return await self._render(
                "GPU", "gpus", lambda: _raise(BadRequest("hours: a number from 0 to 336"))
            )
        since = time.time() - hours * 3600
        return await self._render(f"GPU {uuid}", "gpus", lambda: fleet_pages.gpu_page(self.ctx, uuid, since))


def _raise(exc: Exception) -> str:
    raise exc


# Scripts and styles only from this service (no inline script); SVG attributes are allowed.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"

__all__ = ["DRIFT_KINDS", "Console"]
