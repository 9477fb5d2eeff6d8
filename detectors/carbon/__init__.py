"""Carbon accounting: energy and CO2e per run, model, namespace and team, against budgets.

Energy comes from jobs running codecarbon (``mlvigil_producer.codecarbon_output.MlvigilOutput``) and from
the GPUs mlvigil samples (``hw.energy``, attributed to the runs using each GPU); grid carbon
intensity comes from codecarbon's bundled data, offline. See docs/carbon.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from detectors.base import Detector
from detectors.carbon.budget import CarbonBudgetDetector
from detectors.carbon.config import BudgetConfig, CarbonConfig, ServingBudgetConfig
from detectors.carbon.forecast import Forecast, forecast
from detectors.carbon.intensity import CarbonIntensity, carbon_intensity
from detectors.carbon.metrics import CarbonMetrics
from detectors.carbon.serving import ServingCarbonDetector

if TYPE_CHECKING:
    from mlvigil.context import ServiceContext

__all__ = [
    "BudgetConfig",
    "CarbonBudgetDetector",
    "CarbonConfig",
    "CarbonIntensity",
    "CarbonMetrics",
    "Forecast",
    "ServingBudgetConfig",
    "ServingCarbonDetector",
    "build",
    "carbon_intensity",
    "forecast",
]


def build(cfg: CarbonConfig | dict[str, Any], ctx: ServiceContext) -> list[Detector]:
    """The carbon detectors for section ``detectors.carbon``; metrics on ctx.telemetry.registry.

    The budget detector when budgets are configured (budgets without limits are tracked only:
    they export the per-subject energy and emissions counters); the serving detector when
    serving budgets are. An unknown country code raises ``UnknownLocation`` (a ValueError).
    """
    config = cfg if isinstance(cfg, CarbonConfig) else CarbonConfig.model_validate(cfg)
    if not config.budgets and not config.serving:
        return []  # nothing configured: skip loading codecarbon's data
    intensity = carbon_intensity(config.country_iso_code, config.region, config.carbon_intensity_g_per_kwh)
    metrics = CarbonMetrics(ctx.telemetry.registry)
    detectors: list[Detector] = [CarbonBudgetDetector(config, intensity, metrics)]
    if config.serving:
        detectors.append(ServingCarbonDetector(config, intensity, metrics))
    return detectors
