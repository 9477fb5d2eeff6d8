"""Maximum mean discrepancy with a permutation test."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detectors.drift.profile import ReferenceProfile


@dataclass(frozen=True)
class MultivariateResult:
    test: str
    statistic: float
    p_value: float | None
    n_reference: int
    n_current: int
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


class MMD:
    """Kernel two-sample test on feature vectors or embeddings (Gaussian RBF kernel).

    The reference rows, the kernel bandwidth (median heuristic) and the reference kernel
    matrix are computed once; a window adds only its own and its cross kernel blocks. The
    p-value comes from ``permutations`` random relabellings of the pooled sample, all
    evaluated as one matrix product ``A^T K A``. Windows and references larger than
    ``max_rows`` are subsampled (the test stays exact; power is that of the subsample).

    Parameters
    ----------
    reference
        Reference rows (n x d), already standardised.
    permutations
        Number of label permutations for the p-value (resolution 1 / (permutations + 1)).
    max_rows
        Most rows used from the reference and from each window.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> mmd = MMD(rng.normal(size=(300, 5)), permutations=200)
    >>> mmd.test(rng.normal(size=(200, 5))).p_value > 0.05
    True
    >>> mmd.test(rng.normal(size=(200, 5)) @ np.diag([2, 1, 1, 1, 1])).p_value < 0.01
    True

    References
    ----------
    A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schölkopf and A. Smola, "A kernel
    two-sample test", Journal of Machine Learning Research 13, 2012.
    """

    name = "mmd"

    def __init__(
        self, reference: np.ndarray, *, permutations: int = 200, max_rows: int = 500, seed: int = 0
    ) -> None:
        self.rng = np.random.default_rng(seed)
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape[0] > max_rows:
            ref = ref[self.rng.choice(ref.shape[0], max_rows, replace=False)]
        self.reference = ref
        self.permutations = permutations
        self.max_rows = max_rows
        d = sq_distances(ref, ref)
        off_diag = d[np.triu_indices_from(d, k=1)]
        med = float(np.median(off_diag)) if off_diag.size else 1.0
        self.gamma = 1.0 / max(med, 1e-12)
        self.k_ref = np.exp(-self.gamma * d)

    @classmethod
    def for_reference(cls, profile: ReferenceProfile, **kw: Any) -> MMD:
        """The MMD test of a reference profile, built once and kept on the profile."""
        cached = profile.__dict__.get("_mmd")
        if cached is None:
            assert profile.matrix is not None
            cached = cls(profile.matrix, **kw)
            profile.__dict__["_mmd"] = cached
        return cached

    def kernel(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-self.gamma * sq_distances(a, b))

    def test(self, window: np.ndarray) -> MultivariateResult:
        win = np.asarray(window, dtype=np.float64)
        if win.shape[0] > self.max_rows:
            win = win[self.rng.choice(win.shape[0], self.max_rows, replace=False)]
        n, m = self.reference.shape[0], win.shape[0]
        if n < 2 or m < 2:
            return MultivariateResult(self.name, 0.0, None, n, m, {})
        k_xy = self.kernel(self.reference, win)
        pooled = np.block([[self.k_ref, k_xy], [k_xy.T, self.kernel(win, win)]])
        # Column 0: the observed labelling; the others: random relabellings.
        labels = np.zeros((n + m, self.permutations + 1), dtype=bool)
        labels[n:, 0] = True
        for b in range(1, self.permutations + 1):
            labels[self.rng.choice(n + m, m, replace=False), b] = True
        weights = np.where(labels, -1.0 / m, 1.0 / n)
        stats = np.einsum("ib,ib->b", weights, pooled @ weights)
        observed = float(stats[0])
        p = float((1 + np.sum(stats[1:] >= observed)) / (self.permutations + 1))
        return MultivariateResult(
            self.name, observed, p, n, m, {"gamma": self.gamma, "permutations": self.permutations}
        )
