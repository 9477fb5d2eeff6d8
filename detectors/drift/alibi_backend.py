"""The optional alibi-detect backend (``backend: alibi`` in a monitor; extra ``alibi``).

alibi-detect is imported here only, and this module only when a monitor asks for it. Its
results are mapped into the same ``DriftReport`` (hence the same Findings and metrics) as
the native engine: per-feature p-values for the univariate detectors, one p-value for the
multivariate ones (with the native per-feature results kept as the explanation).

Its online detectors (``CVMDriftOnline``, ``MMDDriftOnline``, ``LSDDDriftOnline``) are
wrapped by ``AlibiOnline`` behind the streaming detectors' base class
(``detectors.drift.streaming.base.DriftDetector``): ``update``, ``update_many``, ``reset``,
``statistic``, ``threshold``, ``step`` and ``window_size``; ``online_detector`` builds one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import numpy as np

from detectors.drift.compare import CompareOptions, DriftReport, FeatureDrift, compare
from detectors.drift.config import MonitorConfig
from detectors.drift.multiple import correct
from detectors.drift.profile import CategoricalProfile, ReferenceProfile, current_values
from detectors.drift.streaming.base import DriftDetector
from detectors.drift.streaming.online import check_calibration

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
    if options.correction == "minp":
        # min-P resamples the native tests; alibi-detect's p-values have no such null, and
        # min-P without one is its Bonferroni bound: say so in the report.
        options = replace(options, correction="bonferroni")
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


#: Fewest reference rows each online detector can be calibrated with, per window size:
#: MMD keeps a sub-reference beside an extended test window of ``2 w - 1`` rows, LSDD also
#: sets ``2 w`` rows aside as kernel centres.
_MIN_REFERENCE = {
    "CVMDriftOnline": lambda w: 2,
    "MMDDriftOnline": lambda w: 2 * w + 1,
    "LSDDDriftOnline": lambda w: 4 * w + 1,
}

#: Steps between two trims of the histories alibi-detect keeps of every step.
_TRIM_EVERY = 1024


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread for the while: the threshold simulation and each step are many
    tiny tensor operations, which a thread pool slows down (10-20 times on two busy cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _numpy(value: Any) -> np.ndarray:
    """A test statistic or threshold (float, numpy array or torch tensor) as a float array."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


class AlibiOnline(DriftDetector):
    """An alibi-detect online detector behind the streaming detectors' base class (``DriftDetector``).

    Like ``OnlineCVM`` / ``OnlineMMD``: ``update(x)`` adds one observation and returns True
    on an alarm, ``update_many(xs)`` the positions in ``xs`` that alarmed; after an alarm the
    detector restarts (alibi-detect's ``reset_state()``) at the next observation, so
    ``statistic``, ``threshold`` and ``step`` still describe the alarming step until then.
    Thresholds are those alibi-detect calibrated for the expected run time ``ert``: one
    step per observation, so ``ert`` is counted in observations.

    How alibi-detect's detectors differ from the native ones:

    * ``CVMDriftOnline`` is evaluated once ``window_size`` observations have been seen since
      the (re)start, as the native detectors are. Its statistic is a normalised CVM
      statistic per feature (alibi-detect calibrates one threshold shared by all features,
      with a Bonferroni-like correction assuming independent features) and it alarms when
      any feature crosses. ``statistic`` is the feature furthest above (or least below) its
      threshold, that is the largest per-feature statistic, and ``threshold`` that feature's
      threshold; ``feature`` is its index and ``feature_statistics`` holds every feature's.
    * ``MMDDriftOnline`` / ``LSDDDriftOnline`` start with a test window of reference rows, so
      they are evaluated from the first observation (``step`` 0) on, also after a restart;
      ``statistic`` is the squared MMD or the LSDD of the window.

    Attributes
    ----------
    kind
        The alibi-detect class wrapped (one of ``ONLINE_DETECTORS``).
    detector
        The alibi-detect detector itself.
    statistic, threshold
        The latest evaluated step's statistic and threshold (0 and infinity before any).
    feature, feature_statistics
        ``CVMDriftOnline`` only: the index of the feature ``statistic`` comes from and the
        latest statistic of every feature (empty for the multivariate detectors).
    """

    def __init__(self, kind: str, detector: Any, window_size: int) -> None:
        self.kind = kind
        self.detector = detector
        self.window_size = window_size
        self.univariate = kind == "CVMDriftOnline"
        # Observations after a (re)start before the first evaluated step.
        self._warmup = window_size if self.univariate else 1
        self._dtype = np.float64 if self.univariate else np.float32
        self._torch: Callable[[], AbstractContextManager[None]] = (
            nullcontext if self.univariate else _one_torch_thread
        )
        self.statistic = 0.0
        self.threshold = math.inf
        self.feature: int | None = None
        self.feature_statistics = np.empty(0)
        self.drift_detected = False
        self._since_trim = 0

    @property
    def step(self) -> int:
        """Steps evaluated since the detector was last (re)started, minus one (-1: none yet)."""
        return max(-1, int(self.detector.t) - self._warmup)

    def reset(self) -> None:
        """Restart the stream (alibi-detect's ``reset_state()``); the thresholds stay."""
        self.detector.reset_state()
        self.drift_detected = False

    def update(self, x: Any) -> bool:
        """Add one observation (a number, or a vector of the reference's features); True on
        an alarm. After an alarm the detector restarts before taking the next observation."""
        if self.drift_detected:
            self.reset()
        x_t = np.asarray(x, dtype=self._dtype).reshape(-1)
        with self._torch():
            data = self.detector.predict(x_t, return_test_stat=True)["data"]
        stat, thr = _numpy(data["test_stat"]), _numpy(data["threshold"])
        if self.univariate:
            self._feature_step(stat, thr)
        elif not (np.isnan(stat).all() or np.isnan(thr).all()):
            self.statistic, self.threshold = float(stat.reshape(-1)[0]), float(thr.reshape(-1)[0])
        self.drift_detected = bool(data["is_drift"])
        self._since_trim += 1
        if self._since_trim >= _TRIM_EVERY:
            self._trim()
        return self.drift_detected

    def _feature_step(self, stat: np.ndarray, thr: np.ndarray) -> None:
        """CVMDriftOnline: per-feature statistics (windows x features) against the step's
        threshold, one shared by every feature or one per feature."""
        if np.isnan(stat).all() or np.isnan(thr).all():
            return  # the window is not full yet: no step
        n_features = stat.shape[-1] if stat.ndim else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN window rows
            feats = np.nanmax(stat.reshape(-1, n_features), axis=0)
        thr = thr.reshape(-1)
        per_feature = thr if thr.size == n_features else np.full(n_features, thr[0])
        j = int(np.nanargmax(feats - per_feature))
        self.feature, self.feature_statistics = j, feats
        self.statistic, self.threshold = float(feats[j]), float(per_feature[j])

    def _trim(self) -> None:
        """Drop the histories alibi-detect appends to at every step (statistics, decisions;
        for CVM the observations, of which only the last window is read): unbounded
        otherwise on a long stream, each step copying all of them."""
        self._since_trim = 0
        inner = getattr(self.detector, "_detector", self.detector)
        for name in ("test_stats", "drift_preds", "xs"):
            arr = getattr(inner, name, None)
            if isinstance(arr, np.ndarray) and arr.ndim >= 1 and arr.shape[0] > self.window_size:
                setattr(inner, name, arr[-self.window_size :])


