"""The optional alibi-detect backend (``backend: alibi`` in a monitor; extra ``alibi``).

alibi-detect is imported here only, and this module only when a monitor asks for it. Its
results are mapped into the same ``DriftReport`` (hence the same Findings and metrics) as
the native engine: per-feature p-values for the univariate detectors, one p-value for the
multivariate ones (with the native per-feature results kept as the explanation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from detectors.drift.compare import CompareOptions, DriftReport, FeatureDrift, compare
from detectors.drift.config import MonitorConfig
from detectors.drift.multiple import correct
from detectors.drift.profile import CategoricalProfile, ReferenceProfile, current_values

UNIVARIATE_DETECTORS = ("KSDrift", "CVMDrift", "ChiSquareDrift", "TabularDrift")
MULTIVARIATE_DETECTORS = ("MMDDrift", "LSDDDrift", "ClassifierDrift")
ONLINE_DETECTORS = ("MMDDriftOnline", "LSDDDriftOnline", "CVMDriftOnline")
DETECTORS = UNIVARIATE_DETECTORS + MULTIVARIATE_DETECTORS


def _matrix(
    profile: ReferenceProfile, columns: Mapping[str, Sequence[Any] | np.ndarray], names: list[str]
) -> np.ndarray:
    """Columns as one float matrix: numbers as they are, categories as their reference index
    (unseen: -1), missing values as NaN, which alibi-detect's univariate tests ignore poorly,
    so they are imputed with the reference median."""
    n = max((len(columns[c]) for c in names if c in columns), default=0)
    out = np.empty((n, len(names)))
    for j, name in enumerate(names):
        prof = profile.features[name]
        raw = list(columns.get(name, [None] * n))
        if isinstance(prof, CategoricalProfile):
            index = {c: i for i, c in enumerate(prof.categories)}
            vals, _ = current_values(prof, raw)
            codes = [index.get(str(v), -1) for v in vals.tolist()]
            col = np.full(n, np.nan)
            col[: len(codes)] = codes
        else:
            col = np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)
            med = float(np.median(prof.sorted)) if prof.n else 0.0
            col = np.where(np.isnan(col), med, col)
        out[:, j] = col
    return np.where(np.isnan(out), -1.0, out)


def make_detector(kind: str, x_ref: np.ndarray, p_val: float, categorical: list[int]) -> Any:
    import alibi_detect.cd as cd

    if kind not in DETECTORS:
        raise ValueError(f"unsupported alibi-detect detector {kind!r}; supported: {', '.join(DETECTORS)}")
    if kind == "TabularDrift":
        return cd.TabularDrift(x_ref, p_val=p_val, categories_per_feature={j: None for j in categorical})
    if kind == "ChiSquareDrift":
        return cd.ChiSquareDrift(x_ref, p_val=p_val)
    if kind in ("KSDrift", "CVMDrift"):
        return getattr(cd, kind)(x_ref, p_val=p_val)
    x32 = x_ref.astype(np.float32)
    if kind == "ClassifierDrift":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return cd.ClassifierDrift(x32, HistGradientBoostingClassifier(), backend="sklearn", p_val=p_val)
    return getattr(cd, kind)(x32, backend="pytorch", p_val=p_val)


def alibi_compare(
    config: MonitorConfig,
    ref_columns: Mapping[str, Sequence[Any] | np.ndarray],
    cur_columns: Mapping[str, Sequence[Any] | np.ndarray],
    profile: ReferenceProfile,
    options: CompareOptions,
) -> DriftReport:
    names = [n for n in (options.features or list(profile.features)) if n in profile.features]
    categorical = [j for j, n in enumerate(names) if isinstance(profile.features[n], CategoricalProfile)]
    cache_key = "_alibi_detector"
    det = profile.__dict__.get(cache_key)
    if det is None:
        det = make_detector(
            config.alibi_detector, _matrix(profile, ref_columns, names), options.alpha, categorical
        )
        profile.__dict__[cache_key] = det
    x = _matrix(profile, cur_columns, names)
    # Native results explain *which* features moved and how; alibi-detect decides.
    native = compare(profile, cur_columns, replace(options, missing=False))
    by_name = {f.feature: f for f in native.features}
    if config.alibi_detector in UNIVARIATE_DETECTORS:
        pred = det.predict(x, drift_type="feature", return_p_val=True, return_distance=True)["data"]
        p_vals = np.atleast_1d(np.asarray(pred["p_val"], dtype=np.float64))
        dists = np.atleast_1d(np.asarray(pred["distance"], dtype=np.float64))
        adjusted, rejected = correct(p_vals.tolist(), options.alpha, options.correction)
        feats = [
            FeatureDrift(
                name,
                profile.features[name].kind,
                f"alibi:{config.alibi_detector}",
                float(dists[j]),
                float(p_vals[j]),
                float(adjusted[j]),
                float(dists[j]),
                None,
                bool(rejected[j]),
                profile.features[name].n,
                int(x.shape[0]),
                by_name[name].movement if name in by_name else {},
            )
            for j, name in enumerate(names)
        ]
        drifted = sum(f.drifted for f in feats) >= options.min_drifted_features
        return DriftReport(
            drifted,
            f"alibi:{config.alibi_detector}",
            options.correction,
            options.alpha,
            profile.n_rows,
            int(x.shape[0]),
            feats,
        )
    pred = det.predict(x.astype(np.float32))["data"]
    p = float(pred["p_val"])
    multivariate = {
        "test": f"alibi:{config.alibi_detector}",
        "statistic": float(pred.get("distance", np.nan)),
        "p_value": p,
        "drifted": bool(pred["is_drift"]),
        "n_reference": profile.n_rows,
        "n_current": int(x.shape[0]),
    }
    return DriftReport(
        bool(pred["is_drift"]),
        f"alibi:{config.alibi_detector}",
        options.correction,
        options.alpha,
        profile.n_rows,
        int(x.shape[0]),
        native.features,
        multivariate,
    )
