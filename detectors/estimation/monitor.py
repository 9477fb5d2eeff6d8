"""The ``estimated_performance`` drift monitor's work: labelled reference columns in, an
estimator fitted; each window's unlabelled columns in, estimates, alarms and a Finding out.

Column roles, in a reference file or posted dataset and in inference rows alike:
``label`` (reference; in windows joined from ``POST /api/v1/labels`` when it arrived),
``prediction`` (class label, number, or a probability vector ``[p0, p1, ...]``), ``score``
(binary: P(positive class)), ``proba_0``, ``proba_1``, ... (class probabilities, for
tables that cannot hold vectors); every other column is a feature.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from detectors.estimation.base import Estimate, EstimationError, PerformanceEstimator, Sample
from detectors.estimation.cbpe import CBPE
from detectors.estimation.config import EstimationConfig, resolved_method
from detectors.estimation.dle import DLE
from detectors.estimation.pape import PAPE
from mlvigil.core.findings import Finding, Severity

ROLES = ("label", "prediction", "score", "ts", "request_id", "service", "model", "model_version")
_POSITIVE = ("1", "true", "yes", "positive", "pos")
#: Most classes a multiclass model may have here (a calibration curve per class).
MAX_CLASSES = 100


def _loads(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _text(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).lower()


def _is_probabilities(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= 2 and all(isinstance(x, int | float) for x in v)


def _class_index(v: Any, k: int) -> int | None:
    """A label or predicted class as an index: 0..k-1, ``class_<i>``, or (binary) a
    positive/negative word."""
    v = _loads(v)
    if v is None:
        return None
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    t = _text(v)
    if t.startswith("class_"):
        t = t[6:]
    if t.lstrip("-").isdigit():
        i = int(t)
        return i if 0 <= i < k else None
    if k == 2:
        return 1 if t in _POSITIVE else 0
    return None


class FeatureEncoder:
    """Feature columns as a float matrix: numbers as they are, other values as codes of
    the reference's categories (unseen ones and missing values: NaN)."""

    def __init__(self, columns: dict[str, Sequence[Any]], features: Sequence[str] | None) -> None:
        names = [
            k
            for k in columns
            if k not in ROLES and not k.startswith("proba_") and (features is None or k in features)
        ]
        self.names = sorted(names)
        self.categories: dict[str, dict[str, int]] = {}
        for name in self.names:
            values = [v for v in columns[name] if v is not None and not isinstance(v, float | int)]
            if values:
                self.categories[name] = {c: i for i, c in enumerate(sorted({str(v) for v in values}))}

    def transform(self, columns: dict[str, Sequence[Any]], n: int) -> np.ndarray:
        out = np.full((n, len(self.names)), np.nan)
        for j, name in enumerate(self.names):
            col = columns.get(name)
            if col is None:
                continue
            cats = self.categories.get(name)
            for i, v in enumerate(col):
                if v is None or isinstance(v, bool):
                    if isinstance(v, bool) and cats is not None:
                        out[i, j] = cats.get(str(v), np.nan)
                    continue
                if cats is not None:
                    out[i, j] = cats.get(str(v), np.nan)
                elif isinstance(v, int | float):
                    out[i, j] = float(v)
        return out


