"""Compare one window with a reference profile: per-feature tests, correction, decision.

This is the engine behind monitors, the ``mlvigil drift`` command and the benchmark: the
same ``compare`` runs on columns from the store, from CSV/Parquet files or from arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from detectors.drift.min_p import MISSING, READY, Member, cached_min_p_null
from detectors.drift.multiple import correct, min_p
from detectors.drift.profile import (
    CategoricalProfile,
    FeatureProfile,
    NumericProfile,
    ReferenceProfile,
    counted,
    current_values,
    label_counts,
)
from detectors.drift.stats import MULTIVARIATE, MissingRate, TestResult, test_for


@dataclass
class CompareOptions:
    #: ``auto``, a univariate test name, or ``mmd`` / ``classifier`` (multivariate decision).
    test: str = "auto"
    #: Significance level of the whole monitor (after correction across features).
    alpha: float = 0.05
    #: ``minp`` (Westfall-Young, calibrated on the reference), ``bh`` (Benjamini-Hochberg),
    #: ``bonferroni`` or ``none``.
    correction: str = "minp"
    #: Distance threshold; when set, a feature drifts when its distance reaches it (no p-values).
    threshold: float | None = None
    #: Features to compare (default: every feature of the reference).
    features: Sequence[str] | None = None
    #: Per-feature test overrides.
    feature_tests: Mapping[str, str] = field(default_factory=dict)
    #: Test missing-value rates too.
    missing: bool = True
    #: Drift is declared when at least this many features drifted (univariate decisions).
    min_drifted_features: int = 1
    #: Permutations (MMD) and seed of the multivariate tests and of ``minp``'s resampling.
    permutations: int = 200
    seed: int = 0
    #: No-drift windows resampled from the reference to calibrate ``minp``.
    null_windows: int = 500
    #: Where ``minp`` gets its calibration: ``(profile, family, n_current, null_windows, seed)``
    #: -> ``(null or None, state)``. None computes it here, now (tools, the CLI); a monitor
    #: passes one that never blocks (``detectors.drift.calibration``): while it answers None
    #: the verdict uses Bonferroni and the report says ``calibration: pending``.
    null_source: (
        Callable[[ReferenceProfile, list[Member], int, int, int], tuple[np.ndarray | None, str]] | None
    ) = None
    #: Where the per-feature tests run (``feature_results``): None here, in this thread; a
    #: monitor in the service passes its worker processes' (``detectors.drift.workers``).
    run_tests: (
        Callable[
            [ReferenceProfile, Mapping[str, Sequence[Any] | np.ndarray], FeaturePlan],
            tuple[list[FeatureResult], list[Member]],
        ]
        | None
    ) = None


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float | None
    adjusted_p_value: float | None
    distance: float
    threshold: float | None
    drifted: bool
    n_reference: int
    n_current: int
    #: How the feature moved: means/quantiles (numeric), shares and new categories (categorical).
    movement: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # Shallow (its movement summary shared, not deep-copied as ``asdict`` would): built
        # for every feature at every evaluation, and nobody changes it afterwards.
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class DriftReport:
    drifted: bool
    test: str
    correction: str
    alpha: float
    n_reference: int
    n_current: int
    features: list[FeatureDrift]
    #: Result of the multivariate test when the monitor uses one.
    multivariate: dict[str, Any] | None = None
    #: ``minp`` only: ``ready``, or ``pending``/``failed`` when Bonferroni decided instead.
    calibration: str | None = None

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.features if f.drifted]

    @property
    def p_value(self) -> float | None:
        """The monitor-level p-value: the smallest corrected one (or the multivariate one)."""
        if self.multivariate is not None:
            return self.multivariate.get("p_value")
        ps = [f.adjusted_p_value for f in self.features if f.adjusted_p_value is not None]
        return min(ps) if ps else None

    def top(self, k: int = 5) -> list[FeatureDrift]:
        """Features ordered by evidence of drift: drifted first, then by p-value / distance."""
        return sorted(
            self.features,
            key=lambda f: (
                not f.drifted,
                f.adjusted_p_value if f.adjusted_p_value is not None else 1.0,
                -f.distance,
            ),
        )[:k]

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        feats = self.top(top) if top else self.features
        return {
            "drifted": self.drifted,
            "test": self.test,
            "correction": self.correction,
            "alpha": self.alpha,
            "p_value": self.p_value,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "n_features": len(self.features),
            "n_drifted": len(self.drifted_features),
            "multivariate": self.multivariate,
            **({"calibration": self.calibration} if self.calibration else {}),
            "features": [f.to_dict() for f in feats],
        }


def _movement_numeric(prof: NumericProfile, cur: np.ndarray, n_missing: int) -> dict[str, Any]:
    out: dict[str, Any] = {"reference": prof.summary(), "current": {}}
    if cur.size:
        # ``cur`` is sorted: quantiles by interpolation, no second sort or partition.
        q = np.interp(np.array([0.05, 0.25, 0.5, 0.75, 0.95]) * (cur.size - 1), np.arange(cur.size), cur)
        out["current"] = {
            "mean": float(cur.mean()),
            "std": float(cur.std(ddof=1)) if cur.size > 1 else 0.0,
            "p05": float(q[0]),
            "p25": float(q[1]),
            "p50": float(q[2]),
            "p75": float(q[3]),
            "p95": float(q[4]),
        }
        out["mean_shift_sd"] = (out["current"]["mean"] - prof.mean) / prof.scale
    out["missing_rate"] = [prof.missing_rate, n_missing / max(cur.size + n_missing, 1)]
    return out


def _movement_categorical(prof: CategoricalProfile, cur: np.ndarray, n_missing: int) -> dict[str, Any]:
    ref_share = prof.shares()
    cur_share: dict[str, float] = {}
    if cur.size:
        cur_share = {v: c / cur.size for v, c in label_counts(cur).items()}
    cats = set(ref_share) | set(cur_share)
    changes = sorted(
        ((c, ref_share.get(c, 0.0), cur_share.get(c, 0.0)) for c in cats), key=lambda t: -abs(t[2] - t[1])
    )[:5]
    return {
        "shares": [{"category": c, "reference": r, "current": q} for c, r, q in changes],
        "unseen": {c: s for c, s in cur_share.items() if c not in ref_share},
        "missing_rate": [prof.missing_rate, n_missing / max(cur.size + n_missing, 1)],
    }


#: One tested column: (name, kind, result, movement summary).
FeatureResult = tuple[str, str, TestResult, dict[str, Any]]


@dataclass(frozen=True)
class FeaturePlan:
    """Which features of a window to test and how: with the feature profiles and the
    window's values, all ``feature_results`` needs (picklable: a worker process runs it)."""

    names: list[str]
    n_current: int
    test: str
    feature_tests: dict[str, str]
    missing: bool


