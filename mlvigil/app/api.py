"""The HTTP API: health, Prometheus metrics, stats, findings, records; the plugins add theirs.

Components add their own routes through ``ServiceContext.routes``. Every route declares its
parameters and body with ``mlvigil.core.endpoint.endpoint``: the same models validate requests and
generate ``/openapi.json``, so the document lists exactly what the handlers accept.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    model_validator,
)

from collector.pipeline import IngestPipeline
from mlvigil import __version__
from mlvigil.app.console import auth as console_auth
from mlvigil.core.auth import UNAUTHORIZED, bearer_ok
from mlvigil.core.config import split_addr
from mlvigil.core.context import ServiceContext
from mlvigil.core.endpoint import (
    MAX_BODY_KEY,
    MAX_QUERY_VALUE_CHARS,
    MAX_REQUEST_LINE_BYTES,
    ApiError,
    EpochSeconds,
    QueryModel,
    Response,
    endpoint,
    error,
    error_response,
    json_response,
    openapi_document,
)
from mlvigil.core.findings import KINDS, Severity, State
from mlvigil.core.http_body import server_options
from mlvigil.core.records import JSON_COLUMNS, TABLES

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["Api", "error", "json_response"]

#: Label names usable as finding filters: letters, digits, ``_ . - /`` (so ``k8s.namespace`` works).
LABEL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_./-]{0,127}$"
#: Most rows one records query returns.
MAX_RECORD_ROWS = 100_000
#: Most findings one query returns.
MAX_FINDINGS = 10_000

_INT64 = 2**63 - 1
_INT32 = 2**31 - 1


def one_of(values: tuple[str, ...]) -> Any:
    """A string restricted to ``values``; the error lists them, the schema declares the enum."""
    allowed = ", ".join(values)

    def check(value: str) -> str:
        if value not in values:
            raise ValueError(f"must be one of {allowed}")
        return value

    return Annotated[str, AfterValidator(check), Field(json_schema_extra={"enum": list(values)})]


_SEVERITIES = tuple(str(s) for s in Severity)
_STATES = tuple(str(s) for s in State)


# -- request models ------------------------------------------------------------------------------
class FindingsQuery(QueryModel):
    """Query of GET /api/v1/findings; any other parameter is a subject-label filter."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "propertyNames": {"pattern": LABEL_NAME_PATTERN},
            "x-extra-name": "labels",
            "x-extra-description": "Subject labels to match exactly, e.g. service=api&k8s.namespace=prod.",
        },
    )
    __pydantic_extra__: dict[str, Annotated[str, Field(max_length=MAX_QUERY_VALUE_CHARS)]] = Field(init=False)

    kind: one_of(KINDS) | None = None  # type: ignore[valid-type]
    severity: one_of(_SEVERITIES) | None = None  # type: ignore[valid-type]
    state: one_of(_STATES) | None = None  # type: ignore[valid-type]
    since: EpochSeconds | None = Field(None, description="Only findings updated at or after this time.")
    limit: int = Field(1000, ge=1, le=MAX_FINDINGS, description="Most findings returned, newest first.")

    @model_validator(mode="after")
    def _label_names(self) -> FindingsQuery:
        import re

        for name in self.model_extra or {}:
            if not re.fullmatch(LABEL_NAME_PATTERN, name):
                raise ValueError(
                    f"label filter {name!r}: names are letters, digits and _ . - / (starting with a"
                    " letter or _); known parameters: kind, severity, state, since, limit"
                )
        return self

    def labels(self) -> dict[str, str]:
        return dict(self.model_extra or {})


_COLUMN_TYPES: dict[str, Any] = {
    "DOUBLE": float,
    "BIGINT": Annotated[int, Field(ge=-_INT64 - 1, le=_INT64)],
    "INTEGER": Annotated[int, Field(ge=-_INT32 - 1, le=_INT32)],
    "BOOLEAN": bool,
    "VARCHAR": Annotated[str, Field(max_length=MAX_QUERY_VALUE_CHARS)],
}
_JSON_SCHEMA_TYPES = {"DOUBLE": "number", "BIGINT": "integer", "INTEGER": "integer", "BOOLEAN": "boolean"}
_RESERVED = ("since", "until", "limit")


def _records_query_model(table: str) -> type[QueryModel]:
    fields: dict[str, Any] = {
        "since": (EpochSeconds | None, Field(None, description="Only rows with ts at or after this time.")),
        "until": (EpochSeconds | None, Field(None, description="Only rows with ts before this time.")),
        "limit": (int, Field(1000, ge=1, le=MAX_RECORD_ROWS, description="The newest rows returned.")),
    }
    for col in TABLES[table]:
        if col.sql_type in _COLUMN_TYPES and col.name not in _RESERVED:
            fields[col.name] = (
                _COLUMN_TYPES[col.sql_type] | None,
                Field(None, description=f"Only rows whose {col.name} equals this value."),
            )
    model: type[QueryModel] = create_model(
        f"Records{table.title().replace('_', '')}Query", __base__=QueryModel, **fields
    )
    return model


