"""Settings of an ``estimated_performance`` drift monitor (its ``estimation`` section).

```yaml
- name: fraud-estimated
  kind: estimated_performance
  model: fraud
  metrics: [accuracy, f1, auc]      # or [mae, rmse] for a regression model
  reference: {dataset: true}        # labelled rows: features, prediction / score, label
  window: {size: 1000}
  max_drop: 0.02                    # alarm: estimate this far beyond the reference range
  estimation: {method: auto}        # auto | cbpe | pape | dle; dle: shift_robust
```
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from detectors.estimation.metrics import CLASSIFICATION_METRICS, REGRESSION_METRICS
from mlvigil.core.config import Strict

EstimationMethod = Literal["auto", "cbpe", "pape", "dle"]


class EstimationConfig(Strict):
    """How an ``estimated_performance`` monitor estimates without labels."""

    #: auto: cbpe for classification metrics, dle for regression ones; pape: cbpe with the
    #: calibration reweighted to each window's features (covariate shift; needs features).
    method: EstimationMethod = "auto"
    #: dle only: reweight the loss model to each window's features (as pape does).
    shift_robust: bool = False
    #: cbpe / pape: out-of-fold expected calibration error of the reference above which
    #: the estimates are flagged unreliable and raise no Finding.
    max_ece: float = Field(default=0.1, gt=0, le=1)
    #: Significance of the per-feature shift test reported beside an alarm (Bonferroni).
    feature_alpha: float = Field(default=0.01, gt=0, lt=1)


def resolved_method(method: EstimationMethod, metrics: Sequence[str]) -> str:
    """The estimator a monitor runs; ValueError (what to change) when metrics and method disagree."""
    wanted = set(metrics)
    classification = wanted <= set(CLASSIFICATION_METRICS)
    regression = wanted <= set(REGRESSION_METRICS)
    if not (classification or regression):
        raise ValueError(
            f"metrics {sorted(wanted)} mix classification ({', '.join(CLASSIFICATION_METRICS)}) and "
            f"regression ({', '.join(REGRESSION_METRICS)}) ones; an estimated_performance monitor "
            "watches one model kind"
        )
    if method == "auto":
        return "cbpe" if classification else "dle"
    if (method == "dle") != regression:
        raise ValueError(f"estimation.method {method!r} does not estimate {sorted(wanted)}")
    return method


def check_installed() -> None:
    missing = [
        name
        for name, module in (("scikit-learn", "sklearn"), ("LightGBM", "lightgbm"))
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ValueError(
            f"kind estimated_performance needs {' and '.join(missing)}: pip install 'mlvigil[estimation]'"
        )
