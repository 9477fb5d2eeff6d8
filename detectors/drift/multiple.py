"""Multiple-testing control across the features of one monitor.

With 50 features tested at 5% each, some feature drifts by chance in most windows; a
monitor alarms only when a corrected decision says so, which keeps the monitor's own false
alarm rate at ``alpha`` under no drift (Bonferroni: family-wise error; Benjamini-Hochberg:
false discovery rate, which equals the family-wise rate when nothing drifts).
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


def correct(p_values: Sequence[float], alpha: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p-values and rejections by ``method``: ``bh``, ``bonferroni`` or ``none``."""
    if method == "bh":
        return benjamini_hochberg(p_values, alpha)
    if method == "bonferroni":
        return bonferroni(p_values, alpha)
    if method == "none":
        p = np.asarray(p_values, dtype=np.float64)
        return p, p <= alpha
    raise ValueError(f"unknown correction {method!r}; expected bh, bonferroni or none")
