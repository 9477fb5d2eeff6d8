"""The ``gpu`` section's plugin: the GPU health detector and, if enabled, the in-process agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpu_health.agent import GpuAgentComponent
from gpu_health.config import GpuConfig
from gpu_health.health import GpuHealthDetector
from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from mlvigil.core.context import ServiceContext


def build(gpu: GpuConfig, ctx: ServiceContext) -> list[Any]:
    out: list[Any] = []
    if gpu.detector:
        out.append(GpuHealthDetector(gpu.rules))
    if gpu.enabled:
        out.append(GpuAgentComponent(gpu, ctx))
    return out


PLUGIN = Plugin(name="gpu", section=("gpu",), config=GpuConfig, build=build)
