"""GPU health: NVML sampling agent (real and scripted fake backends) and the GPU health rules.

- ``gpu_health.backend``: the backend interface (one method per NVML field group).
- ``gpu_health.nvml``: the real backend on nvidia-ml-py; ``gpu_health.fake``: scenario-driven fake.
- ``gpu_health.sampler``: one sampling pass -> metric points (names in ``gpu_health.names``).
- ``gpu_health.agent``: ``mlvigil agent`` and the in-process agent component.
- ``gpu_health.health``: the server-side Detector running the rules in ``gpu_health.rules``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.base import Detector
    from gpu_health.agent import GpuAgentComponent
    from gpu_health.config import GpuConfig
    from mlvigil.context import ServiceContext


def build(cfg: GpuConfig | dict[str, Any] | None, ctx: ServiceContext) -> list[Detector | GpuAgentComponent]:
    """The ``gpu`` section's parts for ``mlvigil serve``: the health detector and, if enabled, the agent."""
    from gpu_health.agent import build as build_parts

    return build_parts(cfg, ctx)
