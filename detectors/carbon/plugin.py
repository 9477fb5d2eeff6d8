"""The ``detectors.carbon`` section's plugin: the carbon detectors, metrics on the service's registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from detectors.carbon.config import CarbonConfig
    from mlvigil.core.context import ServiceContext
    from mlvigil.core.detector import Detector


def build(config: CarbonConfig, ctx: ServiceContext) -> list[Detector]:
    """The budget detector when budgets are configured (budgets without limits are tracked only:
    they export the per-subject energy and emissions counters); the serving detector when
    serving budgets are. An unknown country code raises ``UnknownLocation`` (a ValueError).
    """
    from detectors.carbon.budget import CarbonBudgetDetector
    from detectors.carbon.intensity import carbon_intensity
    from detectors.carbon.metrics import CarbonMetrics
    from detectors.carbon.serving import ServingCarbonDetector
    from mlvigil.core.shard import shards

    if not config.budgets and not config.serving:
        return []  # nothing configured: skip loading codecarbon's data
    intensity = carbon_intensity(config.country_iso_code, config.region, config.carbon_intensity_g_per_kwh)
    metrics = CarbonMetrics(ctx.telemetry.registry)
    parts = shards(config.shards)
    detectors: list[Detector] = [CarbonBudgetDetector(config, intensity, metrics, shard=s) for s in parts]
    if config.serving:
        detectors.extend(ServingCarbonDetector(config, intensity, metrics, shard=s) for s in parts)
    return detectors


PLUGIN = Plugin(
    name="carbon", section=("detectors", "carbon"), config="detectors.carbon.config:CarbonConfig", build=build
)
