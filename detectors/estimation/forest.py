"""LightGBM's trees applied by mlvigil_native's ``Forest`` (native/tree-eval), not by LightGBM.

A DLE window's cost is applying the loss models' trees (97% of it on the benchmark's
5000-row windows); LightGBM's predictor spends most of that per row (a row copied to
pairs, then to a buffer). ``Forest`` applies them with LightGBM's decision rules, so the
predictions are LightGBM's to the last bit (tests/test_forest.py holds them equal on random
rows with NaNs, zeros and categorical features; ``predict_together`` applies several
forests, DLE's loss models, to one window in one call): by QuickScorer (bit masks of each tree's
leaves, eight rows compared with each threshold at once) when every split is a plain
``<=`` and a tree has at most 32 leaves, as DLE's loss models usually are; otherwise by
walking blocks of rows through the trees laid out in flat arrays. ``compile_booster``
returns None where the native module lacks ``Forest`` (an older build) or the model has
something it does not reproduce (linear trees, several trees per iteration, an objective
whose output is transformed): the caller then uses LightGBM's own predictor.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    from mlvigil_native import Forest as _NativeForest
except ImportError:  # no native module, or one built before Forest existed
    _NativeForest = None
try:
    from mlvigil_native import predict_forests as _predict_forests
except ImportError:  # a build before predict_forests: one call per forest
    _predict_forests = None
try:
    from mlvigil_native import Forests as _NativeForests
except ImportError:  # a build before Forests: predict_forests
    _NativeForests = None

#: Objectives whose prediction is the raw score (LightGBM's ConvertOutput is the identity).
_RAW_OBJECTIVES = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}


class _Unsupported(Exception):
    """A tree Forest does not reproduce (a linear tree's leaves)."""


class NativeForest:
    """A booster's trees in mlvigil_native's ``Forest``; ``predict`` is the booster's."""

    def __init__(self, forest: Any) -> None:
        self._forest = forest
        #: Threads ``predict`` and ``predict_together`` use unless told: 0, a thread per core
        #: once each has enough rows (1024) to pay for its start.
        self.threads = 0
        #: The forests ``join`` laid out together with this one (first), and their layout.
        self._joint: tuple[tuple[NativeForest, ...], Any] | None = None

    def predict(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        """The booster's prediction of each row, on ``threads`` threads (default
        ``self.threads``). Identical for any ``threads``."""
        out = np.empty(x.shape[0])
        self._forest.predict(
            np.ascontiguousarray(x, dtype=np.float64),
            out,
            threads=self.threads if threads is None else threads,
        )
        return out


def join(forests: Sequence[NativeForest]) -> None:
    """Lay out forests that will be applied to the same rows (``predict_together``) in one
    joint QuickScorer layout (mlvigil_native's ``Forests``; ~0.1 s, once per fit): each row's
    value of a feature read once and a threshold the forests share tested once, 5-14% less
    CPU for DLE's two loss models. Kept on the first forest; the predictions do not change."""
    if len(forests) > 1 and _NativeForests is not None:
        forests[0]._joint = (tuple(forests), _NativeForests([f._forest for f in forests]))


def predict_together(forests: Sequence[NativeForest], x: np.ndarray) -> np.ndarray:
    """Each forest's prediction of each row of ``x`` (row ``i`` of the result: forest
    ``i``'s, identical to its ``predict``), in one native call: one copy of the window and one
    start of the threads for all of them (the first forest's ``threads``), each thread
    applying every forest to its rows while they are in cache; by their joint layout where
    ``join`` made one for these forests in this order."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    out = np.empty((len(forests), x.shape[0]))
    if not forests:
        return out
    threads = forests[0].threads
    joint = forests[0]._joint
    if joint is not None and len(joint[0]) == len(forests) and all(map(operator.is_, joint[0], forests)):
        joint[1].predict(x, out, threads=threads)
    elif _predict_forests is None:
        for i, forest in enumerate(forests):
            out[i] = forest.predict(x, threads)
    else:
        _predict_forests([f._forest for f in forests], x, out, threads=threads)
    return out


def _tree_arrays(root: dict[str, Any]) -> tuple[list[Any], ...]:
    """One tree of ``dump_model()`` as Forest's arrays, splits numbered in pre-order (so a
    branch always leads forward) and leaves in the order met."""
    feature: list[int] = []
    threshold: list[float] = []
    decision: list[int] = []
    left: list[int] = []
    right: list[int] = []
    categories: list[list[int]] = []
    leaves: list[float] = []

    def visit(node: dict[str, Any]) -> int:
        if "split_index" not in node:
            if "leaf_coeff" in node:
                raise _Unsupported("linear tree")
            leaves.append(float(node["leaf_value"]))
            return -len(leaves)  # leaf i as -1 - i
        i = len(feature)
        feature.append(int(node["split_feature"]))
        code = _MISSING[node["missing_type"]] | (4 if node["default_left"] else 0)
        if node["decision_type"] == "==":
            categories.append([int(c) for c in str(node["threshold"]).split("||")])
            threshold.append(0.0)
            code |= 8
        elif node["decision_type"] == "<=":
            categories.append([])
            threshold.append(float(node["threshold"]))
        else:
            raise _Unsupported(f"decision type {node['decision_type']!r}")
        decision.append(code)
        left.append(0)
        right.append(0)
        left[i] = visit(node["left_child"])
        right[i] = visit(node["right_child"])
        return i

    visit(root)
    return feature, threshold, decision, left, right, categories, leaves


def compile_booster(booster: Any) -> NativeForest | None:
    """``booster``'s trees as a NativeForest, or None when LightGBM must apply them."""
    if _NativeForest is None:
        return None
    dump = booster.dump_model()
    objective = str(dump.get("objective", "")).split()
    if (
        dump.get("num_tree_per_iteration", 1) != 1
        or not objective
        or objective[0] not in _RAW_OBJECTIVES
        or "sqrt" in objective
    ):
        return None
    try:
        trees = [_tree_arrays(info["tree_structure"]) for info in dump["tree_info"]]
    except _Unsupported:
        return None
    return NativeForest(_NativeForest(trees, average_output=bool(dump.get("average_output", False))))
