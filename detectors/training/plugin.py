"""The ``detectors.training`` section's plugin: the enabled training detectors, with their gauges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from detectors.training.config import TrainingConfig
    from mlvigil.core.context import ServiceContext
    from mlvigil.core.detector import Detector


def build(config: TrainingConfig, ctx: ServiceContext) -> list[Detector]:
    from detectors.training import build_detectors
    from detectors.training.metrics import TrainingMetrics

    return build_detectors(config, TrainingMetrics(ctx.telemetry.registry))


PLUGIN = Plugin(
    name="training",
    section=("detectors", "training"),
    config="detectors.training.config:TrainingConfig",
    build=build,
)
