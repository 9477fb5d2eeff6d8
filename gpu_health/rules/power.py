"""Power draw above the enforced limit: the limit is not being enforced, or the sensor is wrong.

Fires a warning ``gpu_degraded`` when at least ``min_fraction`` of at least
``min_samples`` samples in ``window`` drew more than ``over_limit_ratio`` times the
enforced power limit. Short excursions (milliseconds) are normal and rarely sampled; a
sustained one is not.

Parameters: ``PowerRule`` (window, over_limit_ratio, min_fraction, min_samples).

Reference: NVML ``nvmlDeviceGetPowerUsage`` and ``nvmlDeviceGetEnforcedPowerLimit``.

>>> from gpu_health.config import PowerRule
>>> from gpu_health.rules.base import Gpu, Series
>>> ts = [float(t) for t in range(10)]
>>> s = {"hw.power": {'{"hw.type":"gpu"}': Series(ts, [790.0] * 10)},
...      "mlvigil.gpu.power.limit": {"": Series(ts, [700.0] * 10)}}
>>> [f.kind for f in PowerOverLimit(PowerRule()).check(Gpu("G", "n", "0", series=s), 10.0)]
['gpu_degraded']
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import PowerRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, aligned, label
from mlvigil.core.findings import Finding, Severity


class PowerOverLimit(Rule):
    name = "power"

    def __init__(self, cfg: PowerRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        return {n.POWER: self.cfg.window, n.POWER_LIMIT: self.cfg.window}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.window
        rows = [r for r in aligned(gpu.one(n.POWER).since(since), gpu.one(n.POWER_LIMIT)) if r[2] > 0]
        if len(rows) < self.cfg.min_samples:
            return
        over = [r for r in rows if r[1] > r[2] * self.cfg.over_limit_ratio]
        fraction = len(over) / len(rows)
        if fraction >= self.cfg.min_fraction:
            peak = max(over, key=lambda r: r[1])
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} drew {peak[1]:.0f} W against an enforced limit of {peak[2]:.0f} W for"
                f" {fraction:.0%} of the last {self.cfg.window:g}s: check the power limit and sensor.",
                {
                    "peak_w": peak[1],
                    "limit_w": peak[2],
                    "ratio_limit": self.cfg.over_limit_ratio,
                    "fraction_over": fraction,
                    "samples": len(rows),
                },
                window=(since, now),
            )