def online_detector(
    kind: str,
    x_ref: np.ndarray,
    *,
    ert: float,
    window_size: int,
    n_bootstraps: int,
    max_reference: int = 2000,
) -> AlibiOnline:
    """An alibi-detect online detector, calibrated on ``x_ref``, as an ``AlibiOnline``.

    Parameters
    ----------
    kind
        ``CVMDriftOnline`` (a test per feature, any feature alarms), ``MMDDriftOnline`` or
        ``LSDDDriftOnline`` (all features as one vector, with the PyTorch backend on the CPU;
        PyTorch runs on one thread while they calibrate or step, its setting restored after).
    x_ref
        Reference rows x features (a 1-D array is one feature), finite floats.
    ert
        Expected run time between false alarms with no change, in observations (alibi-detect
        evaluates a step per observation).
    window_size
        Observations in the sliding test window.
    n_bootstraps
        Simulated streams that set the thresholds: at least ``10 * ert``, as for the native
        detectors (``check_calibration``).
    max_reference
        Most reference rows kept (a random subset beyond): alibi-detect's memory is
        quadratic in them (an n x n kernel matrix; for CVM n x n x features comparisons).

    Raises
    ------
    ValueError
        For an unknown ``kind``, a calibration ``n_bootstraps`` cannot reach, a window under
        2 or a reference that is not a finite matrix with enough rows for the window.
    ImportError
        When alibi-detect (or, for MMD and LSDD, PyTorch) is not installed.
    """
    if kind not in ONLINE_DETECTORS:
        raise ValueError(
            f"unsupported alibi-detect online detector {kind!r}; supported: {', '.join(ONLINE_DETECTORS)}"
        )
    check_calibration(ert, n_bootstraps)
    if window_size < 2:
        raise ValueError(f"window_size must be at least 2 (got {window_size})")
    x = np.asarray(x_ref, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[1] == 0 or not np.isfinite(x).all():
        raise ValueError("x_ref must be a finite float matrix, rows x features")
    if x.shape[0] > max_reference:
        x = x[np.sort(np.random.default_rng(0).choice(x.shape[0], max_reference, replace=False))]
    need = _MIN_REFERENCE[kind](window_size)
    if x.shape[0] < need:
        raise ValueError(f"{kind} with window_size={window_size} needs at least {need} reference rows")

    import alibi_detect.cd as cd

    if kind == "CVMDriftOnline":
        # The threshold simulation holds batch x (n + 2w)^2 booleans: about 200 MB at most.
        batch = int(min(64, max(1, 2e8 // (x.shape[0] + 2 * window_size) ** 2)))
        det = cd.CVMDriftOnline(
            x,
            ert=ert,
            window_sizes=[window_size],
            n_bootstraps=n_bootstraps,
            batch_size=batch,
            verbose=False,
        )
    else:
        with _one_torch_thread():
            det = getattr(cd, kind)(
                x.astype(np.float32),
                ert=ert,
                window_size=window_size,
                backend="pytorch",
                n_bootstraps=n_bootstraps,
                device="cpu",
                verbose=False,
            )
    return AlibiOnline(kind, det, window_size)
