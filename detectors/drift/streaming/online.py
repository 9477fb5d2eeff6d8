"""Sliding-window change detectors calibrated to an expected run time between false alarms.

Every ``stride`` observations, once ``window_size`` have been seen, the latest
``window_size`` observations are compared with a fixed reference (Cramér-von Mises gap for
one feature, MMD for vectors). Thresholds are set by simulation before the stream starts,
as Cobb et al. (2022) do: bootstrap streams drawn from the reference, each compared with a
bootstrap resample of the reference (so the simulated gap is the real one), are run
through the same statistic and, step by step, the threshold is the quantile that lets a
fraction ``1 / ert`` of the streams *not yet stopped* cross it. The false alarm rate per
step is thus ``1 / ert`` whatever the step (memoryless), so the expected run time between
false alarms under no change is ``ert`` steps, that is ``ert * stride`` observations.

Estimating a ``1 - 1/ert`` quantile needs many more simulated streams than ``ert``:
``n_bootstraps >= 10 * ert`` is enforced.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import deque
from typing import Any

import numpy as np

from detectors.drift.stats.mmd import sq_distances
from detectors.drift.streaming.base import DriftDetector

#: Simulated streams needed per unit of expected run time (about ten crossings per step).
BOOTSTRAPS_PER_ERT = 10


def check_calibration(ert: float, n_bootstraps: int) -> None:
    """Raise ValueError when ``n_bootstraps`` streams cannot estimate a ``1 - 1/ert`` quantile."""
    if ert <= 1:
        raise ValueError(f"ert must be above 1 step (got {ert})")
    if n_bootstraps < BOOTSTRAPS_PER_ERT * ert:
        raise ValueError(
            f"n_bootstraps={n_bootstraps} is too few for ert={ert:g} steps: "
            f"need at least {math.ceil(BOOTSTRAPS_PER_ERT * ert)}"
        )


def default_horizon(window_size: int, stride: int) -> int:
    """Steps simulated: thresholds settle once the window has fully renewed twice."""
    return max(10, 2 * math.ceil(window_size / stride))


def _calibrate(stats: np.ndarray, ert: float) -> np.ndarray:
    """Per-step thresholds from simulated null statistics (streams x steps)."""
    alive = np.ones(stats.shape[0], dtype=bool)
    q = 1.0 - 1.0 / ert
    out = np.empty(stats.shape[1])
    for t in range(stats.shape[1]):
        pool = stats[alive, t] if alive.sum() >= 20 else stats[:, t]
        out[t] = float(np.quantile(pool, q))
        alive &= stats[:, t] <= out[t]
    return out


class _CalibratedWindow(DriftDetector):
    def __init__(self, window_size: int, ert: float, stride: int, n_bootstraps: int) -> None:
        if window_size < 2 or stride < 1:
            raise ValueError("window_size must be at least 2 and stride at least 1")
        check_calibration(ert, n_bootstraps)
        self.window_size, self.ert, self.stride = window_size, ert, stride
        self.window: deque[Any] = deque(maxlen=window_size)
        self.thresholds = np.empty(0)
        self.step = -1  # steps evaluated since the window was last (re)filled
        self.pending = 0  # observations since the last evaluated step
        self.statistic = 0.0
        self.threshold = math.inf
        self.drift_detected = False

    @abstractmethod
    def _stat(self, window: np.ndarray) -> float:
        """The test statistic of the current window against the reference."""

    def _windows(self, length: int, horizon: int) -> list[slice]:
        return [slice(t * self.stride, t * self.stride + self.window_size) for t in range(horizon + 1)]

    def reset(self) -> None:
        """Forget the window (the thresholds stay): monitoring restarts once it is full again."""
        self.window.clear()
        self.step, self.pending = -1, 0
        self.drift_detected = False

    def update(self, x: Any) -> bool:
        """Add one observation; True when this step's statistic crosses its threshold.

        After an alarm the window restarts empty, so the next alarm needs a full window of
        observations from after the change."""
        if self.drift_detected:
            self.reset()
        self.window.append(x)
        self.pending += 1
        if len(self.window) < self.window_size or (self.step >= 0 and self.pending < self.stride):
            return False
        self.step += 1
        self.pending = 0
        self.statistic = self._stat(np.asarray(self.window))
        self.threshold = float(self.thresholds[min(self.step, self.thresholds.size - 1)])
        self.drift_detected = bool(self.statistic > self.threshold)
        return self.drift_detected


class OnlineCVM(_CalibratedWindow):
    """Online detector on one or several features: the Cramér-von Mises gap between each
    feature's last ``window_size`` values and its reference, the largest over features.

    Several features are calibrated jointly (reference rows are resampled
    whole, so correlated features count once): the monitor's run time is ``ert`` however
    many features it watches. Missing values (NaN) are a value of their own, above all
    numbers, so a change in the missing rate moves the statistic too.

    Parameters
    ----------
    reference
        Reference values (n,) or rows (n x d), n at least ~500.
    window_size
        Observations compared at each step.
    ert
        Expected run time, in steps, between false alarms with no change.
    stride
        Observations between steps (1: a step per observation).
    n_bootstraps
        Simulated streams used to set the thresholds (at least ``10 * ert``).
    horizon
        Steps simulated; later steps use the last threshold.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = OnlineCVM(rng.normal(size=2000), window_size=50, ert=200, n_bootstraps=2000)
    >>> stream = np.r_[rng.normal(size=300), rng.normal(1.0, size=200)]
    >>> alarms = det.update_many(stream)
    >>> 300 <= alarms[0] < 360
    True

    References
    ----------
    O. Cobb, A. Van Looveren and J. Klaise, "Sequential multivariate change detection with
    calibrated and memoryless false detection rates", AISTATS 2022.
    """

    def __init__(
        self,
        reference: np.ndarray,
        window_size: int = 50,
        ert: float = 200,
        n_bootstraps: int = 2000,
        horizon: int | None = None,
        stride: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__(window_size, ert, stride, n_bootstraps)
        rng = np.random.default_rng(seed)
        ref = np.asarray(reference, dtype=np.float64)
        self.univariate = ref.ndim == 1
        ref = ref[:, None] if self.univariate else ref
        if ref.ndim != 2 or ref.shape[0] < 8:
            raise ValueError("OnlineCVM needs at least 8 reference rows")
        ref = np.where(np.isnan(ref), np.inf, ref)
        n, d = ref.shape
        self.reference = np.sort(ref, axis=0)
        #: The latest step's gap per feature, in units of its mean gap with no change (the
        #: statistic is their maximum, so discrete and continuous features weigh the same).
        self.feature_statistics = np.zeros(d)
        steps = default_horizon(window_size, stride) if horizon is None else horizon
        length = window_size + steps * stride
        # Null simulation (the bootstrap principle): a stream drawn from the reference's
        # empirical distribution, compared with a bootstrap resample of the reference, gaps
        # as much as a stream from the true distribution does from the actual reference.
        # Rows are drawn whole, so correlated features are simulated together.
        order = np.argsort(ref, axis=0, kind="stable")
        # rank[i, j]: how many reference values of feature j are <= row i's (ties share it).
        rank = np.stack([np.searchsorted(self.reference[:, j], ref[:, j], side="right") for j in range(d)], 1)
        gaps = np.empty((d, n_bootstraps, steps + 1))
        windows = self._windows(length, steps)
        for lo in range(0, n_bootstraps, 128):
            b = min(128, n_bootstraps - lo)
            draws = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
            counts = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)
            idx = rng.integers(0, n, size=(b, length))
            for j in range(d):
                # The resampled reference's CDF at each value, by rank.
                cdf = np.concatenate([np.zeros((b, 1)), np.cumsum(counts[:, order[:, j]], axis=1) / n], 1)
                keys = rank[idx, j]
                for t, sl in enumerate(windows):
                    k = np.sort(keys[:, sl], axis=1)
                    gaps[j, lo : lo + b, t] = _cvm_gap(k, np.take_along_axis(cdf, k, axis=1))
        self.null_means = np.maximum(gaps.mean(axis=(1, 2)), 1e-12)
        self.thresholds = _calibrate((gaps / self.null_means[:, None, None]).max(axis=0), ert)

    def _stat(self, window: np.ndarray) -> float:
        x = window[:, None] if self.univariate else window
        x = np.sort(np.where(np.isnan(x), np.inf, x), axis=0)
        gaps = np.empty(x.shape[1])
        for j in range(x.shape[1]):
            ref = self.reference[:, j]
            ref_cdf = np.searchsorted(ref, x[:, j], side="right") / ref.size
            gaps[j] = _cvm_gap(x[None, :, j], ref_cdf[None, :])[0]
        self.feature_statistics = gaps / self.null_means
        return float(self.feature_statistics.max())

    def feature_scores(self) -> np.ndarray:
        return self.feature_statistics


def _cvm_gap(window_sorted: np.ndarray, ref_cdf: np.ndarray) -> np.ndarray:
    """Mean squared gap between each window's ECDF and the reference CDF, at the window's
    values (batch x window, sorted per row; a run of ties takes the ECDF at its end)."""
    m = window_sorted.shape[1]
    ends = np.ones(window_sorted.shape, dtype=bool)
    ends[:, :-1] = window_sorted[:, :-1] != window_sorted[:, 1:]
    end = np.minimum.accumulate(np.where(ends, np.arange(m), m)[:, ::-1], axis=1)[:, ::-1]
    return np.mean((ref_cdf - (end + 1) / m) ** 2, axis=1)


class OnlineMMD(_CalibratedWindow):
    """Multivariate online detector: MMD^2 between the last ``window_size`` vectors and the reference.

    The Gaussian kernel (bandwidth by the median heuristic) is approximated with ``n_features``
    random Fourier features, so MMD^2 is the squared distance between the window's and the
    reference's mean feature vectors: a row's features are computed once, a step costs
    O(window_size x n_features), and the null simulation is linear in the length of the
    simulated streams. Thresholds are
    calibrated on the same approximate statistic, so the run time between false alarms is
    exactly as configured.

    Parameters are those of ``OnlineCVM``, plus ``n_features`` (random Fourier features) and
    ``max_reference`` (most reference rows used for the bandwidth).

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det = OnlineMMD(rng.normal(size=(600, 3)), window_size=30, ert=500, n_bootstraps=5000)
    >>> stream = np.r_[rng.normal(size=(200, 3)), rng.normal(1.0, size=(100, 3))]
    >>> alarms = det.update_many(stream)
    >>> 200 <= alarms[0] < 240
    True

    References
    ----------
    Cobb, Van Looveren and Klaise, AISTATS 2022 (see ``OnlineCVM``); A. Rahimi and B. Recht,
    "Random features for large-scale kernel machines", NeurIPS 2007.
    """

    def __init__(
        self,
        reference: np.ndarray,
        window_size: int = 30,
        ert: float = 100,
        n_bootstraps: int = 1000,
        horizon: int | None = None,
        stride: int = 1,
        n_features: int = 128,
        max_reference: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(window_size, ert, stride, n_bootstraps)
        rng = np.random.default_rng(seed)
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] < 12:
            raise ValueError("OnlineMMD needs a reference matrix with at least 12 rows")
        n = ref.shape[0]
        sample = ref[rng.permutation(n)[:max_reference]]
        d = sq_distances(sample, sample)
        gamma = 1.0 / max(float(np.median(d[np.triu_indices_from(d, 1)])), 1e-12)
        # exp(-gamma |x - y|^2) = E[2 cos(w.x + b) cos(w.y + b)], w ~ N(0, 2 gamma I).
        self.omega = rng.normal(scale=np.sqrt(2.0 * gamma), size=(ref.shape[1], n_features))
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=n_features)
        z = self._features(ref)
        self.reference_mean = z.mean(axis=0)
        steps = default_horizon(window_size, stride) if horizon is None else horizon
        # Null simulation (the bootstrap principle): streams drawn from the reference, each
        # compared with the mean embedding of a bootstrap resample of the reference. Streams
        # are summed in blocks of g rows (g divides both window and stride); windows are
        # differences of cumulative block sums.
        g = math.gcd(window_size, stride)
        n_blocks = (window_size + steps * stride) // g
        starts = np.arange(steps + 1) * (stride // g)
        z32 = z.astype(np.float32)
        stats = np.empty((n_bootstraps, steps + 1))
        for lo in range(0, n_bootstraps, 128):  # bounded memory: 128 streams at a time
            b = min(128, n_bootstraps - lo)
            draws = rng.integers(0, n, size=(b, n)) + n * np.arange(b)[:, None]
            ref_means = np.bincount(draws.ravel(), minlength=b * n).reshape(b, n) @ z / n
            idx = rng.integers(0, n, size=(b, n_blocks, g))
            blocks = z32[idx].sum(axis=2, dtype=np.float64)
            cum = np.concatenate([np.zeros((b, 1, n_features)), np.cumsum(blocks, axis=1)], axis=1)
            means = (cum[:, starts + window_size // g] - cum[:, starts]) / window_size
            stats[lo : lo + b] = ((means - ref_means[:, None, :]) ** 2).sum(axis=2)
        self.thresholds = _calibrate(stats, ert)

    def update(self, x: Any) -> bool:
        # The window keeps each row's random features, computed once.
        return super().update(self._features(np.asarray(x, dtype=np.float64)[None, :])[0])

    def _features(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(2.0 / self.omega.shape[1]) * np.cos(x @ self.omega + self.phase)

    def _stat(self, window: np.ndarray) -> float:
        return float(((window.mean(axis=0) - self.reference_mean) ** 2).sum())
