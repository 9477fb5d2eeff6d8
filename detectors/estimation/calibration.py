"""Calibration of classifier scores on the labelled reference, and its quality.

Isotonic regression per class (one vs rest, rows renormalised for multiclass): monotone,
so it never reorders scores, and free of a parametric shape, so it fixes the S-curves and
plateaus that real models' scores have. Quality is the expected calibration error (ECE) of
probabilities calibrated out of fold (5 folds), so a reference too small or too coarse to
calibrate on shows up as a large ECE instead of a perfect in-sample fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Bins of the expected calibration error.
ECE_BINS = 10
FOLDS = 5


def expected_calibration_error(prob: np.ndarray, labels: np.ndarray, predicted: np.ndarray) -> float:
    """Top-label ECE: |accuracy - confidence| of the predicted class, averaged over
    equal-width confidence bins weighted by their rows. ``prob`` (n,) is P(positive) for
    binary, (n, k) class probabilities for multiclass."""
    if prob.ndim == 1:
        conf = np.where(predicted == 1, prob, 1 - prob)
    else:
        conf = prob[np.arange(prob.shape[0]), predicted]
    correct = (predicted == labels).astype(float)
    bins = np.minimum((conf * ECE_BINS).astype(int), ECE_BINS - 1)
    total = 0.0
    for b in np.unique(bins):
        sel = bins == b
        total += sel.sum() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total / max(len(conf), 1))


class Calibrator:
    """Isotonic calibration of binary (n,) or multiclass (n, k) scores."""

    def __init__(self) -> None:
        self._models: list[Any] = []

    def fit(self, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> Calibrator:
        from sklearn.isotonic import IsotonicRegression

        columns = [scores] if scores.ndim == 1 else [scores[:, c] for c in range(scores.shape[1])]
        targets = [labels == 1] if scores.ndim == 1 else [labels == c for c in range(scores.shape[1])]
        self._models = [
            IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
                s, t.astype(float), sample_weight=weights
            )
            for s, t in zip(columns, targets, strict=True)
        ]
        return self

    @staticmethod
    def _curve(model: Any, x: np.ndarray) -> np.ndarray:
        # IsotonicRegression.predict with out_of_bounds="clip" is this interpolation; calling
        # it directly skips input validation that cost more than the work per window.
        return np.interp(x, model.X_thresholds_, model.y_thresholds_)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        if scores.ndim == 1:
            return np.clip(self._curve(self._models[0], scores), 0.0, 1.0)
        p = np.column_stack([self._curve(m, scores[:, c]) for c, m in enumerate(self._models)])
        total = p.sum(axis=1, keepdims=True)
        # A row every per-class curve puts at 0 keeps the model's own probabilities.
        return np.where(total > 0, p / np.where(total > 0, total, 1.0), scores)


def calibration_quality(scores: np.ndarray, labels: np.ndarray, predicted: np.ndarray, seed: int = 0) -> dict:
    """ECE of the raw scores and of scores calibrated out of fold."""
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    fold = rng.permutation(n) % FOLDS
    out_of_fold = np.empty_like(scores, dtype=float)
    for f in range(FOLDS):
        test = fold == f
        out_of_fold[test] = Calibrator().fit(scores[~test], labels[~test]).predict(scores[test])
    raw = np.clip(scores, 0.0, 1.0)
    if raw.ndim == 2:
        raw = raw / np.maximum(raw.sum(axis=1, keepdims=True), 1e-12)
    return {
        "ece_raw": expected_calibration_error(raw, labels, predicted),
        "ece_calibrated": expected_calibration_error(out_of_fold, labels, predicted),
        "n_reference": int(n),
    }
