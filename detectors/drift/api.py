"""``/api/v1/monitors``: list, add, delete monitors and post reference datasets.

Monitors added here are kept in the store (documents ``drift_monitors``) and come back on
restart; monitors declared in the config file are listed but changed only there.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, JsonValue, ValidationError, model_validator

from collector.http_receiver import read_body
from detectors.drift.config import MonitorConfig
from detectors.drift.monitor import MonitorDetector
from detectors.drift.monitors.reference import REFERENCE_DOCS
from detectors.drift.monitors.registry import MONITOR_DOCS, MonitorRegistry
from detectors.drift.profile import rows_to_columns
from detectors.drift.profile_store import PROFILE_DOCS
from mlvigil.core.endpoint import (
    ApiError,
    ListBody,
    Response,
    body_limit,
    endpoint,
    json_response,
)

#: Most rows accepted in one posted reference dataset.
MAX_REFERENCE_ROWS = 200_000
#: Most distinct columns in one posted reference dataset (rows x columns is what it costs).
MAX_REFERENCE_COLUMNS = 1_000
#: Most features or signals one monitor added through the API may list.
MAX_MONITOR_FEATURES = 1_000
#: Longest CSV field.
MAX_CSV_FIELD_CHARS = 64 * 1024

Row = dict[Annotated[str, Field(max_length=256)], JsonValue]
Rows = Annotated[list[Row], Field(min_length=1, max_length=MAX_REFERENCE_ROWS)]


class ReferenceBody(ListBody):
    """``{"rows": [{feature: value, ...}, ...]}`` or the bare list (or CSV with a header row)."""

    list_key = "rows"
    rows: Rows

    @model_validator(mode="after")
    def _bounded_columns(self) -> ReferenceBody:
        names: set[str] = set()
        for row in self.rows:
            names.update(row)
            if len(names) > MAX_REFERENCE_COLUMNS:
                raise ValueError(f"more than {MAX_REFERENCE_COLUMNS} distinct columns")
        return self


class MonitorPath(BaseModel):
    name: str = Field(min_length=1, max_length=100)


def _number(text: str | None) -> Any:
    """A CSV cell as int, finite float or text; empty, NaN and infinite cells are missing."""
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            return text
        return value if math.isfinite(value) else None


def _csv_rows(raw: bytes) -> list[dict[str, Any]]:
    """Rows of a CSV document with a header row, bounded in rows, columns and field size."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"CSV: not UTF-8 (byte {exc.start})") from None
    old_limit = csv.field_size_limit()
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    try:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if not header:
            raise ApiError(400, "CSV: no header row; the first line names the columns")
        if len(header) > MAX_REFERENCE_COLUMNS:
            raise ApiError(400, f"CSV: {len(header)} columns; at most {MAX_REFERENCE_COLUMNS}")
        if len(set(header)) != len(header) or any(not h for h in header):
            raise ApiError(400, "CSV: column names must be unique and not empty")
        rows: list[dict[str, Any]] = []
        for line_no, fields in enumerate(reader, start=2):
            if not fields:
                continue
            if len(fields) > len(header):
                raise ApiError(400, f"CSV line {line_no}: {len(fields)} fields, the header has {len(header)}")
            if len(rows) == MAX_REFERENCE_ROWS:
                raise ApiError(413, f"CSV: more than {MAX_REFERENCE_ROWS} rows")
            rows.append({h: _number(v) for h, v in zip(header, fields, strict=False)})
        return rows
    except csv.Error as exc:
        raise ApiError(400, f"CSV: {exc}") from None
    finally:
        csv.field_size_limit(old_limit)


