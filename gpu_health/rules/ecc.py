"""Uncorrected ECC errors: memory returned data it could not correct.

Fires a critical ``gpu_fault`` while the volatile uncorrected counter (since the driver
loaded) is above zero, or when the aggregate (lifetime) uncorrected counter rose within
``window``. Corrected errors are the ECC doing its job and are left to XID 92.

Parameters: ``EccRule`` (window).

Reference: NVIDIA, "GPU Memory Error Management" (docs.nvidia.com/deploy/a100-gpu-mem-error-mgmt):
an uncorrectable error ends the running applications and needs a GPU reset.

>>> from gpu_health.config import EccRule
>>> from gpu_health.rules.base import Gpu, Series
>>> attrs = '{"counter":"volatile","type":"uncorrected"}'
>>> s = {"mlvigil.gpu.ecc.errors": {attrs: Series([1.0, 2.0], [0.0, 2.0])}}
>>> [f.kind for f in UncorrectedEcc(EccRule()).check(Gpu("GPU-1", "node-a", "0", series=s), now=3.0)]
['gpu_fault']
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import EccRule
from gpu_health.rules.base import FAULT, Gpu, Rule, Series, increase, label
from mlvigil.core.findings import Finding, Severity


class UncorrectedEcc(Rule):
    name = "ecc_uncorrected"

    def __init__(self, cfg: EccRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        return {n.ECC_ERRORS: self.cfg.window}

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        volatile = aggregate = None
        for attrs_json, series in gpu.series.get(n.ECC_ERRORS, {}).items():
            attrs = json.loads(attrs_json) if attrs_json else {}
            if attrs.get("type") != "uncorrected":
                continue
            if attrs.get("counter") == "volatile":
                volatile = series
            elif attrs.get("counter") == "aggregate":
                aggregate = series
        since = now - self.cfg.window
        current = volatile.last if volatile is not None else None
        rise = increase(aggregate, since) if aggregate is not None else 0.0
        if (current or 0) > 0 or rise > 0:
            yield self.finding(
                gpu,
                FAULT,
                Severity.CRITICAL,
                f"{label(gpu)} has uncorrected ECC memory errors: drain the node and reset the GPU;"
                " replace it if they return.",
                {
                    "uncorrected_volatile": current,
                    "uncorrected_aggregate_increase": rise,
                    "uncorrected_aggregate": aggregate.last if isinstance(aggregate, Series) else None,
                    "window_s": self.cfg.window,
                },
                window=(since, now),
            )
