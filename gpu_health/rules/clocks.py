"""SM clocks held under their maximum while the GPU is busy, with no routine reason.

Counts samples where utilization is at least ``busy_utilization`` and none of the
``explained_by`` reasons is active (power capping is routine; hardware and thermal
slowdowns have their own rule); fires a warning ``gpu_degraded`` when at least
``min_fraction`` of at least ``min_samples`` such samples in ``window`` ran the SM clock
under ``max_clock_ratio`` of its maximum. Typical causes: application clocks or locked
clocks left low (``nvidia-smi -lgc``/``-ac``), a GPU stuck in a low performance state.

Parameters: ``ClocksRule`` (window, busy_utilization, max_clock_ratio, min_fraction,
min_samples, explained_by).

Reference: NVML ``nvmlDeviceGetClockInfo``/``nvmlDeviceGetMaxClockInfo``; the
"clocks event reasons" section of nvidia-smi ``-q -d PERFORMANCE``.

>>> from gpu_health.config import ClocksRule
>>> from gpu_health.rules.base import Gpu, Series
>>> ts = [float(t) for t in range(20)]
>>> s = {"hw.gpu.utilization": {"": Series(ts, [0.97] * 20)},
...      "mlvigil.gpu.clock.sm": {"": Series(ts, [900.0] * 20)},
...      "mlvigil.gpu.clock.sm.max": {"": Series(ts, [1980.0] * 20)}}
>>> found = ClocksHeldDown(ClocksRule()).check(Gpu("G", "n", "0", series=s), 20)
>>> [round(f.evidence["median_clock_ratio"], 2) for f in found]
[0.45]
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import ClocksRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, Series, aligned, label
from mlvigil.core.findings import Finding, Severity


class ClocksHeldDown(Rule):
    name = "clocks_low"

    def __init__(self, cfg: ClocksRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        w = self.cfg.window
        return {n.UTILIZATION: w, n.CLOCK_SM: w, n.CLOCK_SM_MAX: w, n.CLOCK_EVENT: w}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.window
        rows = aligned(gpu.one(n.UTILIZATION).since(since), gpu.one(n.CLOCK_SM), gpu.one(n.CLOCK_SM_MAX))
        reasons = gpu.by_attr(n.CLOCK_EVENT, "reason")
        explained: set[float] = set()
        active_seen: dict[str, int] = {}
        for reason, series in reasons.items():
            for t, v in zip(series.ts, series.values, strict=True):
                if v > 0 and t >= since:
                    active_seen[reason] = active_seen.get(reason, 0) + 1
                    if reason in self.cfg.explained_by:
                        explained.add(t)
        busy = [r for r in rows if r[1] >= self.cfg.busy_utilization and r[0] not in explained and r[3] > 0]
        if len(busy) < self.cfg.min_samples:
            return
        ratios = [r[2] / r[3] for r in busy]
        low = sum(1 for x in ratios if x < self.cfg.max_clock_ratio)
        fraction = low / len(busy)
        if fraction >= self.cfg.min_fraction:
            median = statistics.median(ratios)
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} ran busy at {median:.0%} of its maximum SM clock for {fraction:.0%} of"
                f" {len(busy)} samples with no power or thermal reason: check application or locked clocks.",
                {
                    "median_clock_ratio": median,
                    "limit_ratio": self.cfg.max_clock_ratio,
                    "fraction_low": fraction,
                    "busy_samples": len(busy),
                    "sm_clock_mhz": busy[-1][2],
                    "sm_clock_max_mhz": busy[-1][3],
                    "active_reasons": active_seen,
                },
                window=(since, now),
            )


__all__ = ["ClocksHeldDown", "Series"]
