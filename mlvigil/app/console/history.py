"""Each drift monitor's statistic over time, recorded in the store for the console's plots.

Monitors keep only their last evaluation (``MonitorDetector.status``); this component reads
it at least once per detector interval (and every second) and appends each new evaluation's
headline number to the ``monitor_stats`` record table, so the console draws the statistic (or
p-value, or estimate) across restarts, kept as long as ``storage.retention.monitor_stats``.
Two evaluations of one monitor within one sampling period record only the later one.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlvigil.core.aio import stop_task
from mlvigil.core.records import RecordBatch

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext

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
        # The evaluation time last recorded per monitor (an unchanged status is not new).
        self._last_at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def series(self, monitor: str) -> tuple[str, list[Point]]:
        """The monitor's newest ``max_points`` recorded evaluations, oldest first (a store query)."""
        rows = self._ctx.store.query(
            "monitor_stats",
            columns=["ts", "statistic", "value", "threshold", "status"],
            where={"monitor": monitor},
            last=self._max,
        )
        points = [
            Point(at, value, threshold, status or "")
            for at, value, threshold, status in zip(
                rows["ts"], rows["value"], rows["threshold"], rows["status"], strict=True
            )
        ]
        what = rows["statistic"][-1] if rows["statistic"] else "statistic"
        return what, points

    def sample(self) -> RecordBatch:
        """The monitors' evaluations since the last sample, as ``monitor_stats`` rows."""
        batch = RecordBatch()
        registry = self._ctx.services.get("drift")
        if registry is None:
            return batch
        for name, det in list(registry.detectors.items()):
            status = det.status()
            found = statistic_of(status)
            at = status.get("at")
            if found is None or not isinstance(at, int | float) or not math.isfinite(at):
                continue
            if self._last_at.get(name) == at:
                continue  # no evaluation since the last sample
            what, value, threshold = found
            if not math.isfinite(value):
                continue
            self._last_at[name] = float(at)
            batch.add(
                "monitor_stats",
                ts=float(at),
                monitor=name,
                statistic=what,
                value=value,
                threshold=threshold,
                status=str(status.get("status", "")),
            )
        for gone in set(self._last_at) - set(registry.detectors):
            del self._last_at[gone]
        return batch

    async def _loop(self) -> None:
        # Often enough to see every evaluation, including those run on demand (POST /api/v1/evaluate).
        interval = min(max(self._ctx.config.detectors.interval, 0.5), SAMPLE_EVERY_S)
        while True:
            try:
                batch = self.sample()
                if batch.rows("monitor_stats"):
                    await asyncio.to_thread(self._ctx.store.append, batch)
            except Exception:
                log.exception("console: recording monitor statistics failed")
            await asyncio.sleep(interval)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="console-history")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