class MonitorRoutes:
    """The handlers of ``/api/v1/monitors`` over a service's ``MonitorRegistry``."""

    def __init__(self, registry: MonitorRegistry) -> None:
        self.registry = registry
        self.ctx = registry.ctx
        self.metrics = registry.metrics

    @property
    def detectors(self) -> dict[str, MonitorDetector]:
        return self.registry.detectors

    @property
    def from_config(self) -> set[str]:
        return self.registry.from_config

    # -- handlers ----------------------------------------------------------------------------
    @endpoint("All monitors with their configuration and last evaluation.", tags=("drift",))
    async def list_monitors(self, request: web.Request) -> web.Response:
        return json_response({"monitors": [self.registry.describe(d) for d in self.detectors.values()]})

    @endpoint("One monitor, with its last report.", path=MonitorPath, errors=(404,), tags=("drift",))
    async def get(self, request: web.Request, path: MonitorPath) -> web.Response:
        return json_response(self.registry.describe(self._detector(path.name)))

    def _detector(self, name: str) -> MonitorDetector:
        det = self.detectors.get(name)
        if det is None:
            raise ApiError(404, f"no such monitor {name!r}; GET /api/v1/monitors lists them")
        return det

    @endpoint(
        "Add (or replace an API-added) monitor; the body is the monitor as in the config file.",
        body=MonitorConfig,
        ok={201: Response("The monitor.")},
        errors=(409,),
        tags=("drift",),
    )
    async def create(self, request: web.Request, body: MonitorConfig) -> web.Response:
        cfg = body
        for field in ("features", "signals"):
            listed = getattr(cfg, field, None)
            if listed is not None and len(listed) > MAX_MONITOR_FEATURES:
                raise ApiError(400, f"body.{field}: {len(listed)} entries; at most {MAX_MONITOR_FEATURES}")
        if cfg.name in self.from_config:
            raise ApiError(409, f"monitor {cfg.name!r} is declared in the config file; change it there")
        try:
            det = self.registry.make(cfg)
        except (ValueError, ValidationError) as exc:
            raise ApiError(400, f"body: {exc}") from None
        doc = cfg.model_dump(mode="json")
        # Noted before it is stored, so this replica's monitor sync never re-creates it.
        before = self.registry.api_docs.get(cfg.name)
        self.registry.api_docs[cfg.name] = doc
        try:
            await asyncio.to_thread(self.ctx.store.put_doc, MONITOR_DOCS, cfg.name, doc)
        except BaseException:
            if before is None:
                self.registry.api_docs.pop(cfg.name, None)
            else:
                self.registry.api_docs[cfg.name] = before
            raise
        if cfg.name in self.detectors:
            await asyncio.to_thread(self.ctx.detector_loop.remove, self.detectors[cfg.name].name)
        self.detectors[cfg.name] = det
        self.ctx.detector_loop.add(det)
        return json_response(self.registry.describe(det), 201)

    @endpoint(
        "Remove an API-added monitor and resolve what it had firing.",
        path=MonitorPath,
        errors=(404, 409),
        tags=("drift",),
    )
    async def delete(self, request: web.Request, path: MonitorPath) -> web.Response:
        name = path.name
        if name in self.from_config:
            raise ApiError(409, f"monitor {name!r} is declared in the config file; remove it there")
        det = self._detector(name)
        del self.detectors[name]
        self.registry.api_docs.pop(name, None)
        await asyncio.to_thread(self.ctx.store.delete_doc, MONITOR_DOCS, name)
        await asyncio.to_thread(self.ctx.store.delete_doc, REFERENCE_DOCS, name)
        await asyncio.to_thread(self.ctx.store.delete_doc, PROFILE_DOCS, name)
        await asyncio.to_thread(self.ctx.detector_loop.remove, det.name)
        if self.metrics:
            self.metrics.forget(name)
        return json_response({"deleted": name})

    @endpoint(
        "Post the reference dataset: JSON rows or CSV with a header row.",
        description=f"At most {MAX_REFERENCE_ROWS} rows and {MAX_REFERENCE_COLUMNS} columns;"
        " CSV cells are numbers where they parse as one, empty cells are missing.",
        path=MonitorPath,
        body=ReferenceBody,
        body_media=("text/csv", "application/csv"),
        ok={201: Response("Stored; the monitor uses it from its next evaluation.")},
        errors=(404,),
        tags=("drift",),
    )
    async def reference(
        self, request: web.Request, path: MonitorPath, body: ReferenceBody | None
    ) -> web.Response:
        name = path.name
        det = self._detector(name)
        if body is not None:
            rows = body.rows
        else:
            raw = await read_body(request, body_limit(request))
            rows = await asyncio.to_thread(_csv_rows, raw)
        if not rows:
            raise ApiError(400, "the dataset has no rows")
        texts = [r.pop("prompt", None) for r in rows] if det.config.kind == "llm" else []
        columns = await asyncio.to_thread(rows_to_columns, rows)
        try:
            # Fitted before it is kept: a dataset the monitor cannot use is refused, not stored.
            await asyncio.to_thread(det.set_dataset, columns)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ApiError(400, f"the dataset does not fit monitor {name!r}: {exc}") from None
        await asyncio.to_thread(
            self.ctx.store.put_doc, REFERENCE_DOCS, name, {"columns": columns, "texts": texts}
        )
        return json_response({"monitor": name, "rows": len(rows), "columns": sorted(columns)}, 201)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/monitors", self.list_monitors),
            web.post("/api/v1/monitors", self.create),
            web.get("/api/v1/monitors/{name}", self.get),
            web.delete("/api/v1/monitors/{name}", self.delete),
            web.post("/api/v1/monitors/{name}/reference", self.reference),
        ]
