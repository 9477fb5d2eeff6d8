"""Performance drift once labels arrive: metric per window vs the reference, with a test.

A metric drifts when it is worse than the reference by more than ``max_drop`` (absolute
for rates and AUC, relative for MAE/RMSE) *and* a one-sided test says the loss is not
chance: two proportions for accuracy/error rate, Welch's t on absolute or squared errors
for MAE/RMSE, Hanley-McNeil standard errors for AUC, bootstrap standard errors for F1,
precision and recall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

HIGHER_IS_BETTER = {
    "accuracy": True,
    "error_rate": False,
    "f1": True,
    "precision": True,
    "recall": True,
    "auc": True,
    "mae": False,
    "rmse": False,
}
_POSITIVE = ("1", "1.0", "true", "yes", "positive", "pos")


@dataclass
class MetricDrift:
    metric: str
    reference: float | None
    current: float | None
    p_value: float | None
    drifted: bool
    n_reference: int
    n_current: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).lower()


def _as_float(values: Sequence[Any]) -> np.ndarray:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            out.append(np.nan)
    return np.asarray(out)


def _f1_parts(pred: np.ndarray, label: np.ndarray, positive: str) -> tuple[float, float, float]:
    tp = float(np.sum((pred == positive) & (label == positive)))
    fp = float(np.sum((pred == positive) & (label != positive)))
    fn = float(np.sum((pred != positive) & (label == positive)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


def _auc(score: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """AUC and its Hanley-McNeil standard error."""
    from scipy.stats import rankdata

    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return math.nan, math.nan
    ranks = rankdata(score)
    auc = (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc * auc) + (n0 - 1) * (q2 - auc * auc)) / (n1 * n0)
    return float(auc), math.sqrt(max(var, 1e-12))


class Evaluation:
    """Metric values and their sampling spread on one labelled sample."""

    def __init__(
        self,
        predictions: Sequence[Any],
        labels: Sequence[Any],
        scores: Sequence[Any] | None = None,
        positive: str | None = None,
        seed: int = 0,
    ) -> None:
        self.pred = np.array([_label(p) for p in predictions], dtype=object)
        self.label = np.array([_label(y) for y in labels], dtype=object)
        self.pred_num, self.label_num = _as_float(predictions), _as_float(labels)
        self.score = _as_float(scores) if scores is not None else None
        classes = set(self.label.tolist())
        self.positive = (
            positive
            or next((c for c in _POSITIVE if c in classes), None)
            or (min(classes, key=lambda c: int(np.sum(self.label == c))) if classes else "1")
        )
        self.n = int(self.label.size)
        self.rng = np.random.default_rng(seed)

    def value(self, metric: str) -> tuple[float, float]:
        """(value, standard error)."""
        n = max(self.n, 1)
        if metric in ("accuracy", "error_rate"):
            acc = float(np.mean(self.pred == self.label)) if self.n else math.nan
            v = acc if metric == "accuracy" else 1 - acc
            return v, math.sqrt(max(v * (1 - v), 1e-12) / n)
        if metric in ("mae", "rmse"):
            err = self.pred_num - self.label_num
            err = err[~np.isnan(err)]
            if not err.size:
                return math.nan, math.nan
            per = np.abs(err) if metric == "mae" else err * err
            mean, se = (
                float(per.mean()),
                float(per.std(ddof=1) / math.sqrt(per.size)) if per.size > 1 else 0.0,
            )
            if metric == "rmse":
                return math.sqrt(mean), se / (2 * math.sqrt(mean)) if mean > 0 else 0.0
            return mean, se
        if metric == "auc":
            if self.score is None:
                return math.nan, math.nan
            ok = ~np.isnan(self.score)
            return _auc(self.score[ok], (self.label == self.positive)[ok])
        part = {"f1": 0, "precision": 1, "recall": 2}[metric]
        v = _f1_parts(self.pred, self.label, self.positive)[part]
        boots = []
        for _ in range(100):
            idx = self.rng.integers(0, n, n)
            boots.append(_f1_parts(self.pred[idx], self.label[idx], self.positive)[part])
        return v, float(np.std(boots, ddof=1))


def compare_performance(
    reference: Evaluation, current: Evaluation, metrics: Sequence[str], alpha: float, max_drop: float
) -> list[MetricDrift]:
    out = []
    for metric in metrics:
        ref_v, ref_se = reference.value(metric)
        cur_v, cur_se = current.value(metric)
        if math.isnan(ref_v) or math.isnan(cur_v):
            out.append(MetricDrift(metric, None, None, None, False, reference.n, current.n))
            continue
        worse = (ref_v - cur_v) if HIGHER_IS_BETTER[metric] else (cur_v - ref_v)
        se = math.sqrt(ref_se**2 + cur_se**2)
        p = float(norm.sf(worse / se)) if se > 0 else (0.0 if worse > 0 else 1.0)
        tolerance = max_drop * abs(ref_v) if metric in ("mae", "rmse") else max_drop
        out.append(
            MetricDrift(
                metric, ref_v, cur_v, p, bool(worse > tolerance and p <= alpha), reference.n, current.n
            )
        )
    return out
