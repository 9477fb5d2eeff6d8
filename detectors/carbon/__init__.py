"""Carbon accounting: energy and CO2e per run, model, namespace and team, against budgets.

Energy comes from jobs running codecarbon (``mlvigil_producer.codecarbon_output.MlvigilOutput``) and from
the GPUs mlvigil samples (``hw.energy``, attributed to the runs using each GPU); grid carbon
intensity comes from codecarbon's bundled data, offline. See docs/carbon.md.
Wiring: ``detectors.carbon.plugin.PLUGIN`` (section ``detectors.carbon``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Eager: the function ``forecast`` shares its module's name, and a submodule import would
# otherwise leave the module under that name. It is light (math only).
from detectors.carbon.forecast import Forecast, forecast
from mlvigil.core.lazy import lazy_exports

if TYPE_CHECKING:
    from detectors.carbon.budget import CarbonBudgetDetector
    from detectors.carbon.config import BudgetConfig, CarbonConfig, ServingBudgetConfig
    from detectors.carbon.intensity import CarbonIntensity, carbon_intensity
    from detectors.carbon.metrics import CarbonMetrics
    from detectors.carbon.serving import ServingCarbonDetector

__all__ = [
    "BudgetConfig",
    "CarbonBudgetDetector",
    "CarbonConfig",
    "CarbonIntensity",
    "CarbonMetrics",
    "Forecast",
    "ServingBudgetConfig",
    "ServingCarbonDetector",
    "carbon_intensity",
    "forecast",
]

# Imported on first use: the package's plugin descriptor stays light for ``mlvigil --help``.
__getattr__ = lazy_exports(
    __name__,
    {
        "CarbonBudgetDetector": "detectors.carbon.budget",
        "BudgetConfig": "detectors.carbon.config",
        "CarbonConfig": "detectors.carbon.config",
        "ServingBudgetConfig": "detectors.carbon.config",
        "CarbonIntensity": "detectors.carbon.intensity",
        "carbon_intensity": "detectors.carbon.intensity",
        "CarbonMetrics": "detectors.carbon.metrics",
        "ServingCarbonDetector": "detectors.carbon.serving",
    },
)
