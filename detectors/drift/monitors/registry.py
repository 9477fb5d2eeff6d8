"""The live monitors of one service: declared in the config file and added through the API.

Monitors added through ``/api/v1/monitors`` are kept in the store (documents
``drift_monitors``) and come back on restart; a config monitor wins a name clash. Replicas on
a shared store read the documents back every few seconds (``MonitorSync``), so a monitor
added, replaced or deleted through one replica's API reaches the others without a restart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from detectors.drift.calibration import Calibrations
from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.metrics import DriftMetrics
from detectors.drift.monitor import MonitorDetector
from detectors.drift.workers import StatisticsWorkers
from mlvigil.core.aio import stop_task, wait_event

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext

#: Store documents holding the monitors added through the API (one per monitor name).
MONITOR_DOCS = "drift_monitors"

log = logging.getLogger(__name__)


class MonitorRegistry:
    """The live monitors of one service: config-declared and API-added."""

    def __init__(
        self,
        config: DriftConfig,
        ctx: ServiceContext,
        metrics: DriftMetrics | None,
        calibrations: Calibrations | None = None,
        workers: StatisticsWorkers | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.metrics = metrics
        self.calibrations = calibrations
        self.workers = workers
        self.detectors: dict[str, MonitorDetector] = {}
        self.from_config: set[str] = set()
        # The stored document of each API-added monitor running here (what sync compares).
        self.api_docs: dict[str, dict[str, Any]] = {}

    def make(self, cfg: MonitorConfig) -> MonitorDetector:
        resolved = cfg.resolved(self.config.defaults)
        return MonitorDetector(resolved, self.metrics, self.calibrations, self.workers)

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
            except (ValueError, ValidationError):
                continue
            self.api_docs[name] = doc
        return list(self.detectors.values())

    async def sync(self) -> list[str]:
        """Follow the API-added monitors other replicas added, replaced or deleted (on the
        loop, like the API's handlers); returns the names changed here."""
        stored = await asyncio.to_thread(self.ctx.store.list_docs, MONITOR_DOCS)
        changed: list[str] = []
        for name in [n for n in self.api_docs if n not in stored]:
            det = self.detectors.pop(name, None)
            self.api_docs.pop(name, None)
            if det is not None:
                # The replica whose API deleted it resolved its findings; here it only stops.
                await asyncio.to_thread(self.ctx.detector_loop.remove, det.name, resolve=False)
                if self.metrics:
                    self.metrics.forget(name)
            changed.append(name)
        for name, doc in stored.items():
            if name in self.from_config or self.api_docs.get(name) == doc:
                continue
            try:
                det = self.make(MonitorConfig.model_validate(doc))
            except (ValueError, ValidationError) as exc:
                log.warning("drift: stored monitor %r is not valid here (%s); skipped", name, exc)
                self.api_docs[name] = doc  # not retried until it changes
                continue
            old = self.detectors.get(name)
            if old is not None:
                await asyncio.to_thread(self.ctx.detector_loop.remove, old.name, resolve=False)
            self.detectors[name] = det
            self.api_docs[name] = doc
            self.ctx.detector_loop.add(det)
            changed.append(name)
        return changed

    def describe(self, det: MonitorDetector) -> dict[str, Any]:
        return {
            "config": det.config.model_dump(mode="json"),
            "source": "config" if det.config.name in self.from_config else "api",
            "status": det.status(),
        }


class MonitorSync:
    """A component: runs ``MonitorRegistry.sync`` every ``every`` seconds (shared stores only)."""

    name = "drift-monitor-sync"

    def __init__(self, registry: MonitorRegistry, every: float = 2.0) -> None:
        self.registry = registry
        self.every = every
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    async def _run(self) -> None:
        assert self._stop is not None
        while not await wait_event(self._stop, self.every):
            try:
                changed = await self.registry.sync()
            except Exception as exc:
                log.warning("drift: cannot read the stored monitors now (%s); will retry", exc)
                continue
            if changed:
                log.info("drift: monitors changed through another replica: %s", sorted(changed))

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
        await stop_task(self._task)
        self._task = None


__all__ = ["MONITOR_DOCS", "MonitorRegistry", "MonitorSync"]
