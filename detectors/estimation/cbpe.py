"""CBPE: confidence-based performance estimation for classifiers.

Calibrate the model's scores on the labelled reference; then a window's expected
confusion matrix is the sum of its calibrated probabilities, and the expected accuracy,
precision, recall, F1 and ROC AUC follow without a single label. The sampling band is the
spread of the realised metric when labels are drawn from those probabilities. The method is
NannyML's (https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html);
it assumes P(y | score) is the same in the window as in the reference, which covariate
shift in regions the model is unsure about breaks: see PAPE for that case.

Examples
--------
>>> import numpy as np
>>> from detectors.estimation import CBPE, Sample
>>> rng = np.random.default_rng(0)
>>> score = rng.random(4000)
>>> label = (rng.random(4000) < score).astype(int)     # calibrated scores
>>> est = CBPE(["accuracy"]).fit(Sample(scores=score[:2000], labels=label[:2000]))
>>> window = Sample(scores=score[2000:3000])
>>> [round(e.value, 2) for e in est.estimate(window)]
[0.75]
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from detectors.estimation.base import BAND_LEVEL, EstimationError, PerformanceEstimator, Sample
from detectors.estimation.calibration import Calibrator, calibration_quality
from detectors.estimation.metrics import CLASSIFICATION_METRICS, classification_metric, expected_metric

#: Calibration worse than this (out-of-fold ECE on the reference) makes estimates unreliable.
MAX_ECE = 0.1


def _predicted(sample: Sample) -> np.ndarray:
    if sample.predictions is not None:
        return sample.predictions.astype(int)
    assert sample.scores is not None
    if sample.scores.ndim == 1:
        return (sample.scores >= 0.5).astype(int)
    return np.argmax(sample.scores, axis=1)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((labels.size, k))
    out[np.arange(labels.size), labels] = 1.0
    return out


class CBPE(PerformanceEstimator):
    """Confidence-based performance estimation (binary or multiclass).

    Parameters
    ----------
    metrics
        Any of accuracy, error_rate, precision, recall, f1, auc (macro averages for
        multiclass).
    threshold
        An estimate worse than the reference range by more than this is an alarm.
    max_ece
        Out-of-fold expected calibration error above which the fit is flagged unreliable.
    seed
        Seed of the sampling draws.

    References
    ----------
    NannyML, "Confidence-based Performance Estimation (CBPE)", NannyML documentation, 2022.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("accuracy",),
        threshold: float = 0.0,
        max_ece: float = MAX_ECE,
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(metrics) - set(CLASSIFICATION_METRICS))
        if unknown:
            raise EstimationError(
                f"CBPE cannot estimate {unknown}; known: {', '.join(CLASSIFICATION_METRICS)}"
            )
        super().__init__(metrics, threshold, seed)
        self.seed = seed
        self.max_ece = max_ece
        self.calibrator = Calibrator()
        self.calibration: dict[str, Any] = {}

    @property
    def calibration_ok(self) -> bool:
        return bool(self.calibration) and self.calibration["ece_calibrated"] <= self.max_ece

    def _check(self, sample: Sample) -> np.ndarray:
        if sample.scores is None:
            raise EstimationError("CBPE needs the model's scores (probabilities) for every row")
        scores = np.asarray(sample.scores, dtype=float)
        if not np.all(np.isfinite(scores)):
            raise EstimationError("scores must be finite probabilities; found NaN or infinity")
        if (
            self.reference is not None
            and self.reference.scores is not None
            and (
                scores.ndim != self.reference.scores.ndim
                or scores.shape[1:] != self.reference.scores.shape[1:]
            )
        ):
            raise EstimationError(
                f"scores of shape {scores.shape[1:] or '(n,)'} do not match the reference's "
                f"{self.reference.scores.shape[1:] or '(n,)'}"
            )
        return scores

    def _fit(self, reference: Sample) -> None:
        scores = self._check(reference)
        assert reference.labels is not None
        labels = reference.labels.astype(int)
        k = 2 if scores.ndim == 1 else scores.shape[1]
        if labels.min() < 0 or labels.max() >= k:
            raise EstimationError(f"labels must be class indices 0..{k - 1}")
        if len(np.unique(labels)) < 2:
            raise EstimationError("the reference has a single class: nothing to calibrate against")
        self.calibrator.fit(scores, labels, self._weights(reference))
        self.calibration = calibration_quality(scores, labels, _predicted(reference))
        self.calibration["max_ece"] = self.max_ece
        self.calibration["ok"] = self.calibration["ece_calibrated"] <= self.max_ece

    def _weights(self, reference: Sample) -> np.ndarray | None:
        return None

    def _calibrated(self, analysis: Sample, scores: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of the window's ``scores`` (already checked by ``_check``)."""
        return self.calibrator.predict(scores)

    def _estimate_window(self, analysis: Sample) -> dict[str, tuple[float, float, float, float]]:
        scores = self._check(analysis)
        prob = self._calibrated(analysis, scores)
        predicted = _predicted(analysis)
        # The band is the realised metric's sampling spread when each label is drawn from its
        # calibrated probability: closed forms (see metrics.classification_se), normal band.
        z = NormalDist().inv_cdf(0.5 + BAND_LEVEL / 2)
        out = {}
        for metric in self.metrics:
            value, se = expected_metric(metric, prob, predicted, scores)
            lo, hi = max(value - z * se, 0.0), min(value + z * se, 1.0)
            out[metric] = (value, lo, hi, se)
        return out

    def _realised(self, sample: Sample) -> dict[str, float]:
        assert sample.labels is not None and sample.scores is not None
        labels = sample.labels.astype(int)
        scores = np.asarray(sample.scores, dtype=float)
        y = labels[None].astype(float) if scores.ndim == 1 else _one_hot(labels, scores.shape[1])[None]
        predicted = _predicted(sample)
        return {m: float(classification_metric(m, y, predicted, scores, hard=True)[0]) for m in self.metrics}

    def describe(self) -> dict[str, Any]:
        return {"estimator": type(self).__name__.lower(), "calibration": self.calibration}
