"""Performance estimation without labels: CBPE and PAPE for classifiers, DLE for regression.

Each estimator is fitted on labelled reference rows and then estimates a window's metrics
from the model's scores (and features) alone, with a sampling band, the reference's range
and an alarm; see docs/estimation.md.
"""

from detectors.estimation.base import Estimate, EstimationError, PerformanceEstimator, Sample
from detectors.estimation.cbpe import CBPE
from detectors.estimation.dle import DLE
from detectors.estimation.pape import PAPE

__all__ = ["CBPE", "DLE", "PAPE", "Estimate", "EstimationError", "PerformanceEstimator", "Sample"]