def feature_results(
    features: Mapping[str, FeatureProfile],
    current: Mapping[str, Sequence[Any] | np.ndarray],
    plan: FeaturePlan,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[FeatureResult], list[Member]]:
    """Every feature's test (and missing-rate test) with its movement summary, and the
    family of tests as min-P resamples it. The heavy part of ``compare``: the sorts, tests
    and counts over the window's values."""
    results: list[FeatureResult] = []
    family: list[Member] = []  # what each result tests, for minp's resampling
    missing_test = MissingRate()
    for name in plan.names:
        prof = features[name]
        raw = current.get(name)
        values, n_missing = current_values(prof, raw if raw is not None else [None] * plan.n_current)
        # Numbers sorted once (every EDF test merges into them), labels counted once.
        values = np.sort(values) if isinstance(prof, NumericProfile) else counted(values)
        test = test_for(plan.feature_tests.get(name, plan.test), prof, int(values.size))
        res = test.compare(prof, values)
        if isinstance(prof, NumericProfile):
            movement = _movement_numeric(prof, values, n_missing)
        else:
            movement = _movement_categorical(prof, values, n_missing)
        results.append((name, prof.kind, res, movement))
        family.append(Member(name, res.test))
        if plan.missing and (prof.n_missing or n_missing):
            miss = missing_test.compare(prof.n_missing, prof.n_total, n_missing, int(values.size) + n_missing)
            results.append((f"{name}:missing", prof.kind, miss, {"missing_rate": movement["missing_rate"]}))
            family.append(Member(name, MISSING))
        if progress:
            progress(name)
    return results, family


