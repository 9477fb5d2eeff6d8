"""Performance estimation without labels: CBPE and PAPE for classifiers, DLE for regression.

Each estimator is fitted on labelled reference rows and then estimates a window's metrics
from the model's scores (and features) alone, with a sampling band, the reference's range
and an alarm; see docs/estimation.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlvigil.core.lazy import lazy_exports

if TYPE_CHECKING:
    from detectors.estimation.base import Estimate, EstimationError, PerformanceEstimator, Sample
    from detectors.estimation.cbpe import CBPE
    from detectors.estimation.dle import DLE
    from detectors.estimation.pape import PAPE

__all__ = ["CBPE", "DLE", "PAPE", "Estimate", "EstimationError", "PerformanceEstimator", "Sample"]

# Imported on first use: the package's plugin descriptor stays light for ``mlvigil --help``.
__getattr__ = lazy_exports(
    __name__,
    {
        "Estimate": "detectors.estimation.base",
        "EstimationError": "detectors.estimation.base",
        "PerformanceEstimator": "detectors.estimation.base",
        "Sample": "detectors.estimation.base",
        "CBPE": "detectors.estimation.cbpe",
        "DLE": "detectors.estimation.dle",
        "PAPE": "detectors.estimation.pape",
    },
)