class EstimatedPerformance:
    """Fit on a labelled reference (columns), evaluate unlabelled windows (columns).

    Parameters
    ----------
    metrics
        Metric names (classification or regression ones).
    estimation
        The monitor's ``estimation`` section.
    threshold
        The monitor's ``max_drop``.
    features
        Feature columns to use (default: every non-role column of the reference).
    """

    def __init__(
        self,
        metrics: Sequence[str],
        estimation: EstimationConfig,
        threshold: float,
        features: Sequence[str] | None = None,
    ) -> None:
        self.metrics = list(metrics)
        self.config = estimation
        self.method = resolved_method(estimation.method, metrics)
        self.features = features
        self.estimator: PerformanceEstimator
        if self.method == "dle":
            self.estimator = DLE(metrics, threshold, shift_robust=estimation.shift_robust)
        elif self.method == "pape":
            self.estimator = PAPE(metrics, threshold, max_ece=estimation.max_ece)
        else:
            self.estimator = CBPE(metrics, threshold, max_ece=estimation.max_ece)
        self.encoder: FeatureEncoder | None = None
        self.n_classes = 0
        self.n_reference = 0

    # -- columns to samples ---------------------------------------------------------------------
    def _outputs(self, columns: dict[str, Sequence[Any]], n: int) -> tuple[np.ndarray | None, np.ndarray]:
        """(scores, predictions) of classification rows; (None, predictions) for regression."""
        preds = [_loads(v) for v in columns.get("prediction", [None] * n)]
        if self.method == "dle":
            values = np.full(n, np.nan)
            for i, v in enumerate(preds):
                v = v[0] if isinstance(v, list) and len(v) == 1 else v
                if isinstance(v, int | float) and not isinstance(v, bool):
                    values[i] = float(v)
            if np.isnan(values).any():
                raise EstimationError("every row needs a numeric prediction (regression)")
            return None, values
        proba_columns = sorted(
            (k for k in columns if k.startswith("proba_")),
            key=lambda k: int(k[6:]) if k[6:].isdigit() else -1,
        )
        if proba_columns and not any(_is_probabilities(v) for v in preds):
            # A table (CSV, Parquet) cannot hold vectors: proba_0, proba_1, ... columns instead.
            preds = [list(row) for row in zip(*(columns[k] for k in proba_columns), strict=True)]
        vectors = [v for v in preds if _is_probabilities(v)]
        if any(len(v) > 2 for v in vectors) or (self.n_classes > 2 and vectors):
            if len(vectors) != n:
                raise EstimationError(
                    "multiclass rows need a probability vector as the prediction on every row"
                )
            widths = {len(v) for v in vectors}
            if len(widths) != 1:
                raise EstimationError(f"probability vectors of different lengths {sorted(widths)}")
            proba = np.asarray(vectors, dtype=float)
            k = proba.shape[1]
            if k > MAX_CLASSES:
                raise EstimationError(
                    f"probability vectors of {k} classes; at most {MAX_CLASSES} are estimated"
                )
            if not np.all(np.isfinite(proba)):
                raise EstimationError("probability vectors must hold finite numbers")
            if self.n_classes and k != self.n_classes:
                raise EstimationError(
                    f"probability vectors of {k} classes; the reference has {self.n_classes}"
                )
            self.n_classes = k
            return proba, np.argmax(proba, axis=1)
        # Binary: per row, P(positive) from a [p0, p1] prediction or else the score, so that
        # rows from different sources (OTLP spans with a score, KServe probability vectors)
        # share a window.
        scores = [_loads(v) for v in columns.get("score", [None] * n)]
        score = np.full(n, np.nan)
        predicted = np.zeros(n, dtype=int)
        for i, (p, sc) in enumerate(zip(preds, scores, strict=True)):
            if _is_probabilities(p):
                score[i], predicted[i] = float(p[1]), int(p[1] > p[0])
                continue
            if isinstance(sc, int | float) and not isinstance(sc, bool):
                score[i] = float(sc)
            c = _class_index(p, 2)
            predicted[i] = (1 if score[i] >= 0.5 else 0) if c is None else c
        if np.isnan(score).any():
            raise EstimationError(
                "classification rows need probabilities: a score (P of the positive class) per row, "
                "or a probability vector as the prediction"
            )
        self.n_classes = 2
        return score, predicted

    def _labels(self, values: Sequence[Any]) -> np.ndarray:
        """Labels as floats (regression) or class indices, NaN where missing or unreadable."""
        out = np.full(len(values), np.nan)
        for i, v in enumerate(values):
            v = _loads(v)
            if v is None:
                continue
            if self.method == "dle":
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[i] = float(v)
            else:
                c = _class_index(v, self.n_classes)
                if c is not None:
                    out[i] = c
        return out

    def _sample(self, columns: dict[str, Sequence[Any]]) -> tuple[Sample, np.ndarray]:
        n = len(next(iter(columns.values()), []))
        outputs = [columns[k] for k in ("prediction", "score") if k in columns]
        if outputs:
            # A request whose response was never logged has no output: not a row to estimate.
            keep = [i for i in range(n) if any(col[i] is not None for col in outputs)]
            if len(keep) < n:
                columns = {k: [v[i] for i in keep] for k, v in columns.items()}
                n = len(keep)
        scores, predictions = self._outputs(columns, n)
        assert self.encoder is not None
        features = self.encoder.transform(columns, n) if self.encoder.names else None
        labels = self._labels(columns.get("label", [None] * n))
        return Sample(scores=scores, predictions=predictions, features=features), labels

    # -- fit and evaluate ----------------------------------------------------------------------
    def fit(self, columns: dict[str, Sequence[Any]]) -> int:
        """Fit on the reference columns; returns the labelled rows used."""
        if "label" not in columns:
            raise EstimationError("the reference needs a 'label' column (the ground truth of each row)")
        if "prediction" not in columns and "score" not in columns:
            raise EstimationError("the reference needs the model's output: a 'prediction' or 'score' column")
        self.encoder = FeatureEncoder(columns, self.features)
        sample, labels = self._sample(columns)
        keep = ~np.isnan(labels)
        if keep.sum() < 20:
            raise EstimationError(
                f"the reference has {int(keep.sum())} rows with a readable label; need at least 20"
            )
        ref = sample.take(np.flatnonzero(keep))
        ref.labels = labels[keep].astype(float if self.method == "dle" else int)
        try:
            self.estimator.fit(ref)
        except ImportError as exc:
            hint = "" if "pip install" in str(exc) else ": pip install 'mlvigil[estimation]'"
            raise EstimationError(f"estimated_performance cannot load its models ({exc}){hint}") from exc
        self.n_reference = int(keep.sum())
        return self.n_reference

    @property
    def reliable(self) -> tuple[bool, str]:
        if isinstance(self.estimator, CBPE) and not self.estimator.calibration_ok:
            cal = self.estimator.calibration
            return False, (
                f"calibration on the reference is poor (out-of-fold ECE {cal['ece_calibrated']:.3f} > "
                f"max_ece {cal['max_ece']}): post a larger labelled reference, or raise estimation.max_ece"
            )
        return True, ""

    def estimate(self, columns: dict[str, Sequence[Any]]) -> tuple[list[Estimate], dict[str, Any]]:
        """Estimates for one window (realised values where its labels arrived) and context."""
        sample, labels = self._sample(columns)
        estimates = self.estimator.estimate(sample)
        labelled = np.flatnonzero(~np.isnan(labels))
        context: dict[str, Any] = {"n_current": len(sample), "n_labelled": int(labelled.size)}
        if labelled.size >= 2:
            sub = sample.take(labelled)
            sub.labels = labels[labelled].astype(float if self.method == "dle" else int)
            realised = self.estimator.realised(sub)
            for e in estimates:
                v = realised.get(e.metric)
                e.realised = None if v is None or math.isnan(v) else v
        context["shifted_features"] = self._shifted_features(sample)
        return estimates, context

    def _shifted_features(self, sample: Sample) -> list[dict[str, Any]]:
        """Features whose distribution moved in this window: two-sample KS, Bonferroni."""
        from scipy.stats import ks_2samp

        ref = self.estimator.reference
        if ref is None or ref.features is None or sample.features is None or self.encoder is None:
            return []
        names = self.encoder.names
        out = []
        for j, name in enumerate(names):
            a, b = ref.features[:, j], sample.features[:, j]
            a, b = a[~np.isnan(a)], b[~np.isnan(b)]
            if a.size < 2 or b.size < 2:
                continue
            res = ks_2samp(a, b)
            p = min(1.0, float(res.pvalue) * len(names))
            if p < self.config.feature_alpha:
                out.append({"feature": name, "statistic": float(res.statistic), "p_value": p})
        return sorted(out, key=lambda d: -d["statistic"])

    def finding(
        self,
        estimates: list[Estimate],
        context: dict[str, Any],
        *,
        monitor: str,
        kind: str,
        severity: Severity,
        subject: dict[str, str],
        start: float | None,
        end: float | None,
    ) -> Finding | None:
        """The Finding for a window with at least one alarm (None otherwise)."""
        alarmed = [e for e in estimates if e.alarm]
        if not alarmed or not self.reliable[0]:
            return None
        target = subject["model"] + (
            f" {subject['model_version']}" if subject.get("model_version", "*") != "*" else ""
        )
        parts = [
            f"{e.metric} estimated {e.value:.3g} (band {e.lower:.3g} to {e.upper:.3g}; "
            f"reference range {e.reference_lower:.3g} to {e.reference_upper:.3g})"
            + ("" if e.realised is None else f", realised {e.realised:.3g}")
            for e in alarmed
        ]
        labels = "no labels yet" if context["n_labelled"] == 0 else f"{context['n_labelled']} labelled rows"
        return Finding(
            kind=kind,
            severity=severity,
            subject=subject,
            summary=f"Estimated performance drop on {target} (monitor {monitor}, {labels}): "
            + "; ".join(parts),
            evidence={
                "monitor": monitor,
                "estimated": True,
                "method": self.method,
                "max_drop": self.estimator.threshold,
                "n_reference": self.n_reference,
                **context,
                "metrics": [e.to_dict() for e in estimates],
                "drifted_features": [e.metric for e in alarmed],
                "fit": self.estimator.describe(),
            },
            window_start=start,
            window_end=end,
            key=monitor,
        )
