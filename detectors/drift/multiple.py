"""Multiple-testing control across the features of one monitor.

With 50 features tested at 5% each, some feature drifts by chance in most windows; a
monitor alarms only when a corrected decision says so, which keeps the monitor's own false
alarm rate at ``alpha`` under no drift (min-P and Bonferroni: family-wise error;
Benjamini-Hochberg: false discovery rate, which equals the family-wise rate when nothing
drifts). min-P, the default, is calibrated on the reference to how features move together.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bonferroni(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values ``min(1, k p)`` and rejections at ``alpha``.

    >>> adj, rej = bonferroni([0.001, 0.02, 0.5], 0.05)
    >>> adj.round(3).tolist(), rej.tolist()
    ([0.003, 0.06, 1.0], [True, False, False])

    C. E. Bonferroni, "Teoria statistica delle classi e calcolo delle probabilità", 1936.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adj = np.minimum(p * p.size, 1.0)
    return adj, adj <= alpha


def benjamini_hochberg(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Step-up adjusted p-values (q-values) and rejections at false discovery rate ``alpha``.

    >>> adj, rej = benjamini_hochberg([0.001, 0.02, 0.03, 0.5], 0.05)
    >>> adj.round(3).tolist(), rej.tolist()
    ([0.004, 0.04, 0.04, 0.5], [True, True, True, False])

    Y. Benjamini and Y. Hochberg, "Controlling the false discovery rate: a practical and
    powerful approach to multiple testing", JRSS B 57(1), 1995.
    """
    p = np.asarray(p_values, dtype=np.float64)
    k = p.size
    if k == 0:
        return p, p.astype(bool)
    order = np.argsort(p)
    ranked = p[order] * k / np.arange(1, k + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.empty(k)
    adj[order] = np.minimum(ranked, 1.0)
    return adj, adj <= alpha


def min_p(
    p_values: Sequence[float], alpha: float, null_min_p: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Westfall-Young single-step min-P adjusted p-values and rejections at ``alpha``.

    ``null_min_p`` is a sample of the family's smallest p-value under no drift (see
    ``detectors.drift.min_p``); each p-value is adjusted to the share of that sample at or
    below it, a Monte Carlo p-value. The true adjusted value lies between the raw p-value and
    Bonferroni's, so the estimate is kept in that range (beyond the resampling's resolution,
    ``1 / (len(null_min_p) + 1)``, Bonferroni's bound takes over). Without a null sample
    this is Bonferroni.

    >>> null = np.linspace(0.005, 1, 200)  # smallest p-values of 200 no-drift windows
    >>> adj, rej = min_p([0.001, 0.02, 0.5], 0.05, null)
    >>> adj.round(3).tolist(), rej.tolist()  # Bonferroni: 0.003, 0.06, 1.0
    ([0.003, 0.025, 0.502], [True, True, False])

    P. H. Westfall and S. S. Young, "Resampling-Based Multiple Testing", Wiley, 1993.
    """
    p = np.asarray(p_values, dtype=np.float64)
    bound = np.minimum(p * p.size, 1.0)
    if null_min_p is None or not len(null_min_p):
        return bound, bound <= alpha
    null = np.sort(np.asarray(null_min_p, dtype=np.float64))
    monte_carlo = (1.0 + np.searchsorted(null, p, side="right")) / (null.size + 1.0)
    adj = np.clip(np.minimum(monte_carlo, bound), p, 1.0)
    return adj, adj <= alpha


def correct(
    p_values: Sequence[float], alpha: float, method: str, null_min_p: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values and rejections by ``method``: ``minp`` (with ``null_min_p``; see
    ``min_p``), ``bh``, ``bonferroni`` or ``none``."""
    if method == "minp":
        return min_p(p_values, alpha, null_min_p)
    if method == "bh":
        return benjamini_hochberg(p_values, alpha)
    if method == "bonferroni":
        return bonferroni(p_values, alpha)
    if method == "none":
        p = np.asarray(p_values, dtype=np.float64)
        return p, p <= alpha
    raise ValueError(f"unknown correction {method!r}; expected minp, bh, bonferroni or none")