def _records_row_schema(table: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for col in TABLES[table]:
        if col.sql_type == "BLOB":
            continue
        if col.name in JSON_COLUMNS.get(table, ()):
            props[col.name] = {"description": "A JSON document (parsed), or null."}
        else:
            props[col.name] = {"type": [_JSON_SCHEMA_TYPES.get(col.sql_type, "string"), "null"]}
    return {
        "type": "object",
        "properties": {
            "table": {"const": table},
            "rows": {
                "type": "array",
                "items": {"type": "object", "properties": props, "required": sorted(props)},
            },
        },
        "required": ["table", "rows"],
    }


# -- response schemas (documentation; the fuzz test checks answers against them) ---------------
class FindingOut(BaseModel):
    id: str
    kind: str
    severity: one_of(_SEVERITIES)  # type: ignore[valid-type]
    state: one_of(_STATES)  # type: ignore[valid-type]
    subject: dict[str, str]
    summary: str
    evidence: dict[str, Any]
    key: str
    detector: str
    window_start: float | None
    window_end: float | None
    started_at: float
    resolved_at: float | None
    updated_at: float


class FindingsOut(BaseModel):
    findings: list[FindingOut]


class StatsOut(BaseModel):
    records: dict[str, int]
    queue: dict[str, int]
    findings_firing: int


class TransitionOut(BaseModel):
    transition: str
    finding: FindingOut


class EvaluateOut(BaseModel):
    transitions: list[TransitionOut]


_STATUS_SCHEMA = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
_TEXT = {"type": "string"}


def _decode_json_column(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:  # not JSON after all (an older row): the text itself
        return value


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
        """Bearer auth, then the handler; any exception becomes its status (error_response)."""
        route = (
            request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        )
        if not (
            request.path in OPEN_PATHS or console_auth.is_open(request.path) or self._authorized(request)
        ):
            # A browser asking for a console page is sent to the login form instead.
            resp: web.StreamResponse = console_auth.refuse(request) or error(
                UNAUTHORIZED.http, UNAUTHORIZED.reason
            )
            resp.headers.update(UNAUTHORIZED.headers)
        else:
            try:
                resp = await handler(request)
            except Exception as exc:
                resp = error_response(exc)
        self.ctx.telemetry.api_requests.labels(route=route, code=str(resp.status)).inc()
        return resp

    def _authorized(self, request: web.Request) -> bool:
        headers = request.headers.getall("Authorization", [])
        if headers or self._token is None:
            return bearer_ok(headers, self._token)
        # No Authorization header: a browser's console session (mlvigil.app.console.auth).
        return console_auth.session_ok(request, self._token)

    # -- core routes -----------------------------------------------------------------------
    @endpoint("Liveness: the process serves requests.", ok={200: Response("Alive.", _STATUS_SCHEMA)})
    async def healthz(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "version": __version__})

    @endpoint(
        "Readiness: started, not shutting down, and the store and the write-ahead log take writes "
        "(a full ingest queue is answered per request with 429, not here).",
        ok={200: Response("Ready.", _STATUS_SCHEMA)},
        errors=(503,),
    )
    async def readyz(self, request: web.Request) -> web.Response:
        if not self.ready:
            return error(503, "not ready: starting or shutting down", **{"Retry-After": "5"})
        reason = await asyncio.to_thread(self._unavailable_reason)
        if reason is not None:
            return error(503, f"not ready: {reason}", **{"Retry-After": "5"})
        return json_response({"status": "ready"})

    def _unavailable_reason(self) -> str | None:
        """The store's reason, else the first other component's (the write-ahead log)."""
        for check in (self.ctx.store.unavailable_reason, *self.ctx.readiness):
            if (reason := check()) is not None:
                return reason
        return None

    @endpoint(
        "Prometheus exposition of mlvigil's own and its detectors' metrics.",
        ok={200: Response("Prometheus text format (OpenMetrics on request).", _TEXT, "text/plain")},
    )
    async def metrics(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        openmetrics = "application/openmetrics-text" in accept
        body = self.ctx.telemetry.exposition(openmetrics)
        ctype = (
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
            if openmetrics
            else ("text/plain; version=0.0.4; charset=utf-8")
        )
        return web.Response(body=body, headers={"Content-Type": ctype})

    @endpoint(
        "Counts of ingested records by kind, queue depth and firing findings.",
        ok={200: Response("OK", StatsOut)},
    )
    async def stats(self, request: web.Request) -> web.Response:
        await self._visible()
        counts = await asyncio.to_thread(self.ctx.store.counts)
        return json_response(
            {
                "records": counts,
                "queue": {"items": self._pipeline.depth, "capacity": self._pipeline.max_items},
                "findings_firing": len(self.ctx.book.firing()),
            }
        )

    @endpoint(
        "Findings filtered by kind, severity, state, since (epoch s) and subject labels.",
        query=FindingsQuery,
        ok={200: Response("Newest update first.", FindingsOut)},
    )
    async def findings(self, request: web.Request, query: FindingsQuery) -> web.Response:
        found = await asyncio.to_thread(
            self.ctx.store.findings,
            kind=query.kind,
            severity=query.severity,
            state=query.state,
            since=query.since,
            subject=query.labels() or None,
            limit=query.limit,
        )
        return json_response({"findings": [f.to_dict() for f in found]})

    def _records_handler(self, table: str) -> Handler:
        query_model = _records_query_model(table)
        columns = [c.name for c in TABLES[table] if c.sql_type != "BLOB"]
        json_columns = JSON_COLUMNS.get(table, frozenset())

        @endpoint(
            f"Stored {table} records (the newest limit, oldest first), filtered by time and column values.",
            query=query_model,
            ok={200: Response("OK", _records_row_schema(table))},
            tags=("records",),
        )
        async def records(request: web.Request, query: Any) -> web.Response:
            given = query.model_dump(exclude_unset=True)
            where = {k: v for k, v in given.items() if k not in _RESERVED}
            await self._visible(raw_spans=table == "spans")
            rows = await asyncio.to_thread(
                self.ctx.store.query,
                table,
                columns=columns,
                since=query.since,
                until=query.until,
                where=where or None,
                last=query.limit,
            )
            n = len(rows[columns[0]])
            out = [
                {c: _decode_json_column(rows[c][i]) if c in json_columns else rows[c][i] for c in columns}
                for i in range(n)
            ]
            return json_response({"table": table, "rows": out})

        return records

    async def unknown_records(self, request: web.Request) -> web.Response:
        """Any other table name: 404 naming the known ones (not part of the OpenAPI contract)."""
        raise ApiError(404, f"unknown record table {request.match_info['table']!r}; known: {sorted(TABLES)}")

    @endpoint(
        "Run every detector once now and return the transitions (for tests and operators).",
        ok={200: Response("OK", EvaluateOut)},
    )
    async def evaluate(self, request: web.Request) -> web.Response:
        await self._visible(raw_spans=False)
        transitions = await asyncio.to_thread(self.ctx.detector_loop.evaluate_all)
        return json_response(
            {"transitions": [{"transition": t, "finding": f.to_dict()} for f, t in transitions]}
        )

    async def _visible(self, *, raw_spans: bool = True) -> None:
        # Read-your-writes: what was acknowledged before this request is in what it reads
        # (the write-ahead log's loader is normally milliseconds behind; bounded wait; the
        # raw spans load in a lower-priority pass, waited for only by readers of them).
        ingest = self.ctx.services.get("ingest")
        if ingest is not None:
            await ingest.visible(raw_spans=raw_spans)

    @endpoint(
        "The OpenAPI 3.1 description of this API, generated from the handlers' own models.",
        ok={200: Response("OpenAPI document.", {"type": "object"})},
    )
    async def openapi(self, request: web.Request) -> web.Response:
        spec = openapi_document(
            request.app.router.routes(),
            title="mlvigil API",
            version=__version__,
            secured=bool(self._token),
            open_paths=OPEN_PATHS,
        )
        return json_response(spec)

    # -- lifecycle -------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._middleware], client_max_size=self.ctx.config.ingest.max_request_bytes + 1
        )
        app[MAX_BODY_KEY] = self.ctx.config.ingest.max_request_bytes
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/openapi.json", self.openapi)
        r.add_get("/api/v1/stats", self.stats)
        r.add_get("/api/v1/findings", self.findings)
        for table in TABLES:
            r.add_get(f"/api/v1/records/{table}", self._records_handler(table))
        r.add_get("/api/v1/records/{table}", self.unknown_records)
        r.add_post("/api/v1/evaluate", self.evaluate)
        app.add_routes(self.ctx.routes)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.build_app(),
            **server_options(self.ctx.config.ingest.read_timeout),
            max_line_size=MAX_REQUEST_LINE_BYTES,
        )
        await self._runner.setup()
        host, port = split_addr(self.ctx.config.server.api_addr)
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.ready = False
        if self._runner:
            await self._runner.cleanup()
