"""The GPU health detector: runs every enabled rule over every GPU with points in the store.

It reads ``metric_points`` only, so it judges the points of any agent that ships the names
in ``gpu_health.names`` (``mlvigil agent`` on each node, or the in-process agent). Each
rule reports the conditions holding now; the engine fires, updates and resolves them.

>>> import tempfile
>>> from mlvigil.core.store.duckdb import DuckDBStore
>>> store = DuckDBStore(tempfile.mkdtemp())
>>> GpuHealthDetector().evaluate(store, now=1_700_000_000.0)
[]
"""

from __future__ import annotations

from collections.abc import Sequence

from gpu_health.config import GpuRules
from gpu_health.rules import build_rules
from gpu_health.rules.base import GpuWindow
from gpu_health.rules.lost import GpuLost
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding
from mlvigil.core.shard import WHOLE, Shard, in_shard, shard_name
from mlvigil.core.store import Store


class GpuHealthDetector(Detector):
    """Parameters: ``rules`` (``GpuRules``: each rule's thresholds and windows); ``shard``: this
    instance judges the GPUs of the nodes (hosts) that hash to it (``mlvigil.core.shard``), so a
    node's GPUs stay together (the lost-GPU rule compares a GPU with its node)."""

    def __init__(
        self, rules: GpuRules | None = None, name: str = "gpu_health", *, shard: Shard = WHOLE
    ) -> None:
        self.name = shard_name(name, shard)
        self.shard = shard
        self.rules = build_rules(rules or GpuRules())
        windows: dict[str, float] = {}
        for rule in self.rules:
            for metric, seconds in rule.windows().items():
                windows[metric] = max(windows.get(metric, 0.0), seconds)
        self._windows = windows

    def evaluate(self, store: Store, now: float) -> Sequence[Finding]:
        if not self.rules:
            return []
        window = GpuWindow(store, now, self._windows)
        gpus = [gpu for gpu in window.gpus.values() if in_shard(gpu.host, self.shard)]
        out: list[Finding] = []
        for rule in self.rules:
            if isinstance(rule, GpuLost):
                rule.prepare(gpus)
            # A rule that raises fails the whole evaluation, so the engine keeps every GPU
            # finding as it was rather than resolving the failed rule's conditions.
            for gpu in gpus:
                out.extend(rule.check(gpu, now))
        return out
