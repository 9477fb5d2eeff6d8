"""Temperature past its limit: GPU die near its own slowdown threshold, or memory past its maximum.

The GPU limit is the GPU's reported slowdown threshold minus ``slowdown_margin`` (so the
finding comes before the hardware slows down), or ``gpu_limit`` when no threshold is
reported; the memory limit is ``memory_limit``. Fires a warning ``gpu_degraded`` when at
least ``min_fraction`` of at least ``min_samples`` samples in ``window`` were at or over it.

Parameters: ``TemperatureRule`` (window, slowdown_margin, gpu_limit, memory_limit,
min_fraction, min_samples).

Reference: NVML ``nvmlDeviceGetTemperatureThreshold`` (slowdown/shutdown thresholds);
DCGM's thermal health watch.

>>> from gpu_health.config import TemperatureRule
>>> from gpu_health.rules.base import Gpu, Series
>>> ts = [float(t) for t in range(10)]
>>> s = {"mlvigil.gpu.temperature": {"": Series(ts, [86.0] * 10)},
...      "mlvigil.gpu.temperature.slowdown": {"": Series(ts, [89.0] * 10)}}
>>> found = OverTemperature(TemperatureRule()).check(Gpu("G", "n", "0", series=s), 10.0)
>>> [f.evidence["limit_c"] for f in found]
[84.0]
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import TemperatureRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, label
from mlvigil.core.findings import Finding, Severity


class OverTemperature(Rule):
    name = "temperature"

    def __init__(self, cfg: TemperatureRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        w = self.cfg.window
        return {n.TEMPERATURE: w, n.TEMPERATURE_MEMORY: w, n.TEMPERATURE_SLOWDOWN: w}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.window
        slowdown = gpu.one(n.TEMPERATURE_SLOWDOWN).last
        gpu_limit = slowdown - self.cfg.slowdown_margin if slowdown else self.cfg.gpu_limit
        for sensor, name, limit in (
            ("gpu", n.TEMPERATURE, gpu_limit),
            ("memory", n.TEMPERATURE_MEMORY, self.cfg.memory_limit),
        ):
            values = gpu.one(name).since(since).values
            if len(values) < self.cfg.min_samples:
                continue
            over = [v for v in values if v >= limit]
            fraction = len(over) / len(values)
            if fraction >= self.cfg.min_fraction:
                yield self.finding(
                    gpu,
                    DEGRADED,
                    Severity.WARNING,
                    f"{label(gpu)} {sensor} temperature reached {max(over):.0f} C (limit {limit:.0f} C) for"
                    f" {fraction:.0%} of the last {self.cfg.window:g}s: check cooling before it slows down.",
                    {
                        "sensor": sensor,
                        "max_c": max(over),
                        "latest_c": values[-1],
                        "limit_c": limit,
                        "slowdown_threshold_c": slowdown,
                        "fraction_over": fraction,
                    },
                    detail=sensor,
                    window=(since, now),
                )
