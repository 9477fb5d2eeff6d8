"""A lost GPU: NVML answers GpuIsLost for it, or it stopped reporting while its node goes on.

- ``mlvigil.gpu.lost`` = 1 in the latest sample -> critical ``gpu_fault`` (the GPU fell off
  the bus or its driver state is gone; only a reset or reboot brings it back);
- no point from the GPU for ``stale_after`` while other GPUs of the same host still report
  -> critical ``gpu_fault`` (after an agent restart a GPU off the bus may no longer be
  enumerated at all, so it never says it is lost).

Parameters: ``LostRule`` (stale_after, lookback).

Reference: NVML ``NVML_ERROR_GPU_IS_LOST``; NVIDIA XID 79 ("GPU has fallen off the bus").

>>> from gpu_health.config import LostRule
>>> from gpu_health.rules.base import Gpu, Series
>>> s = {"mlvigil.gpu.lost": {"": Series([1.0, 2.0], [0.0, 1.0])}}
>>> [f.evidence["cause"] for f in GpuLost(LostRule()).check(Gpu("G", "n", "0", series=s), 3.0)]
['GpuIsLost']
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import LostRule
from gpu_health.rules.base import FAULT, Gpu, Rule, label
from mlvigil.core.findings import Finding, Severity


class GpuLost(Rule):
    name = "gpu_lost"

    def __init__(self, cfg: LostRule) -> None:
        self.cfg = cfg
        self._host_latest: dict[str, float] = {}

    def windows(self) -> dict[str, float]:
        return {n.LOST: self.cfg.lookback, n.INFO: self.cfg.lookback}

    def prepare(self, gpus: Iterable[Gpu]) -> None:
        """Note each host's newest report, to tell a silent GPU from a silent node."""
        self._host_latest = {}
        for gpu in gpus:
            last = gpu.one(n.INFO).ts[-1:] or gpu.one(n.LOST).ts[-1:]
            if last:
                self._host_latest[gpu.host] = max(self._host_latest.get(gpu.host, 0.0), last[0])

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        lost = gpu.one(n.LOST)
        if lost.last:
            yield self.finding(
                gpu,
                FAULT,
                Severity.CRITICAL,
                f"{label(gpu)} is lost (NVML: GPU is lost): drain the node and reset or reboot it.",
                {"cause": "GpuIsLost", "since": _lost_since(lost.ts, lost.values)},
                detail="lost",
            )
            return
        seen = gpu.one(n.INFO).ts[-1:] or lost.ts[-1:]
        host_seen = self._host_latest.get(gpu.host)
        if seen and host_seen is not None:
            silent = host_seen - seen[0]
            if silent >= self.cfg.stale_after and now - host_seen < self.cfg.stale_after:
                yield self.finding(
                    gpu,
                    FAULT,
                    Severity.CRITICAL,
                    f"{label(gpu)} stopped reporting {silent:.0f}s ago while its node still reports:"
                    " it is probably off the bus; drain the node and check the GPU.",
                    {
                        "cause": "stopped_reporting",
                        "last_seen": seen[0],
                        "node_last_seen": host_seen,
                        "stale_after_s": self.cfg.stale_after,
                    },
                    detail="lost",
                )


def _lost_since(ts: list[float], values: list[float]) -> float:
    since = ts[-1]
    for t, v in zip(reversed(ts), reversed(values), strict=True):
        if not v:
            break
        since = t
    return since
