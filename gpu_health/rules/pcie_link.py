"""PCIe link trained below its maximum: fewer lanes or a lower generation than the GPU and slot support.

Judged only on busy samples (utilization at or above ``busy_utilization``), because an
idle GPU lowers its link generation to save power. Fires a warning ``gpu_degraded`` when
at least ``min_fraction`` of at least ``min_samples`` busy samples in ``window`` ran below
the maximum generation or width: host-device transfers then run at a fraction of their speed.

Parameters: ``PcieLinkRule`` (window, busy_utilization, min_fraction, min_samples).

Reference: NVIDIA, nvidia-smi ``-q -d PCI`` ("Link Width / Generation: Max, Current")
and the GPU debug guidelines' PCIe checks.

>>> from gpu_health.config import PcieLinkRule
>>> from gpu_health.rules.base import Gpu, Series
>>> ts = [float(t) for t in range(20)]
>>> one = lambda v: {"": Series(ts, [v] * 20)}
>>> s = {"hw.gpu.utilization": one(0.9), "mlvigil.gpu.pcie.link.width": one(8.0),
...      "mlvigil.gpu.pcie.link.width.max": one(16.0), "mlvigil.gpu.pcie.link.generation": one(5.0),
...      "mlvigil.gpu.pcie.link.generation.max": one(5.0)}
>>> found = PcieLinkDowntrained(PcieLinkRule()).check(Gpu("G", "n", "0", series=s), 20.0)
>>> [f.evidence["width"] for f in found]
[8.0]
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import PcieLinkRule
from gpu_health.rules.base import DEGRADED, Gpu, Rule, aligned, label
from mlvigil.core.findings import Finding, Severity


class PcieLinkDowntrained(Rule):
    name = "pcie_link"

    def __init__(self, cfg: PcieLinkRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        w = self.cfg.window
        return {n.UTILIZATION: w, n.PCIE_GEN: w, n.PCIE_GEN_MAX: w, n.PCIE_WIDTH: w, n.PCIE_WIDTH_MAX: w}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        since = now - self.cfg.window
        rows = aligned(
            gpu.one(n.UTILIZATION).since(since),
            gpu.one(n.PCIE_GEN),
            gpu.one(n.PCIE_GEN_MAX),
            gpu.one(n.PCIE_WIDTH),
            gpu.one(n.PCIE_WIDTH_MAX),
        )
        busy = [r for r in rows if r[1] >= self.cfg.busy_utilization]
        if len(busy) < self.cfg.min_samples:
            return
        below = [r for r in busy if r[2] < r[3] or r[4] < r[5]]
        fraction = len(below) / len(busy)
        if fraction >= self.cfg.min_fraction:
            _, _, gen, gen_max, width, width_max = below[-1]
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} PCIe link runs at Gen{int(gen)} x{int(width)} while busy, below its"
                f" Gen{int(gen_max)} x{int(width_max)}: reseat the GPU or check the slot and BIOS link"
                " settings.",
                {
                    "generation": gen,
                    "generation_max": gen_max,
                    "width": width,
                    "width_max": width_max,
                    "busy_samples": len(busy),
                    "fraction_below": fraction,
                    "min_fraction": self.cfg.min_fraction,
                },
                window=(since, now),
            )
