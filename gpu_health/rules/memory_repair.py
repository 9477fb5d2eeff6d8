"""Memory repair state: row remapping (A100 and later) and page retirement (earlier GPUs).

- a failed row remap -> critical ``gpu_fault`` (the GPU cannot repair its memory any more);
- a remap or a page retirement pending -> warning ``gpu_degraded`` (takes effect on reset);
- retired pages at or above ``retired_pages_limit`` -> critical ``gpu_fault`` (due for RMA).

Each judged on the latest sample: these are states, not rates.

Parameters: ``MemoryRepairRule`` (retired_pages_limit).

Reference: NVIDIA, "GPU Memory Error Management", row-remapping and dynamic page
retirement; DCGM's health checks use 60 retired pages as the replacement limit.

>>> from gpu_health.config import MemoryRepairRule
>>> from gpu_health.rules.base import Gpu, Series
>>> s = {"mlvigil.gpu.remapped_rows.pending": {"": Series([1.0], [1.0])}}
>>> [f.kind for f in MemoryRepair(MemoryRepairRule()).check(Gpu("GPU-1", "node-a", "0", series=s), now=2.0)]
['gpu_degraded']
"""

from __future__ import annotations

from collections.abc import Iterable

from gpu_health import names as n
from gpu_health.config import MemoryRepairRule
from gpu_health.rules.base import DEGRADED, FAULT, Gpu, Rule, label
from mlvigil.core.findings import Finding, Severity

_LATEST = 600.0  # seconds of history read to find the latest state


class MemoryRepair(Rule):
    name = "memory_repair"

    def __init__(self, cfg: MemoryRepairRule) -> None:
        self.cfg = cfg

    def windows(self) -> dict[str, float]:
        return {
            n.REMAPPED_ROWS_FAILURE: _LATEST,
            n.REMAPPED_ROWS_PENDING: _LATEST,
            n.REMAPPED_ROWS: _LATEST,
            n.RETIRED_PAGES_PENDING: _LATEST,
            n.RETIRED_PAGES: _LATEST,
        }

    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        rows = {k: s.last for k, s in gpu.by_attr(n.REMAPPED_ROWS, "type").items()}
        if (gpu.one(n.REMAPPED_ROWS_FAILURE).last or 0) > 0:
            yield self.finding(
                gpu,
                FAULT,
                Severity.CRITICAL,
                f"{label(gpu)} failed to remap a memory row: it can no longer repair its memory; replace it.",
                {"remap_failure": True, "remapped_rows": rows},
                detail="remap_failure",
            )
        if (gpu.one(n.REMAPPED_ROWS_PENDING).last or 0) > 0:
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} has a memory row remap pending: reset the GPU to apply it.",
                {"remap_pending": True, "remapped_rows": rows},
                detail="remap_pending",
            )
        if (gpu.one(n.RETIRED_PAGES_PENDING).last or 0) > 0:
            yield self.finding(
                gpu,
                DEGRADED,
                Severity.WARNING,
                f"{label(gpu)} has a memory page retirement pending: reset the GPU to apply it.",
                {"retirement_pending": True},
                detail="retirement_pending",
            )
        pages = {k: s.last or 0 for k, s in gpu.by_attr(n.RETIRED_PAGES, "cause").items()}
        total = sum(pages.values())
        if total >= self.cfg.retired_pages_limit:
            yield self.finding(
                gpu,
                FAULT,
                Severity.CRITICAL,
                f"{label(gpu)} has retired {int(total)} memory pages (limit {self.cfg.retired_pages_limit}):"
                " replace it.",
                {"retired_pages": pages, "total": total, "limit": self.cfg.retired_pages_limit},
                detail="retired_pages_limit",
            )
