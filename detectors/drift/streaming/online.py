"""Sliding-window change detectors calibrated to an expected run time between false alarms.

At each step the latest ``window_size`` observations are compared with a fixed reference
(Cramér-von Mises gap for one feature, MMD for vectors). Thresholds are set by simulation
before the stream starts, as Cobb et al. (2022) do: bootstrap streams drawn from held-out
reference data are run through the same statistic and, step by step, the threshold is the
quantile that lets a fraction ``1 / ert`` of the streams *not yet stopped* cross it. The
false alarm rate per step is thus ``1 / ert`` whatever the step (memoryless), so the
expected run time between false alarms under no change is ``ert`` steps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import Any

import numpy as np

from detectors.drift.stats.mmd import sq_distances


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


class _CalibratedWindow(ABC):
    def __init__(self, window_size: int, ert: float) -> None:
        self.window_size, self.ert = window_size, ert
        self.window: deque[Any] = deque(maxlen=window_size)
        self.thresholds = np.empty(0)
        self.t = 0
        self.statistic = 0.0
        self.drift_detected = False

    @abstractmethod
    def _stat(self, window: np.ndarray) -> float:
        """The test statistic of the current window against the reference."""

    def update(self, x: Any) -> bool:
        """Add one observation; True when the window's statistic crosses this step's threshold."""
        if self.drift_detected:
            self.window.clear()
            self.t = 0
        self.window.append(x)
        self.t += 1
        if len(self.window) < self.window_size:
            self.drift_detected = False
            return False
        self.statistic = self._stat(np.asarray(self.window))
        step = min(self.t - self.window_size, self.thresholds.size - 1)
        self.drift_detected = bool(self.statistic > self.thresholds[step])
        return self.drift_detected


class OnlineCVM(_CalibratedWindow):
    """Univariate online detector: CVM gap between the last ``window_size`` values and the reference.

    Parameters
    ----------
    reference
        Reference values (at least ~500); a quarter is held out to simulate null streams.
    window_size
        Observations compared at each step.
    ert
        Expected run time (steps) between false alarms with no change.
    n_bootstraps
        Simulated streams used to set the thresholds.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = OnlineCVM(rng.normal(size=2000), window_size=50, ert=400, n_bootstraps=2000)
    >>> stream = np.r_[rng.normal(size=300), rng.normal(1.0, size=200)]
    >>> alarms = [i for i, x in enumerate(stream) if det.update(x)]
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
        ert: float = 500,
        n_bootstraps: int = 2000,
        horizon: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__(window_size, ert)
        rng = np.random.default_rng(seed)
        ref = rng.permutation(np.asarray(reference, dtype=np.float64))
        held = ref[: ref.size // 4]
        self.reference = np.sort(ref[ref.size // 4 :])
        streams = held[rng.integers(0, held.size, size=(n_bootstraps, window_size + horizon))]
        stats = np.empty((n_bootstraps, horizon + 1))
        for t in range(horizon + 1):
            stats[:, t] = self._stats_many(streams[:, t : t + window_size])
        self.thresholds = _calibrate(stats, ert)

    def _stats_many(self, windows: np.ndarray) -> np.ndarray:
        w = np.sort(windows, axis=1)
        n, m = self.reference.size, w.shape[1]
        ref_cdf = np.searchsorted(self.reference, w, side="right") / n
        win_cdf = np.arange(1, m + 1) / m
        return np.mean((ref_cdf - win_cdf) ** 2, axis=1)

    def _stat(self, window: np.ndarray) -> float:
        return float(self._stats_many(window[None, :])[0])


class OnlineMMD(_CalibratedWindow):
    """Multivariate online detector: MMD^2 between the last ``window_size`` vectors and the reference.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det = OnlineMMD(rng.normal(size=(600, 3)), window_size=30, ert=1000, n_bootstraps=2000)
    >>> stream = np.r_[rng.normal(size=(200, 3)), rng.normal(1.0, size=(100, 3))]
    >>> alarms = [i for i, x in enumerate(stream) if det.update(x)]
    >>> 200 <= alarms[0] < 240
    True

    References: Cobb, Van Looveren and Klaise, AISTATS 2022 (see ``OnlineCVM``).
    """

    def __init__(
        self,
        reference: np.ndarray,
        window_size: int = 30,
        ert: float = 500,
        n_bootstraps: int = 1000,
        horizon: int = 60,
        max_reference: int = 300,
        seed: int = 0,
    ) -> None:
        super().__init__(window_size, ert)
        rng = np.random.default_rng(seed)
        ref = np.asarray(reference, dtype=np.float64)
        ref = ref[rng.permutation(ref.shape[0])]
        held, kept = ref[: ref.shape[0] // 3], ref[ref.shape[0] // 3 :][:max_reference]
        self.reference = kept
        d = sq_distances(kept, kept)
        self.gamma = 1.0 / max(float(np.median(d[np.triu_indices_from(d, 1)])), 1e-12)
        self.k_ref_mean = float(np.exp(-self.gamma * d).mean())
        # Null simulation on the held-out pool: kernels computed once, windows as index sets.
        k_pool = np.exp(-self.gamma * sq_distances(held, held))
        k_cross = np.exp(-self.gamma * sq_distances(held, kept)).mean(1)
        idx = rng.integers(0, held.shape[0], size=(n_bootstraps, window_size + horizon))
        stats = np.empty((n_bootstraps, horizon + 1))
        for t in range(horizon + 1):
            w = idx[:, t : t + window_size]
            kww = k_pool[w[:, :, None], w[:, None, :]].mean(axis=(1, 2))
            stats[:, t] = self.k_ref_mean + kww - 2 * k_cross[w].mean(1)
        self.thresholds = _calibrate(stats, ert)

    def _stat(self, window: np.ndarray) -> float:
        kww = np.exp(-self.gamma * sq_distances(window, window)).mean()
        kwr = np.exp(-self.gamma * sq_distances(window, self.reference)).mean()
        return float(self.k_ref_mean + kww - 2 * kwr)
