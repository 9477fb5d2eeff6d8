"""Classification and regression metrics on hard labels, soft labels or many draws at once.

CBPE's trick is that a metric which is linear in the confusion matrix (accuracy,
precision, recall, F1) has an *expected* value obtained by putting calibrated
probabilities where the 0/1 labels would be. The same functions therefore give the
realised metric (labels), the expected metric (probabilities) and the distribution of the
realised metric under sampling (a matrix of simulated labels, one draw per row).
"""

from __future__ import annotations

import math

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "error_rate", "precision", "recall", "f1", "auc")
REGRESSION_METRICS = ("mae", "mse", "rmse")
HIGHER_IS_BETTER = {
    "accuracy": True,
    "error_rate": False,
    "precision": True,
    "recall": True,
    "f1": True,
    "auc": True,
    "mae": False,
    "mse": False,
    "rmse": False,
}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def soft_auc(score: np.ndarray, y: np.ndarray, hard: bool | None = None) -> np.ndarray:
    """ROC AUC of ``score`` against labels ``y`` of shape (m, n): 0/1 or probabilities.

    With probabilities it is the expected AUC over every (positive, negative) pair of
    distinct rows, ties counting one half; with 0/1 labels it is the ordinary AUC.
    ``hard`` says whether ``y`` is 0/1 (None: look).
    """
    y = np.atleast_2d(y)
    if hard or (hard is None and np.all((y == 0) | (y == 1))):
        # Hard labels (realised values, simulated draws): the rank-sum form, one product
        # for all draws, ties taking average ranks.
        from scipy.stats import rankdata

        n1 = y.sum(axis=1)
        n0 = y.shape[1] - n1
        return _ratio(y @ rankdata(score) - n1 * (n1 + 1) / 2, n1 * n0)
    # Ties are summed as groups below, so the sort need not be stable (quicksort is faster).
    order = np.argsort(score)
    s, ys = score[order], y[:, order]
    neg = 1.0 - ys
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    if starts.size == s.size:  # no ties (the usual case): no grouping needed
        neg_below = np.cumsum(neg, axis=1) - neg
        pairs = (ys * neg_below).sum(axis=1)
        total = ys.sum(axis=1) * neg.sum(axis=1) - (ys * neg).sum(axis=1)
        return _ratio(pairs, total)
    pos_g = np.add.reduceat(ys, starts, axis=1)
    neg_g = np.add.reduceat(neg, starts, axis=1)
    self_g = np.add.reduceat(ys * neg, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    pairs = (pos_g * neg_below).sum(axis=1) + 0.5 * (pos_g * neg_g - self_g).sum(axis=1)
    total = ys.sum(axis=1) * neg.sum(axis=1) - (ys * neg).sum(axis=1)
    return _ratio(pairs, total)


def binary_metric(
    metric: str, y: np.ndarray, predicted: np.ndarray, score: np.ndarray, hard: bool | None = None
) -> np.ndarray:
    """``metric`` for the positive class, one value per row of ``y`` (shape (m, n)).

    ``predicted`` is the model's 0/1 decision per column, ``score`` its score (for AUC).
    """
    y = np.atleast_2d(y)
    yhat = np.asarray(predicted, dtype=y.dtype if y.dtype.kind == "f" else float)
    if metric == "auc":
        return soft_auc(score, y, hard)
    # Every count from one product per draw: no (draws x rows) temporaries.
    tp = (y @ yhat).astype(float)
    positives = y.sum(axis=1, dtype=float)
    fp = yhat.sum() - tp
    fn = positives - tp
    if metric in ("accuracy", "error_rate"):
        n = y.shape[1]
        acc = (n - fp - fn) / n
        return acc if metric == "accuracy" else 1 - acc
    if metric == "precision":
        return _ratio(tp, tp + fp)
    if metric == "recall":
        return _ratio(tp, tp + fn)
    if metric == "f1":
        return _ratio(2 * tp, 2 * tp + fp + fn)
    raise ValueError(f"unknown classification metric {metric!r}; known: {', '.join(CLASSIFICATION_METRICS)}")


def classification_metric(
    metric: str, y: np.ndarray, predicted: np.ndarray, scores: np.ndarray, hard: bool | None = None
) -> np.ndarray:
    """``metric`` over draws of labels.

    Binary: ``y`` (m, n) of 0/1 or P(positive), ``scores`` (n,). Multiclass: ``y`` (m, n, k)
    of one-hot labels or class probabilities, ``predicted`` class indices (n,), ``scores``
    (n, k); precision, recall, F1 and AUC are macro averages over the classes (AUC one
    vs rest).
    """
    if scores.ndim == 1:
        return binary_metric(metric, y, predicted, scores, hard)
    y = y if y.ndim == 3 else y[None]
    k = scores.shape[1]
    if metric in ("accuracy", "error_rate"):
        acc = y[:, np.arange(predicted.size), predicted].mean(axis=1)
        return acc if metric == "accuracy" else 1 - acc
    per_class = [binary_metric(metric, y[:, :, c], predicted == c, scores[:, c], hard) for c in range(k)]
    stacked = np.vstack(per_class)
    with np.errstate(invalid="ignore"):
        return np.where(np.all(np.isnan(stacked), axis=0), np.nan, np.nanmean(stacked, axis=0))


def _binary_se(metric: str, q: np.ndarray, yhat: np.ndarray, value: float) -> float:
    """Standard error of the realised binary ``metric`` when each label is an independent
    Bernoulli(q): exact for the counts (Poisson-binomial variance), delta method for ratios,
    Hanley-McNeil for AUC with the expected class counts."""
    v = q * (1 - q)
    n = q.size
    if metric in ("accuracy", "error_rate"):
        return math.sqrt(float(v.sum())) / n
    tp, fn = float(q @ yhat), float(q @ (1 - yhat))
    var_tp, var_fn = float(v @ yhat), float(v @ (1 - yhat))
    predicted_pos = float(yhat.sum())
    if metric == "precision":
        return math.sqrt(var_tp) / predicted_pos if predicted_pos else math.nan
    if metric == "recall":
        d = tp + fn
        return math.sqrt(fn**2 * var_tp + tp**2 * var_fn) / d**2 if d else math.nan
    if metric == "f1":
        d = predicted_pos + tp + fn
        return 2 * math.sqrt((predicted_pos + fn) ** 2 * var_tp + tp**2 * var_fn) / d**2 if d else math.nan
    if metric == "auc":
        n1 = float(q.sum())
        n0 = n - n1
        if n1 < 1 or n0 < 1 or math.isnan(value):
            return math.nan
        q1, q2 = value / (2 - value), 2 * value * value / (1 + value)
        var = (value * (1 - value) + (n1 - 1) * (q1 - value**2) + (n0 - 1) * (q2 - value**2)) / (n1 * n0)
        return math.sqrt(max(var, 0.0))
    raise ValueError(f"unknown classification metric {metric!r}; known: {', '.join(CLASSIFICATION_METRICS)}")


def classification_se(metric: str, prob: np.ndarray, predicted: np.ndarray, value: float) -> float:
    """Sampling standard error of the realised ``metric`` of a window whose labels are drawn
    from the calibrated probabilities ``prob`` ((n,) binary, (n, k) multiclass). Macro
    averages take the classes as independent."""
    if prob.ndim == 1:
        return _binary_se(metric, prob, predicted.astype(float), value)
    if metric in ("accuracy", "error_rate"):
        c = prob[np.arange(predicted.size), predicted]
        return math.sqrt(float((c * (1 - c)).sum())) / predicted.size
    return expected_metric(metric, prob, predicted, prob)[1]


def expected_metric(
    metric: str, prob: np.ndarray, predicted: np.ndarray, scores: np.ndarray
) -> tuple[float, float]:
    """The expected ``metric`` of a window whose labels are drawn from the calibrated
    probabilities ``prob``, and its sampling standard error (see ``classification_se``).

    Multiclass macro metrics compute each class's value once and reuse it for the error:
    a window's AUC costs one sort per class, not two."""
    if prob.ndim == 1 or metric in ("accuracy", "error_rate"):
        value = float(classification_metric(metric, prob[None], predicted, scores, hard=False)[0])
        return value, classification_se(metric, prob, predicted, value)
    values, ses = [], []
    for c in range(prob.shape[1]):
        yhat = (predicted == c).astype(float)
        v = float(binary_metric(metric, prob[None, :, c], yhat, scores[:, c], hard=False)[0])
        values.append(v)
        ses.append(_binary_se(metric, prob[:, c], yhat, v))
    vals, errs = np.asarray(values), np.asarray(ses)
    vals, errs = vals[~np.isnan(vals)], errs[~np.isnan(errs)]
    value = float(vals.mean()) if vals.size else math.nan
    se = float(math.sqrt(float((errs**2).sum())) / errs.size) if errs.size else math.nan
    return value, se


def regression_metric(metric: str, abs_error: np.ndarray) -> float:
    """MAE, MSE or RMSE from absolute errors."""
    if metric == "mae":
        return float(np.mean(abs_error))
    mse = float(np.mean(abs_error**2))
    if metric == "mse":
        return mse
    if metric == "rmse":
        return float(np.sqrt(mse))
    raise ValueError(f"unknown regression metric {metric!r}; known: {', '.join(REGRESSION_METRICS)}")
