"""CBPE's estimated ROC AUC, mlvigil's formula vs NannyML's, over many splits and windows.

    PYTHONPATH=. python -m bench.performance_estimation.auc_check [--splits 6] [--window-seeds 5]

The two estimators get the same calibrated probabilities q of a window and differ only in
how they turn them into an expected AUC. mlvigil's (metrics.soft_auc) counts every
(positive, negative) pair of two distinct rows, each weighted q_i (1 - q_j):
A / B. NannyML 0.13 (``estimate_roc_auc`` in
nannyml/performance_estimation/confidence_based/metrics.py, restated in ``nannyml_auc``
below) draws the ROC curve of the cumulative q, which also counts each row paired with
itself, half: (A + S/2) / (B + S), S = sum q (1 - q), a pull towards 0.5. On one
benchmark run (16 windows of 100 rows) the two differ by less than the windows' noise, so
this runs breast_cancer's case over ``splits`` train/reference/pool splits x
``window_seeds`` window draws and reports, for each formula, the mean absolute error
against the realised AUC and against the Monte-Carlo mean of the realised AUC with labels
drawn from q (what both formulas aim at, if the calibration is right).
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.performance_estimation.datasets import sklearn_case
from bench.performance_estimation.run import _sample
from detectors.estimation import CBPE
from detectors.estimation.metrics import soft_auc

#: Label draws per window for the Monte-Carlo expectation.
DRAWS = 4000


def nannyml_auc(calibrated: np.ndarray, score: np.ndarray) -> float:
    """NannyML 0.13.1's ``estimate_roc_auc``: the trapezoid area of the ROC curve of the
    cumulative calibrated probabilities, rows ordered by descending score."""
    q = calibrated[np.argsort(score)[::-1]]
    tps = np.r_[0.0, np.round(np.cumsum(q), 5)]
    fps = np.r_[0.0, np.round(1 + np.arange(q.size) - np.cumsum(q), 5)]
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def windows(splits: int, window_seeds: int, dataset: str = "breast_cancer") -> np.ndarray:
    """Rows (mlvigil, NannyML, realised, Monte-Carlo mean) per window."""
    rng = np.random.default_rng(0)
    rows = []
    for split in range(splits):
        for window_seed in range(1, window_seeds + 1):
            case = sklearn_case(dataset, split_seed=split, window_seed=window_seed)
            est = CBPE(["auc"]).fit(_sample(case, case.reference, labels=True))
            for _, frame in case.analysis.groupby("window"):
                window = _sample(case, frame, labels=True)
                assert window.scores is not None
                q = est.calibrator.predict(window.scores)
                ours = float(soft_auc(window.scores, q[None], hard=False)[0])
                drawn = (rng.random((DRAWS, q.size)) < q).astype(float)
                mc = float(np.nanmean(soft_auc(window.scores, drawn, hard=True)))
                realised = est.realised(window)["auc"]
                rows.append((ours, nannyml_auc(q, window.scores), realised, mc))
    return np.asarray(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=6)
    parser.add_argument("--window-seeds", type=int, default=5)
    args = parser.parse_args(argv)
    got = windows(args.splits, args.window_seeds)
    ok = ~np.isnan(got).any(axis=1)
    got = got[ok]
    runs = f"{args.splits} splits x {args.window_seeds} window draws"
    print(f"breast_cancer, {len(got)} windows of 100 rows ({runs})")
    print(f"{'':28} {'mlvigil':>9} {'NannyML':>9}")
    for label, target in (("MAE vs realised AUC", 2), ("MAE vs Monte-Carlo mean", 3)):
        ours, theirs = np.abs(got[:, 0] - got[:, target]).mean(), np.abs(got[:, 1] - got[:, target]).mean()
        print(f"{label:28} {ours:9.5f} {theirs:9.5f}")
    bias = (got[:, :2] - got[:, 2:3]).mean(axis=0)
    print(f"{'bias vs realised AUC':28} {bias[0]:9.5f} {bias[1]:9.5f}")
    # Paired: per window, how much closer mlvigil's estimate is (positive: closer).
    gain = np.abs(got[:, 1] - got[:, 2]) - np.abs(got[:, 0] - got[:, 2])
    se = gain.std(ddof=1) / np.sqrt(gain.size)
    print(
        f"mlvigil closer to the realised AUC by {gain.mean():.5f} +- {1.96 * se:.5f} (95%, paired by window)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
