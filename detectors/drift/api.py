"""``/api/v1/monitors``: list, add, delete monitors and post reference datasets.

Monitors added here are kept in the store (documents ``drift_monitors``) and come back on
restart; monitors declared in the config file are listed but changed only there.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.metrics import DriftMetrics
from detectors.drift.monitor import REFERENCE_DOCS, MonitorDetector
from detectors.drift.profile import rows_to_columns

if TYPE_CHECKING:
    from mlvigil.context import ServiceContext

MONITOR_DOCS = "drift_monitors"
#: Most rows accepted in one posted reference dataset.
MAX_REFERENCE_ROWS = 200_000


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status, dumps=lambda o: json.dumps(o, default=str))


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _number(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


class MonitorRegistry:
    """The live monitors of one service: config-declared and API-added."""

    def __init__(self, config: DriftConfig, ctx: ServiceContext, metrics: DriftMetrics | None) -> None:
        self.config = config
        self.ctx = ctx
        self.metrics = metrics
        self.detectors: dict[str, MonitorDetector] = {}
        self.from_config: set[str] = set()

    def make(self, cfg: MonitorConfig) -> MonitorDetector:
        return MonitorDetector(cfg.resolved(self.config.defaults), self.metrics)

    def load(self) -> list[MonitorDetector]:
        """Config monitors, then those added through the API before (config wins on a name clash)."""
        for cfg in self.config.monitors:
            self.detectors[cfg.name] = self.make(cfg)
            self.from_config.add(cfg.name)
        for name, doc in self.ctx.store.list_docs(MONITOR_DOCS).items():
            if name in self.detectors:
                continue
            try:
                self.detectors[name] = self.make(MonitorConfig.model_validate(doc))
            except ValidationError:
                continue
        return list(self.detectors.values())

    def describe(self, det: MonitorDetector) -> dict[str, Any]:
        return {
            "config": det.config.model_dump(mode="json"),
            "source": "config" if det.config.name in self.from_config else "api",
            "status": det.status(),
        }

    # -- handlers ----------------------------------------------------------------------------
    async def list_monitors(self, request: web.Request) -> web.Response:
        """All monitors with their configuration and last evaluation."""
        return _json({"monitors": [self.describe(d) for d in self.detectors.values()]})

    async def get(self, request: web.Request) -> web.Response:
        """One monitor, with its last report."""
        det = self.detectors.get(request.match_info["name"])
        if det is None:
            return _error(404, "no such monitor")
        return _json(self.describe(det))

    async def create(self, request: web.Request) -> web.Response:
        """Add (or replace an API-added) monitor; body: the monitor as in the config file."""
        try:
            body = await request.json()
            cfg = MonitorConfig.model_validate(body)
        except (json.JSONDecodeError, ValueError) as exc:
            msg = (
                "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
                if isinstance(exc, ValidationError)
                else "body is not JSON"
            )
            return _error(400, msg)
        if cfg.name in self.from_config:
            return _error(409, f"monitor {cfg.name!r} is declared in the config file")
        det = self.make(cfg)
        await asyncio.to_thread(self.ctx.store.put_doc, MONITOR_DOCS, cfg.name, cfg.model_dump(mode="json"))
        if cfg.name in self.detectors:
            await asyncio.to_thread(self.ctx.detector_loop.remove, self.detectors[cfg.name].name)
        self.detectors[cfg.name] = det
        self.ctx.detector_loop.add(det)
        return _json(self.describe(det), 201)

    async def delete(self, request: web.Request) -> web.Response:
        """Remove an API-added monitor and resolve what it had firing."""
        name = request.match_info["name"]
        if name in self.from_config:
            return _error(409, f"monitor {name!r} is declared in the config file")
        det = self.detectors.pop(name, None)
        if det is None:
            return _error(404, "no such monitor")
        await asyncio.to_thread(self.ctx.store.delete_doc, MONITOR_DOCS, name)
        await asyncio.to_thread(self.ctx.store.delete_doc, REFERENCE_DOCS, name)
        await asyncio.to_thread(self.ctx.detector_loop.remove, det.name)
        if self.metrics:
            self.metrics.forget(name)
        return _json({"deleted": name})

    async def reference(self, request: web.Request) -> web.Response:
        """Post the reference dataset: JSON ``{"rows": [{...}, ...]}`` (or a bare list) or CSV."""
        name = request.match_info["name"]
        det = self.detectors.get(name)
        if det is None:
            return _error(404, "no such monitor")
        raw = await request.read()
        try:
            if request.content_type in ("text/csv", "application/csv"):
                reader = csv.DictReader(io.StringIO(raw.decode("utf-8")))
                rows = [{k: _number(v) for k, v in r.items()} for r in reader]
            else:
                body = json.loads(raw)
                got = body.get("rows") if isinstance(body, dict) else body
                if not isinstance(got, list) or not all(isinstance(r, dict) for r in got):
                    return _error(400, 'expected {"rows": [{feature: value, ...}, ...]} or CSV')
                rows = got
        except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
            return _error(400, f"cannot read the dataset: {exc}")
        if not rows:
            return _error(400, "the dataset has no rows")
        if len(rows) > MAX_REFERENCE_ROWS:
            return _error(413, f"at most {MAX_REFERENCE_ROWS} rows")
        texts = [r.pop("prompt", None) for r in rows] if det.config.kind == "llm" else []
        columns = rows_to_columns(rows)
        try:
            # Fitted before it is kept: a dataset the monitor cannot use is refused, not stored.
            await asyncio.to_thread(det.set_dataset, columns)
        except ValueError as exc:
            return _error(400, f"the dataset does not fit monitor {name!r}: {exc}")
        await asyncio.to_thread(
            self.ctx.store.put_doc, REFERENCE_DOCS, name, {"columns": columns, "texts": texts}
        )
        return _json({"monitor": name, "rows": len(rows), "columns": sorted(columns)}, 201)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v1/monitors", self.list_monitors),
            web.post("/api/v1/monitors", self.create),
            web.get("/api/v1/monitors/{name}", self.get),
            web.delete("/api/v1/monitors/{name}", self.delete),
            web.post("/api/v1/monitors/{name}/reference", self.reference),
        ]
