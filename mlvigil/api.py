"""The HTTP API: health, Prometheus metrics, stats, findings, ingest of CloudEvents and labels.

Components add their own routes through ``ServiceContext.routes``; ``/openapi.json`` is
generated from the live route table so it never lists a route that does not exist.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from collector.cloudevents import ingest_event
from collector.http_receiver import ReadTimeout, UnsupportedEncoding, read_body, server_options
from collector.otlp_decode import BadRequest, TooLarge
from collector.pipeline import IngestPipeline, Overloaded, ShuttingDown
from mlvigil import __version__
from mlvigil.auth import bearer_ok
from mlvigil.config import split_addr
from mlvigil.context import ServiceContext
from mlvigil.records import RecordBatch, RecordError, json_text

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(data, default=str), content_type="application/json")


def error(status: int, message: str, **headers: str) -> web.Response:
    resp = json_response({"error": message}, status)
    resp.headers.update(headers)
    return resp


def _float_param(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"{name} must be epoch seconds"}), content_type="application/json"
        ) from None


class Api:
    name = "api"

    def __init__(self, ctx: ServiceContext, pipeline: IngestPipeline, token: str | None) -> None:
        self.ctx = ctx
        self._pipeline = pipeline
        self._token = token
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.ready = False

    # -- middleware ------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        )
        if request.path not in OPEN_PATHS and not bearer_ok(
            request.headers.getall("Authorization", []), self._token
        ):
            resp: web.StreamResponse = error(401, "missing or wrong bearer token")
            resp.headers["WWW-Authenticate"] = "Bearer"
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = exc
        self.ctx.telemetry.api_requests.labels(route=route, code=str(resp.status)).inc()
        return resp

    # -- core routes -----------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: the process serves requests."""
        return json_response({"status": "ok", "version": __version__})

    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: every component started and the queue is not full."""
        if not self.ready:
            return error(503, "starting")
        if self._pipeline.is_full():
            return error(503, "ingest queue full")
        return json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus exposition of mlvigil's own and its detectors' metrics."""
        accept = request.headers.get("Accept", "")
        openmetrics = "application/openmetrics-text" in accept
        body = self.ctx.telemetry.exposition(openmetrics)
        ctype = (
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
            if openmetrics
            else ("text/plain; version=0.0.4; charset=utf-8")
        )
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def stats(self, request: web.Request) -> web.Response:
        """Counts of ingested records by kind, queue depth and firing findings."""
        import asyncio

        counts = await asyncio.to_thread(self.ctx.store.counts)
        return json_response(
            {
                "records": counts,
                "queue": {"items": self._pipeline.depth, "capacity": self._pipeline.max_items},
                "findings_firing": len(self.ctx.book.firing()),
            }
        )

    async def findings(self, request: web.Request) -> web.Response:
        """Findings filtered by kind, severity, state, since (epoch s) and subject labels."""
        import asyncio

        q = request.query
        reserved = {"kind", "severity", "state", "since", "limit"}
        subject = {k: v for k, v in q.items() if k not in reserved}
        try:
            limit = int(q.get("limit", "1000"))
        except ValueError:
            return error(400, "limit must be an integer")
        found = await asyncio.to_thread(
            self.ctx.store.findings,
            kind=q.get("kind"),
            severity=q.get("severity"),
            state=q.get("state"),
            since=_float_param(request, "since"),
            subject=subject or None,
            limit=limit,
        )
        return json_response({"findings": [f.to_dict() for f in found]})

    async def records(self, request: web.Request) -> web.Response:
        """Stored records of one table (newest ``limit``), filtered by since/until and column values."""
        import asyncio

        from mlvigil.records import TABLES

        table = request.match_info["table"]
        if table not in TABLES:
            return error(404, f"unknown record table {table!r}; known: {sorted(TABLES)}")
        known = {c.name for c in TABLES[table]}
        q = request.query
        where = {k: v for k, v in q.items() if k not in ("since", "until", "limit")}
        unknown = sorted(set(where) - known)
        if unknown:
            return error(400, f"unknown column(s) {unknown} of {table}")
        try:
            limit = min(int(q.get("limit", "1000")), 100_000)
        except ValueError:
            return error(400, "limit must be an integer")
        columns = [c.name for c in TABLES[table] if c.sql_type != "BLOB"]
        rows = await asyncio.to_thread(
            self.ctx.store.query,
            table,
            columns=columns,
            since=_float_param(request, "since"),
            until=_float_param(request, "until"),
            where=where or None,
            last=limit,
        )
        n = len(rows[columns[0]]) if columns else 0
        return json_response({"table": table, "rows": [{c: rows[c][i] for c in columns} for i in range(n)]})

    async def evaluate(self, request: web.Request) -> web.Response:
        """Run every detector once now and return the transitions (for tests and operators)."""
        import asyncio

        transitions = await asyncio.to_thread(self.ctx.detector_loop.evaluate_all)
        return json_response(
            {"transitions": [{"transition": t, "finding": f.to_dict()} for f, t in transitions]}
        )

    async def _submit(self, batch: RecordBatch) -> web.Response | None:
        try:
            await self._pipeline.submit(batch)
        except Overloaded as exc:
            return error(429, str(exc), **{"Retry-After": str(exc.retry_after)})
        except ShuttingDown as exc:
            return error(503, str(exc), **{"Retry-After": "5"})
        return None

    async def cloudevents(self, request: web.Request) -> web.Response:
        """KServe / Seldon payload-logger CloudEvents (binary or structured mode)."""
        ingest = self.ctx.services["ingest"]
        limits = self.ctx.config.ingest
        try:
            with ingest.admit():
                body = await read_body(request, limits.max_request_bytes, limits.read_timeout)
                accepted = await ingest_event(ingest, request.headers, body, time.time())
        except TooLarge as exc:
            return error(413, str(exc))
        except UnsupportedEncoding as exc:
            return error(415, str(exc))
        except ReadTimeout as exc:
            return error(408, str(exc))
        except BadRequest as exc:
            return error(400, str(exc))
        except Overloaded as exc:
            return error(429, str(exc), **{"Retry-After": str(exc.retry_after)})
        except ShuttingDown as exc:
            return error(503, str(exc), **{"Retry-After": "5"})
        return json_response({"accepted": accepted}, 202)

    async def labels(self, request: web.Request) -> web.Response:
        """Label feedback: ground truth joined later to predictions by request id."""
        try:
            body = await read_body(request, self.ctx.config.ingest.max_request_bytes)
            doc = json.loads(body)
        except TooLarge as exc:
            return error(413, str(exc))
        except UnsupportedEncoding as exc:
            return error(415, str(exc))
        except BadRequest as exc:
            return error(400, str(exc))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return error(400, f"invalid JSON: {exc}")
        items = doc.get("labels") if isinstance(doc, dict) else doc
        if not isinstance(items, list) or not items:
            return error(400, 'expected {"labels": [{"request_id": ..., "label": ...}, ...]}')
        batch = RecordBatch()
        now = time.time()
        for i, item in enumerate(items):
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("request_id"), str)
                or "label" not in item
            ):
                return error(400, f"labels[{i}]: needs a string request_id and a label")
            ts = item.get("ts", now)
            if not isinstance(ts, int | float):
                return error(400, f"labels[{i}].ts must be epoch seconds")
            try:
                batch.add(
                    "labels",
                    ts=ts,
                    request_id=item["request_id"],
                    service=item.get("service"),
                    model=item.get("model"),
                    label=json_text(item["label"]),
                )
            except RecordError as exc:  # a value its column cannot hold (records.check_row)
                return error(400, f"labels[{i}]: {exc}")
        if (resp := await self._submit(batch)) is not None:
            return resp
        return json_response({"accepted": len(items)}, 202)

    async def openapi(self, request: web.Request) -> web.Response:
        """The OpenAPI description of this API, generated from the route table."""
        paths: dict[str, dict[str, Any]] = {}
        for route in request.app.router.routes():
            info = route.resource.get_info() if route.resource else {}
            path = info.get("path") or info.get("formatter")
            if not path or route.method == "HEAD":
                continue
            doc = (getattr(route.handler, "__doc__", None) or "").strip().splitlines()
            params = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in _path_params(path)
            ]
            paths.setdefault(path, {})[route.method.lower()] = {
                "summary": doc[0] if doc else route.method + " " + path,
                "parameters": params,
                "responses": {"200": {"description": "OK"}, "401": {"description": "Bearer token required"}},
            }
        spec = {
            "openapi": "3.0.3",
            "info": {"title": "mlvigil API", "version": __version__},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}] if self._token else [],
            "paths": dict(sorted(paths.items())),
        }
        return json_response(spec)

    # -- lifecycle -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._middleware], client_max_size=self.ctx.config.ingest.max_request_bytes + 1
        )
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/api/v1/stats", self.stats)
        r.add_get("/api/v1/findings", self.findings)
        r.add_get("/api/v1/records/{table}", self.records)
        r.add_post("/api/v1/evaluate", self.evaluate)
        r.add_post("/api/v1/ingest/cloudevents", self.cloudevents)
        r.add_post("/api/v1/labels", self.labels)
        app.add_routes(self.ctx.routes)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.build_app(), **server_options(self.ctx.config.ingest.read_timeout))
        await self._runner.setup()
        host, port = split_addr(self.ctx.config.server.api_addr)
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.ready = False
        if self._runner:
            await self._runner.cleanup()


def _path_params(path: str) -> list[str]:
    import re

    return re.findall(r"{([^}:]+)", path)
