"""Synthetic synchronous multi-rank training runs, for tests, benchmarks and demos.

Each rank's compute time is lognormal around ``step_time`` with ``jitter`` (coefficient of
variation), with rare heavy-tailed blips (garbage collection, a slow batch). Training is
synchronous: every rank waits in the all-reduce for the slowest, so a rank's
``comm_s`` is the collective plus its wait, and every rank's step takes the same wall time.
Optionally one rank slows by ``slow_factor`` from ``slow_from`` (a throttling GPU), and the
loss turns NaN at ``nan_at``. ``gpu_points`` writes the matching GPU agent metrics.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from mlvigil.core.records import RecordBatch


@dataclass
class RunSpec:
    run_id: str = "run-1"
    world_size: int = 8
    steps: int = 300
    step_time: float = 0.5
    jitter: float = 0.03
    blip_prob: float = 0.005
    comm_time: float = 0.05
    data_wait: float = 0.01
    tokens_per_rank: float = 32768.0
    start_ts: float = 1.7e9
    slow_rank: int | None = None
    slow_from: int | None = None
    slow_factor: float = 1.15
    nan_at: int | None = None
    seed: int = 0

    def gpu_uuid(self, rank: int) -> str:
        return f"GPU-{self.run_id}-{rank:04d}"

    def host(self, rank: int) -> str:
        return f"node-{rank // 4}"


def simulate(spec: RunSpec) -> list[dict[str, Any]]:
    """Rows of ``training_steps`` for the run, in step order."""
    rng = random.Random(spec.seed)
    sigma = math.sqrt(math.log1p(spec.jitter**2))
    rows: list[dict[str, Any]] = []
    ts = spec.start_ts
    for step in range(spec.steps):
        compute = []
        for rank in range(spec.world_size):
            c = spec.step_time * rng.lognormvariate(-sigma * sigma / 2, sigma)
            if rng.random() < spec.blip_prob:
                c *= rng.uniform(1.3, 2.5)
            if rank == spec.slow_rank and spec.slow_from is not None and step >= spec.slow_from:
                c *= spec.slow_factor
            compute.append(c)
        wall = max(compute) + spec.comm_time + spec.data_wait
        loss = 2.5 * math.exp(-step / 400.0) + 1.2 + rng.gauss(0.0, 0.02)
        for rank in range(spec.world_size):
            rank_loss = loss + rng.gauss(0.0, 0.01)
            if spec.nan_at is not None and step >= spec.nan_at:
                rank_loss = math.nan
            rows.append(
                {
                    "ts": ts,
                    "service": "trainer",
                    "run_id": spec.run_id,
                    "step": step,
                    "rank": rank,
                    "world_size": spec.world_size,
                    "host": spec.host(rank),
                    "k8s_pod": f"{spec.run_id}-worker-{rank}",
                    "gpu_uuid": spec.gpu_uuid(rank),
                    "step_time_s": wall,
                    "loss": rank_loss,
                    "grad_norm": abs(rng.gauss(1.0, 0.1)),
                    "learning_rate": 3e-4,
                    "samples": 8.0,
                    "tokens": spec.tokens_per_rank,
                    "data_wait_s": spec.data_wait,
                    "forward_s": compute[rank] / 3,
                    "backward_s": 2 * compute[rank] / 3,
                    "optimizer_s": 0.0,
                    "comm_s": wall - compute[rank] - spec.data_wait,
                    "checkpoint_s": 0.0,
                }
            )
        ts += wall
    return rows


def gpu_points(
    spec: RunSpec,
    rank: int,
    *,
    from_ts: float,
    until_ts: float,
    throttle_from: float | None,
    reason: str = "hw_slowdown",
    interval: float = 5.0,
) -> list[dict[str, Any]]:
    """``metric_points`` rows of the GPU agent for one rank's GPU: clock events, SM clocks
    and PCIe link, throttling with ``reason`` (SM clock at 75 % of max) from ``throttle_from``."""
    rows: list[dict[str, Any]] = []
    uuid, host = spec.gpu_uuid(rank), spec.host(rank)
    t = from_ts
    while t < until_ts:
        throttled = throttle_from is not None and t >= throttle_from
        common = {
            "ts": t,
            "service": "mlvigil-agent",
            "host": host,
            "hw_id": uuid,
            "kind": "gauge",
            "count": None,
            "monotonic": None,
        }
        for r in ("hw_slowdown", "sw_power_cap", "gpu_idle"):
            rows.append(
                {
                    **common,
                    "name": "mlvigil.gpu.clock_event.active",
                    "unit": "1",
                    "value": 1.0 if throttled and r == reason else 0.0,
                    "attributes": f'{{"reason":"{r}"}}',
                }
            )
        rows.append(
            {
                **common,
                "name": "mlvigil.gpu.clock.sm",
                "unit": "MHz",
                "value": 1485.0 if throttled else 1980.0,
                "attributes": None,
            }
        )
        rows.append(
            {**common, "name": "mlvigil.gpu.clock.sm.max", "unit": "MHz", "value": 1980.0, "attributes": None}
        )
        rows.append(
            {
                **common,
                "name": "mlvigil.gpu.pcie.link.generation",
                "unit": "1",
                "value": 5.0,
                "attributes": None,
            }
        )
        rows.append(
            {
                **common,
                "name": "mlvigil.gpu.pcie.link.generation.max",
                "unit": "1",
                "value": 5.0,
                "attributes": None,
            }
        )
        t += interval
    return rows


def to_batch(table: str, rows: list[dict[str, Any]]) -> RecordBatch:
    batch = RecordBatch()
    for row in rows:
        batch.add(table, **row)
    return batch
