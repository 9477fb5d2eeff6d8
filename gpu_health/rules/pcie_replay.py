"""PCIe replays: link-level retransmissions, a sign of a marginal slot, riser or cable.

Fires a warning ``gpu_degraded`` when the replay counter rose faster than
``max_per_minute`` over ``window`` (a rate over a window, so one burst at boot does not
fire and a slow steady climb does).

Parameters: ``PcieReplayRule`` (window, max_per_minute).

Reference: DCGM health watches (``DCGM_HEALTH_WATCH_PCIE``), whose replay-rate limit is
8 per minute.

>>> from gpu_health.config import PcieReplayRule
>>> from gpu_health.rules.base import Gpu, Series
>>> s = {"mlvigil.gpu.pcie.replay": {"": Series([0.0, 150.0, 300.0], [0.0, 200.0, 400.0])}}
>>> [f.kind for f in PcieReplays(PcieReplayRule()).check(Gpu("GPU-1", "node-a", "0", series=s), now=300.0)]
['gpu_degraded']
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import PcieReplayRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, increase, label
from mlvigil.core.findings import Finding, Severity


class PcieReplays(Rule):
    name = "pcie_replay"

    def __init__(self, cfg: PcieReplayRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        return {n.PCIE_REPLAY: self.cfg.window}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        series = gpu.one(n.PCIE_REPLAY)
        if len(series.ts) < 2:
            return
        since = now - self.cfg.window
        rise = increase(series, since)
        # Rate over the span actually covered, so a young series is not diluted.
        span = max(series.ts[-1] - max(series.ts[0], since), 1.0)
        per_minute = rise / span * 60.0
        if per_minute > self.cfg.max_per_minute:
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} PCIe link replays at {per_minute:.1f}/min (limit {self.cfg.max_per_minute:g}):"
                " check the slot, riser and cabling.",
                {
                    "replays": rise,
                    "per_minute": per_minute,
                    "limit_per_minute": self.cfg.max_per_minute,
                    "window_s": self.cfg.window,
                },
                window=(since, now),
            )
