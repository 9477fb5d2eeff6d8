"""What a monitor's evaluators share: its config, metrics, row source, reference and status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.drift.calibration import Calibrations
from detectors.drift.config import MonitorConfig
from detectors.drift.metrics import DriftMetrics
from detectors.drift.monitors.reference import Reference
from detectors.drift.monitors.rows import RowSource
from detectors.drift.sources import Columns
from detectors.drift.workers import StatisticsWorkers
from mlvigil.core.findings import Severity


def _subject_value(configured: str | None, observed: list[Any]) -> str:
    if configured:
        return configured
    values = {v for v in observed if v is not None}
    return str(next(iter(values))) if len(values) == 1 else "*"


@dataclass
class MonitorContext:
    config: MonitorConfig
    metrics: DriftMetrics | None
    #: Where min-P calibrations come from; None computes them inside the evaluation.
    calibrations: Calibrations | None
    reference: Reference
    source: RowSource
    #: The last evaluation, as ``GET /api/v1/monitors/{name}`` shows it.
    last: dict[str, Any] = field(default_factory=lambda: {"status": "not evaluated"})
    #: Worker processes computing window statistics; None computes them in this process.
    workers: StatisticsWorkers | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def severity(self) -> Severity:
        return Severity(self.config.severity or "warning")

    def skipped(self, reason: str) -> None:
        """Count an evaluation that decided nothing (``no_reference``, ``error``, ...)."""
        if self.metrics:
            self.metrics.skipped(self.config.name, reason)

    def error(self, message: str, now: float) -> None:
        """An evaluation that failed: said in the status, counted in the metrics."""
        self.last = {"status": "error", "error": message, "at": now}
        self.skipped("error")

    def subject(self, rows: Columns) -> dict[str, str]:
        c = self.config
        return {
            "service": _subject_value(c.service, rows.get("service", [])),
            "model": _subject_value(c.model, rows.get("model") or rows.get("response_model") or []),
            "model_version": _subject_value(c.model_version, rows.get("model_version", [])),
            "monitor": c.name,
        }


__all__ = ["MonitorContext"]
