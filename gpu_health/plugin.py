"""The ``gpu`` section's plugin: the GPU health detector and, if enabled, the in-process agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlvigil.core.plugin import Command, Plugin

if TYPE_CHECKING:
    from gpu_health.config import GpuConfig
    from mlvigil.core.context import ServiceContext


def build(gpu: GpuConfig, ctx: ServiceContext) -> list[Any]:
    from gpu_health.agent import GpuAgentComponent
    from gpu_health.health import GpuHealthDetector
    from mlvigil.core.shard import shards

    out: list[Any] = []
    if gpu.detector:
        out.extend(GpuHealthDetector(gpu.rules, shard=shard) for shard in shards(gpu.shards))
    if gpu.enabled:
        out.append(GpuAgentComponent(gpu, ctx))
    return out


AGENT = Command(
    "agent",
    "per-node GPU agent: sample NVML, serve /metrics, ship OTLP metrics to a mlvigil server",
    "gpu_health.cli:add_cli",
)

PLUGIN = Plugin(
    name="gpu", section=("gpu",), config="gpu_health.config:GpuConfig", build=build, commands=(AGENT,)
)