def compare(
    profile: ReferenceProfile,
    current: Mapping[str, Sequence[Any] | np.ndarray],
    options: CompareOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    extra: Sequence[tuple[str, str, TestResult, dict[str, Any]]] = (),
) -> DriftReport:
    """Test every feature of ``current`` against ``profile`` and decide drift at ``alpha``.

    ``extra`` adds results computed elsewhere (an embedding MMD, say) to the same family of
    tests, so the correction covers them too.
    """
    opt = options or CompareOptions()
    names = [f for f in (opt.features or list(profile.features)) if f in profile.features]
    n_current = max((len(v) for v in current.values()), default=0)
    plan = FeaturePlan(names, n_current, opt.test, dict(opt.feature_tests), opt.missing)
    if opt.run_tests is not None:
        results, family = opt.run_tests(profile, current, plan)
    else:
        results, family = feature_results(profile.features, current, plan, progress)
    results.extend(extra)

    features: list[FeatureDrift] = []
    calibration: str | None = None
    if opt.threshold is not None or not results:
        for name, kind, res, mv in results:
            thr = opt.threshold if not name.endswith(":missing") else MissingRate.default_threshold
            features.append(
                FeatureDrift(
                    name,
                    kind,
                    res.test,
                    res.statistic,
                    res.p_value,
                    None,
                    res.distance,
                    thr,
                    res.distance >= (thr or 0.0),
                    res.n_reference,
                    res.n_current,
                    mv,
                )
            )
    else:
        ps = [1.0 if r.p_value is None else r.p_value for _, _, r, _ in results]
        if opt.correction == "minp":
            adjusted, rejected, calibration = _min_p_adjusted(profile, family, ps, n_current, opt)
        else:
            adjusted, rejected = correct(ps, opt.alpha, opt.correction)
        for (name, kind, res, mv), adj, rej in zip(
            results, adjusted.tolist(), rejected.tolist(), strict=True
        ):
            features.append(
                FeatureDrift(
                    name,
                    kind,
                    res.test,
                    res.statistic,
                    res.p_value,
                    adj,
                    res.distance,
                    None,
                    bool(rej),
                    res.n_reference,
                    res.n_current,
                    mv,
                )
            )

    multivariate: dict[str, Any] | None = None
    if opt.test in MULTIVARIATE:
        multivariate = multivariate_test(profile, current, opt)
        drifted = bool(multivariate.get("drifted"))
    else:
        drifted = sum(f.drifted for f in features) >= opt.min_drifted_features
    return DriftReport(
        drifted,
        opt.test,
        opt.correction,
        opt.alpha,
        profile.n_rows,
        n_current,
        features,
        multivariate,
        calibration,
    )


def _min_p_adjusted(
    profile: ReferenceProfile, family: list[Member], ps: list[float], n_current: int, opt: CompareOptions
) -> tuple[np.ndarray, np.ndarray, str]:
    """min-P over the features' tests; results added from elsewhere (``extra``) cannot be
    resampled, so they share ``alpha`` with the family by weighted Bonferroni: the family
    gets ``k / (k + e)`` of it and each of the ``e`` extras ``1 / (k + e)``. Returns the
    calibration's state too: without a calibration (not ready) Bonferroni decides."""
    k, e = len(family), len(ps) - len(family)
    null: np.ndarray | None = None
    state = READY
    if k and opt.null_source is not None:
        null, state = opt.null_source(profile, family, n_current, opt.null_windows, opt.seed)
        if null is None:
            adjusted, rejected = correct(ps, opt.alpha, "bonferroni")
            return adjusted, rejected, state
    elif k:
        null = cached_min_p_null(profile, family, n_current, opt.null_windows, opt.seed)
    adjusted, _ = min_p(ps[:k], opt.alpha, null)
    if e:
        adjusted = np.concatenate(
            [adjusted * (k + e) / k if k else adjusted, np.asarray(ps[k:], dtype=np.float64) * (k + e)]
        )
        adjusted = np.minimum(adjusted, 1.0)
    return adjusted, adjusted <= opt.alpha, state


def multivariate_test(
    profile: ReferenceProfile, current: Mapping[str, Sequence[Any] | np.ndarray], opt: CompareOptions
) -> dict[str, Any]:
    """MMD or classifier two-sample test on the standardised numeric features."""
    if profile.matrix is None or not profile.matrix_columns:
        return {
            "test": opt.test,
            "drifted": False,
            "p_value": None,
            "reason": "no numeric features in reference",
        }
    window = profile.standardise(profile.raw_matrix(current))
    if opt.test == "mmd":
        from detectors.drift.stats.mmd import MMD

        mmd = MMD.for_reference(profile, permutations=opt.permutations, seed=opt.seed)
        res = mmd.test(window)
    else:
        from detectors.drift.stats.classifier import ClassifierTwoSample

        res = ClassifierTwoSample(seed=opt.seed).test(profile.matrix, window)
    return {**res.to_dict(), "drifted": bool(res.p_value is not None and res.p_value <= opt.alpha)}
