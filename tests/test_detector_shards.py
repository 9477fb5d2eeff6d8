"""Sharded detectors (``mlvigil.core.shard``): shard i of N judges only the keys that hash to i.

For the GPU-health detector (keys: nodes) and the carbon detectors (keys: budget and subject;
serving budgets by name), on one real DuckDB store: every key belongs to exactly one shard, the
shards' findings together are exactly the unsharded detector's (same ids), and each shard is a
detector name of its own (``name[i/N]``), which is what coordination leases separately.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from detectors.carbon import CarbonConfig, CarbonIntensity, CarbonMetrics
from detectors.carbon.budget import CarbonBudgetDetector
from detectors.carbon.metrics import ENERGY
from detectors.carbon.serving import ServingCarbonDetector
from gpu_health.config import GpuConfig
from gpu_health.fake import builtin_scenario
from gpu_health.health import GpuHealthDetector
from gpu_health.plugin import build as build_gpu
from gpu_health.simulate import Simulation
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding
from mlvigil.core.records import RecordBatch
from mlvigil.core.shard import shard_of, shards
from mlvigil.core.store import Store
from mlvigil.core.store.duckdb import DuckDBStore

N = 3
CI = CarbonIntensity(100.0, "FRA", None, "configured")
# One faulty scenario per node (their GPU uuids differ by scenario), all over the same 120 s.
GPU_NODES = {
    "node-a": "xid_mixed",
    "node-b": "ecc_uncorrected",
    "node-c": "fall_off_bus",
    "node-d": "pcie_replay",
    "node-e": "thermal_slowdown",
    "node-f": "memory_repair",
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = DuckDBStore(tmp_path)
    yield s
    s.close()


def _ids(found: list[Finding]) -> dict[str, Finding]:
    by_id = {f.id: f for f in found}
    assert len(by_id) == len(found), "a detector reported one condition twice"
    return by_id


def _check_partition(whole: Detector, parts: list[Detector], store: Store, now: float) -> list[set[str]]:
    """The parts' findings are disjoint and together the whole's; returns each part's ids."""
    assert len({d.name for d in parts}) == N and whole.name not in {d.name for d in parts}
    expected = _ids(list(whole.evaluate(store, now)))
    per_part = [set(_ids(list(d.evaluate(store, now)))) for d in parts]
    union: set[str] = set()
    for ids in per_part:
        assert not union & ids, "two shards reported the same condition"
        union |= ids
    assert union == set(expected)
    assert sum(1 for ids in per_part if ids) >= 2, "the work did not spread over the shards"
    return per_part


def test_gpu_health_shards_partition_the_nodes(store: Store) -> None:
    now = 0.0
    for node, scenario in GPU_NODES.items():
        sim = Simulation.start(builtin_scenario(scenario), store, node=node)
        now = max(now, sim.run(120, 2.0))
    detectors = build_gpu(GpuConfig(shards=N), None)  # type: ignore[arg-type]  # the agent is off
    assert [d.name for d in detectors] == [f"gpu_health[{i}/{N}]" for i in range(N)]
    per_part = _check_partition(GpuHealthDetector(), detectors, store, now)
    whole = {f.id: f for f in GpuHealthDetector().evaluate(store, now)}
    assert {f.subject["host"] for f in whole.values()} == set(GPU_NODES), "a faulty node found nothing"
    # Each node's findings all come from the shard its name hashes to.
    for i, ids in enumerate(per_part):
        assert {whole[x].subject["host"] for x in ids} <= {h for h in GPU_NODES if shard_of(h, N) == i}


def _carbon_rows(store: Store) -> None:
    b = RecordBatch()
    for r in range(8):  # run r emits 200 g a step for 5 steps; budgets of 1 kg
        attrs = json.dumps(
            {"mlvigil.carbon.tracker_run": f"t{r}", "mlvigil.train.run_id": f"r{r}", "team": "research"}
        )
        for i in range(1, 6):
            for name, value in (
                ("mlvigil.carbon.energy", 1.0e6 * i),
                ("mlvigil.carbon.emissions", 200.0 * i),
            ):
                b.add("metric_points", ts=float(i), name=name, value=value, attributes=attrs, kind="sum")
    for i in range(400):
        b.add(
            "llm_calls",
            ts=1000.0 + i,
            service="chat",
            request_model="llama",
            input_tokens=300,
            output_tokens=200,
        )
    for t in (0.0, 1000.0, 1400.0):  # 13.9 g per 1M tokens
        b.add("metric_points", ts=t, hw_id="GPU-S", name="hw.energy", value=5e5 + 250.0 * t)
    store.append(b)


CARBON = CarbonConfig.model_validate(
    {
        "budgets": [
            {"name": "each-run", "run_id": "*", "kg_co2e": 0.5, "kwh": 1.0},
            {"name": "r3", "run_id": "r3", "kg_co2e": 0.1},
        ],
        "serving": [
            {
                "name": f"chat-{k}",
                "service": "chat",
                "g_per_1m_tokens": 10.0,
                "window": 400,
                "gpu_uuids": ["GPU-S"],
            }
            for k in range(6)
        ],
    }
)


def test_carbon_budget_shards_partition_budget_subjects(store: Store) -> None:
    _carbon_rows(store)
    whole_metrics, part_metrics = CarbonMetrics(), CarbonMetrics()
    whole = CarbonBudgetDetector(CARBON, CI, whole_metrics)
    parts: list[Detector] = [CarbonBudgetDetector(CARBON, CI, part_metrics, shard=s) for s in shards(N)]
    assert [d.name for d in parts] == [f"carbon_budgets[{i}/{N}]" for i in range(N)]
    per_part = _check_partition(whole, parts, store, 1400.0)
    assert sum(map(len, per_part)) >= 8 * 2 + 1  # each run over both limits, r3 over its own
    # Each shard publishes its own subjects; together they are the whole detector's metrics.
    assert dict(part_metrics.snapshot()) == dict(whole_metrics.snapshot())
    assert len(dict(whole_metrics.snapshot())[ENERGY]) == 8


def test_carbon_serving_shards_partition_serving_budgets(store: Store) -> None:
    _carbon_rows(store)
    whole_metrics, part_metrics = CarbonMetrics(), CarbonMetrics()
    whole = ServingCarbonDetector(CARBON, CI, whole_metrics)
    parts: list[Detector] = [ServingCarbonDetector(CARBON, CI, part_metrics, shard=s) for s in shards(N)]
    assert [d.name for d in parts] == [f"carbon_serving[{i}/{N}]" for i in range(N)]
    assert sum(map(len, _check_partition(whole, parts, store, 1400.0))) == 6
    assert dict(part_metrics.snapshot()) == dict(whole_metrics.snapshot())
