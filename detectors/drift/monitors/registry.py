"""The live monitors of one service: declared in the config file and added through the API.

Monitors added through ``/api/v1/monitors`` are kept in the store (documents
``drift_monitors``) and come back on restart; a config monitor wins a name clash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from detectors.drift.calibration import Calibrations
from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.metrics import DriftMetrics
from detectors.drift.monitor import MonitorDetector

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext

#: Store documents holding the monitors added through the API (one per monitor name).
MONITOR_DOCS = "drift_monitors"


class MonitorRegistry:
    """The live monitors of one service: config-declared and API-added."""

    def __init__(
        self,
        config: DriftConfig,
        ctx: ServiceContext,
        metrics: DriftMetrics | None,
        calibrations: Calibrations | None = None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.metrics = metrics
        self.calibrations = calibrations
        self.detectors: dict[str, MonitorDetector] = {}
        self.from_config: set[str] = set()

    def make(self, cfg: MonitorConfig) -> MonitorDetector:
        return MonitorDetector(cfg.resolved(self.config.defaults), self.metrics, self.calibrations)

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


__all__ = ["MONITOR_DOCS", "MonitorRegistry"]
