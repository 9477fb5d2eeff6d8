"""Each drift monitor's statistic over time, kept in memory for the console's plots.

Monitors keep only their last evaluation (``MonitorDetector.status``); this component reads
it once per detector interval and keeps a bounded series per monitor, so the console can draw
the statistic (or p-value, or estimate) since the service started.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlvigil.aio import stop_task

if TYPE_CHECKING:
    from mlvigil.context import ServiceContext

log = logging.getLogger(__name__)

#: Longest time between two looks at the monitors' last evaluations.
SAMPLE_EVERY_S = 1.0


@dataclass(frozen=True)
class Point:
    at: float
    value: float
    threshold: float | None
    status: str


def statistic_of(status: dict[str, Any]) -> tuple[str, float, float | None] | None:
    """(what, value, threshold) of a monitor's last evaluation, or None when it has none."""
    if status.get("mode") == "streaming" and status.get("statistic") is not None:
        return "statistic", float(status["statistic"]), _num(status.get("threshold"))
    report = status.get("report")
    if isinstance(report, dict) and report.get("p_value") is not None:
        return "p-value", float(report["p_value"]), _num(report.get("alpha"))
    metrics = status.get("metrics")
    if isinstance(metrics, list) and metrics and isinstance(metrics[0], dict):
        m = metrics[0]
        value = m.get("value", m.get("current"))
        if value is not None:
            return f"{m.get('metric', 'metric')}", float(value), None
    return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


class StatisticHistory:
    name = "console-history"

    def __init__(self, ctx: ServiceContext, max_points: int) -> None:
        self._ctx = ctx
        self._max = max_points
        self._series: dict[str, deque[Point]] = {}
        self._what: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def series(self, monitor: str) -> tuple[str, list[Point]]:
        return self._what.get(monitor, "statistic"), list(self._series.get(monitor, ()))

    def sample(self) -> None:
        registry = self._ctx.services.get("drift")
        if registry is None:
            return
        for name, det in list(registry.detectors.items()):
            status = det.status()
            found = statistic_of(status)
            at = status.get("at")
            if found is None or not isinstance(at, int | float):
                continue
            what, value, threshold = found
            points = self._series.setdefault(name, deque(maxlen=self._max))
            if points and points[-1].at == at:
                continue  # no evaluation since the last sample
            if not math.isfinite(value):
                continue
            points.append(Point(float(at), value, threshold, str(status.get("status", ""))))
            self._what[name] = what
        for gone in set(self._series) - set(registry.detectors):
            del self._series[gone]

    async def _loop(self) -> None:
        # Often enough to see every evaluation, including those run on demand (POST /api/v1/evaluate).
        interval = min(max(self._ctx.config.detectors.interval, 0.5), SAMPLE_EVERY_S)
        while True:
            try:
                self.sample()
            except Exception:
                log.exception("console: sampling monitor statistics failed")
            await asyncio.sleep(interval)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="console-history")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
