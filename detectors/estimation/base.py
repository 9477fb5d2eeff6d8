"""The common shape of a performance estimator: fit on labelled reference data, then
estimate each analysis window's metrics without labels, with a sampling band, the
reference's range and an alarm."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import numpy as np

from detectors.estimation.metrics import HIGHER_IS_BETTER

#: Draws of the window's labels (or bootstrap resamples of the reference) per band / range.
DRAWS = 200
#: The reference range is the mean of the metric over reference windows ± this many
#: standard deviations (NannyML's default thresholds).
RANGE_SD = 3.0
#: Confidence of the sampling band.
BAND_LEVEL = 0.95


_CONTROLLER: Any = None


def one_thread() -> Any:
    """A context in which scikit-learn's models run on one thread: they are small, and
    OpenMP threads contending with the service's own (or other processes') work made fits
    20x slower on a loaded two-core host."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        # Finding the thread pools reads /proc/self/maps: once, not per call.
        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1)


class EstimationError(ValueError):
    """The estimator cannot be fitted or applied (what is wrong, and what to do)."""


@dataclass
class Sample:
    """Rows of one model's traffic.

    Parameters
    ----------
    scores
        Classification: P(positive) (n,) for binary, class probabilities (n, k) for
        multiclass. Regression: unused.
    predictions
        The model's output: class index (0/1 for binary) or the regression prediction (n,).
        Classification default: score >= 0.5 (binary) or the argmax.
    labels
        Ground truth when known (reference), else None.
    features
        Numeric feature matrix (n, d) (NaN for missing), for DLE and the shift-robust
        estimators.
    """

    scores: np.ndarray | None = None
    predictions: np.ndarray | None = None
    labels: np.ndarray | None = None
    features: np.ndarray | None = None

    def __len__(self) -> int:
        for a in (self.predictions, self.scores, self.labels, self.features):
            if a is not None:
                return int(a.shape[0])
        return 0

    def take(self, idx: np.ndarray | slice) -> Sample:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Sample(pick(self.scores), pick(self.predictions), pick(self.labels), pick(self.features))


@dataclass
class Estimate:
    """One metric of one window: the estimate, its sampling band and the verdict."""

    metric: str
    value: float
    lower: float
    upper: float
    standard_error: float
    reference_value: float
    reference_lower: float
    reference_upper: float
    alarm: bool
    realised: float | None = None
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def alarm_for(metric: str, value: float, low: float, high: float, reference: float, threshold: float) -> bool:
    """An estimate worse than the reference's range by more than ``threshold``
    (absolute for rates and AUC, relative to the reference value for errors)."""
    if math.isnan(value) or math.isnan(low) or math.isnan(high):
        return False
    if HIGHER_IS_BETTER[metric]:
        return value < low - threshold
    return value > high + threshold * abs(reference)


class PerformanceEstimator(ABC):
    """Base class: ``fit`` on labelled reference rows, ``estimate`` on unlabelled windows.

    Subclasses implement ``_fit``, ``_estimate_window`` (value, band, standard error per
    metric) and ``_realised`` (the metric from labels), which the base class uses for the
    reference range, the alarm and the realised value beside each estimate.
    """

    metrics: tuple[str, ...] = ()

    def __init__(self, metrics: Sequence[str], threshold: float = 0.0, seed: int = 0) -> None:
        self.metrics = tuple(metrics)
        self.threshold = threshold
        self.rng = np.random.default_rng(seed)
        self.reference: Sample | None = None
        self._ranges: dict[int, dict[str, tuple[float, float, float]]] = {}

    # -- what subclasses provide ----------------------------------------------------------------
    @abstractmethod
    def _fit(self, reference: Sample) -> None: ...

    @abstractmethod
    def _estimate_window(self, analysis: Sample) -> dict[str, tuple[float, float, float, float]]:
        """{metric: (estimate, band lower, band upper, standard error)}."""

    @abstractmethod
    def _realised(self, sample: Sample) -> dict[str, float]: ...

    # -- the public face ------------------------------------------------------------------------
    def fit(self, reference: Sample, window_size: int | None = None) -> Self:
        """Fit on labelled ``reference`` rows; with ``window_size``, also the reference
        range for windows of that many rows (else on the first window of each size)."""
        if reference.labels is None:
            raise EstimationError("the reference needs labels: fit on a labelled sample")
        self.reference = reference
        self._ranges = {}
        self._fit(reference)
        if window_size is not None:
            self.reference_range(window_size)
        return self

    def reference_range(self, n: int) -> dict[str, tuple[float, float, float]]:
        """{metric: (reference value, range low, range high)} for windows of ``n`` rows:
        the metric over ``DRAWS`` bootstrap windows of the reference, mean ± 3 sd."""
        if self.reference is None:
            raise EstimationError("fit the estimator first")
        # Windows of similar size share a range (sizes bucketed to 2 significant digits).
        key = int(float(f"{n:.2g}"))
        if key not in self._ranges:
            m = len(self.reference)
            full = self._realised(self.reference)
            boots: dict[str, list[float]] = {k: [] for k in self.metrics}
            for _ in range(DRAWS):
                got = self._realised(self.reference.take(self.rng.integers(0, m, max(key, 2))))
                for k in self.metrics:
                    boots[k].append(got[k])
            out = {}
            for k in self.metrics:
                vals = np.asarray(boots[k], dtype=float)
                vals = vals[~np.isnan(vals)]
                sd = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
                mean = float(vals.mean()) if vals.size else math.nan
                out[k] = (full[k], mean - RANGE_SD * sd, mean + RANGE_SD * sd)
            self._ranges[key] = out
        return self._ranges[key]

    def realised(self, sample: Sample) -> dict[str, float]:
        """Each metric's realised value on labelled rows."""
        if sample.labels is None:
            raise EstimationError("realised metrics need labels")
        return self._realised(sample)

    def estimate(self, analysis: Sample) -> list[Estimate]:
        """Each metric's estimate for one window; the realised value too when it has labels."""
        if self.reference is None:
            raise EstimationError("fit the estimator first")
        n = len(analysis)
        if n < 2:
            raise EstimationError(f"a window needs at least 2 rows, got {n}")
        values = self._estimate_window(analysis)
        ranges = self.reference_range(n)
        realised = self._realised(analysis) if analysis.labels is not None else {}
        out = []
        for k in self.metrics:
            v, lo, hi, se = values[k]
            ref, rlo, rhi = ranges[k]
            out.append(
                Estimate(
                    metric=k,
                    value=v,
                    lower=lo,
                    upper=hi,
                    standard_error=se,
                    reference_value=ref,
                    reference_lower=rlo,
                    reference_upper=rhi,
                    alarm=alarm_for(k, v, rlo, rhi, ref, self.threshold),
                    realised=realised.get(k),
                    n=n,
                )
            )
        return out

    def describe(self) -> dict[str, Any]:
        """What was fitted and how well (calibration, loss model quality)."""
        return {}
