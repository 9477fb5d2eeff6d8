"""Wasserstein-1 (earth mover's) distance, scaled by the reference standard deviation."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from scipy.stats import gamma

from detectors.drift.profile import FeatureProfile, NumericProfile
from detectors.drift.stats.base import TestResult, UnivariateTest, merge, require_numeric

_NULL_DRAWS = 200
_NULL_SIZE = 2000


def _null_fit(prof: NumericProfile) -> tuple[float, float]:
    """Gamma fit (shape, scale) of ``sqrt(m) * W1 / scale`` between a size-m bootstrap draw
    from the reference and the reference: the null law of the scaled distance, once per profile."""
    cached = prof.__dict__.get("_wasserstein_null")
    if cached is not None:
        return cached
    ref = prof.sorted
    n = ref.size
    m0 = min(n, _NULL_SIZE)
    rng = np.random.default_rng(12345)
    idx = rng.integers(0, n, size=(_NULL_DRAWS, m0))
    # Counts of each reference point per draw, as one bincount over (draw, index) pairs.
    counts = np.bincount((idx + n * np.arange(_NULL_DRAWS)[:, None]).ravel(), minlength=_NULL_DRAWS * n)
    cdf_draw = np.cumsum(counts.reshape(_NULL_DRAWS, n), axis=1)[:, :-1] / m0
    cdf_ref = np.arange(1, n) / n
    widths = np.diff(ref)
    w = np.abs(cdf_draw - cdf_ref) @ widths / prof.scale
    u = w * math.sqrt(m0)
    mean, var = float(u.mean()), float(u.var(ddof=1))
    fit = (mean * mean / var, var / mean) if var > 0 and mean > 0 else (1.0, max(mean, 1e-12))
    prof.__dict__["_wasserstein_null"] = fit
    return fit


class Wasserstein(UnivariateTest):
    """Area between the two empirical CDFs, in units of the reference standard deviation.

    A distance first (threshold 0.1 by convention, as in Evidently's normed Wasserstein);
    the p-value comes from a gamma law fitted once per profile to bootstrap draws from the
    reference, rescaled to the window and reference sizes (the distance shrinks as
    ``sqrt(1/n + 1/m)`` under no drift).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> w = Wasserstein()
    >>> round(w.two_sample(rng.normal(size=5000), rng.normal(0.5, size=5000)).distance, 1)
    0.5

    References
    ----------
    L. N. Vaserstein, "Markov processes over denumerable products of spaces describing
    large systems of automata", Problems of Information Transmission 5(3), 1969.
    """

    name = "wasserstein"
    accepts: ClassVar[frozenset[str]] = frozenset({"numeric"})
    default_threshold = 0.1

    def compare(self, profile: FeatureProfile, current: np.ndarray) -> TestResult:
        prof = require_numeric(profile, self.name)
        n, m = prof.n, int(current.size)
        if n < 2 or m == 0:
            return TestResult(self.name, 0.0, None, 0.0, n, m)
        mg = merge(prof.sorted, current)
        gap = np.abs(mg.ref_cdf - mg.cur_cdf)[:-1]
        w = float(gap @ np.diff(mg.values))
        dist = w / prof.scale
        shape, scale = _null_fit(prof)
        z = dist / math.sqrt(1.0 / n + 1.0 / m)
        return TestResult(self.name, w, float(gamma.sf(z, shape, scale=scale)), dist, n, m)
