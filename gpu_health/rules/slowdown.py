"""Sustained hardware, thermal or power-brake slowdown: the GPU protecting itself.

For each reason in ``reasons`` (default hw_slowdown, hw_thermal_slowdown,
hw_power_brake_slowdown, sw_thermal_slowdown), fires a warning ``gpu_degraded`` when
the reason was active in at least ``min_fraction`` of at least ``min_samples`` samples in
``window``. Brief slowdowns are normal transients; sustained ones mean cooling, power
supply (the power brake is asserted by the board or chassis) or a failing sensor.
``sw_power_cap`` is routine under heavy load and is not judged by default.

Parameters: ``SlowdownRule`` (window, reasons, min_fraction, min_samples).

Reference: NVML ``nvmlDeviceGetCurrentClocksEventReasons``; DCGM's
``DCGM_FI_DEV_CLOCKS_EVENT_REASONS`` and its thermal/power health watches.

>>> from gpu_health.config import SlowdownRule
>>> from gpu_health.rules.base import Gpu, Series
>>> s = {"mlvigil.gpu.clock_event.active": {'{"reason":"hw_power_brake_slowdown"}':
...      Series([float(t) for t in range(30)], [1.0] * 30)}}
>>> found = SustainedSlowdown(SlowdownRule()).check(Gpu("G", "n", "0", series=s), 30.0)
>>> [f.evidence["reason"] for f in found]
['hw_power_brake_slowdown']
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import SlowdownRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, label
from mlvigil.core.findings import Finding, Severity

_ADVICE = {
    "hw_slowdown": "check cooling and the power supply",
    "hw_thermal_slowdown": "check airflow, fans and the heat sink",
    "hw_power_brake_slowdown": "the chassis or PSU asserted the power brake: check power delivery",
    "sw_thermal_slowdown": "the driver slows the GPU for heat: check airflow",
}


class SustainedSlowdown(Rule):
    name = "slowdown"

    def __init__(self, cfg: SlowdownRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        return {n.CLOCK_EVENT: self.cfg.window, n.CLOCK_SM: self.cfg.window, n.CLOCK_SM_MAX: self.cfg.window}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.window
        by_reason = gpu.by_attr(n.CLOCK_EVENT, "reason")
        for reason in self.cfg.reasons:
            series = by_reason.get(reason)
            if series is None:
                continue
            values = series.since(since).values
            if len(values) < self.cfg.min_samples:
                continue
            fraction = sum(1 for v in values if v > 0) / len(values)
            if fraction >= self.cfg.min_fraction:
                sm, sm_max = gpu.one(n.CLOCK_SM).last, gpu.one(n.CLOCK_SM_MAX).last
                yield self.finding(
                    gpu,
                    DEGRADED,
                    Severity.WARNING,
                    f"{label(gpu)} was held down by {reason} {fraction:.0%} of the last {self.cfg.window:g}s:"
                    f" {_ADVICE.get(reason, 'check the GPU')}.",
                    {
                        "reason": reason,
                        "fraction_active": fraction,
                        "min_fraction": self.cfg.min_fraction,
                        "samples": len(values),
                        "sm_clock_mhz": sm,
                        "sm_clock_max_mhz": sm_max,
                    },
                    detail=reason,
                    window=(since, now),
                )
