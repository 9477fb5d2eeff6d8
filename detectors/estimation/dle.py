"""DLE: direct loss estimation for regression models.

A second model learns the first one's loss from its inputs and output on the labelled
reference: E[|y - ŷ| | x, ŷ] and E[(y - ŷ)² | x, ŷ]. A window's estimated MAE is the
mean predicted absolute error, its MSE the mean predicted squared error, RMSE the root.
Method: NannyML's DLE
(https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html#direct-loss-estimation-dle).

The loss model is scikit-learn's HistGradientBoostingRegressor: histogram gradient
boosting like LightGBM (which NannyML uses), as accurate on tabular data of this size,
with missing values handled natively, and in scikit-learn, which the calibration and
domain classifier need anyway: one well-kept dependency instead of two.

Examples
--------
>>> import numpy as np
>>> from detectors.estimation import DLE, Sample
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(4000, 1))
>>> y = x[:, 0] + rng.normal(size=4000) * (0.2 + np.abs(x[:, 0]))   # noisier far out
>>> pred = x[:, 0]
>>> est = DLE(["mae"]).fit(Sample(predictions=pred[:3000], labels=y[:3000], features=x[:3000]))
>>> far = np.abs(x[3000:, 0]) > 1
>>> window = Sample(predictions=pred[3000:][far], features=x[3000:][far])
>>> est.estimate(window)[0].value > est.reference_range(200)["mae"][0]
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from detectors.estimation.base import BAND_LEVEL, EstimationError, PerformanceEstimator, Sample, one_thread
from detectors.estimation.density_ratio import MAX_REFERENCE_ROWS, effective_sample_size, importance_weights
from detectors.estimation.metrics import REGRESSION_METRICS, regression_metric


def _design(sample: Sample) -> np.ndarray:
    if sample.predictions is None:
        raise EstimationError("DLE needs the model's prediction for every row")
    pred = np.asarray(sample.predictions, dtype=float)[:, None]
    if sample.features is None:
        return pred
    return np.hstack([np.asarray(sample.features, dtype=float), pred])


class _SingleThreaded:
    """A scikit-learn histogram gradient boosting model fitted on one thread (see
    ``one_thread``) and applied through its trees directly.

    ``predict`` sums the fitted trees' outputs as scikit-learn's own ``predict`` does, but
    without its per-call input validation, feature-name checks and thread-pool set-up:
    on a 100-row window those cost as much as the trees themselves. The input is the
    numeric matrix ``_design`` builds, already checked, so nothing is lost.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._trees: list[Any] = []
        self._baseline = 0.0
        self._categories: tuple[Any, Any] = (None, None)

    def fit(self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> _SingleThreaded:
        with one_thread():
            self.model.fit(x, y, sample_weight=sample_weight)
        try:
            # One tree per iteration (single-output regression). These are scikit-learn's
            # private attributes: a version without them falls back to its public predict.
            self._trees = [trees[0] for trees in self.model._predictors]
            self._baseline = float(np.asarray(self.model._baseline_prediction).ravel()[0])
            self._categories = self.model._bin_mapper.make_known_categories_bitsets()
        except AttributeError:
            self._trees = []
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not self._trees:
            with one_thread():
                return np.asarray(self.model.predict(x))
        x = np.ascontiguousarray(x, dtype=np.float64)
        known_categories, feature_map = self._categories
        out = np.full(x.shape[0], self._baseline)
        for tree in self._trees:
            out += tree.predict(x, known_categories, feature_map, 1)
        return out


class DLE(PerformanceEstimator):
    """Direct loss estimation (regression).

    Parameters
    ----------
    metrics
        Any of mae, mse, rmse.
    threshold
        An estimate worse than the reference range by more than this fraction of the
        reference value is an alarm.
    shift_robust
        Refit the loss models per window on reference rows weighted by the density ratio
        (as PAPE does for CBPE); costs two model fits per window.
    seed
        Seed of the holdout split and the models.

    References
    ----------
    NannyML, "Direct Loss Estimation (DLE)", NannyML documentation, 2022.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("mae",),
        threshold: float = 0.0,
        shift_robust: bool = False,
        seed: int = 0,
    ) -> None:
        unknown = sorted(set(metrics) - set(REGRESSION_METRICS))
        if unknown:
            raise EstimationError(f"DLE cannot estimate {unknown}; known: {', '.join(REGRESSION_METRICS)}")
        super().__init__(metrics, threshold, seed)
        self.shift_robust = shift_robust
        self.seed = seed
        self.quality: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        self._resid_sd: dict[str, float] = {}

    def _new_model(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingRegressor

        return _SingleThreaded(
            # LightGBM's defaults (NannyML's DLE model), including no early stopping:
            # scikit-learn's "auto" early stopping (on above 10,000 rows) held a tenth of the
            # reference out and stopped on the noisy per-row loss after 30-60 trees, which
            # extrapolated worse into shifted windows (docs/estimation.md).
            HistGradientBoostingRegressor(
                max_iter=100,
                learning_rate=0.1,
                max_leaf_nodes=31,
                min_samples_leaf=20,
                early_stopping=False,
                random_state=self.seed,
            )
        )

    def _targets(self, sample: Sample) -> dict[str, np.ndarray]:
        assert sample.labels is not None and sample.predictions is not None
        err = np.abs(np.asarray(sample.labels, dtype=float) - np.asarray(sample.predictions, dtype=float))
        return {"abs": err, "sq": err**2}

    def _fit(self, reference: Sample) -> None:
        x = _design(reference)
        targets = self._targets(reference)
        if not np.all(np.isfinite(targets["abs"])):
            raise EstimationError("reference labels and predictions must be finite numbers")
        n = x.shape[0]
        if n < 20:
            raise EstimationError(f"DLE needs at least 20 labelled reference rows, got {n}")
        # Residual spread and quality of the loss models on a held-out quarter.
        hold = np.random.default_rng(self.seed).permutation(n) < n // 4
        for name, t in targets.items():
            m = self._new_model().fit(x[~hold], t[~hold])
            pred = m.predict(x[hold])
            resid = t[hold] - pred
            self._resid_sd[name] = float(resid.std(ddof=1))
            var = float(t[hold].var())
            self.quality[f"r2_{name}_loss"] = 1 - float((resid**2).mean()) / var if var > 0 else math.nan
            self._models[name] = self._new_model().fit(x, t)
        n_all = len(reference)
        self._subset = (
            np.sort(self.rng.choice(n_all, MAX_REFERENCE_ROWS, replace=False))
            if self.shift_robust and n_all > MAX_REFERENCE_ROWS
            else None
        )

    def _loss_models(self, analysis: Sample) -> dict[str, Any]:
        if not self.shift_robust:
            return self._models
        ref = self.reference
        assert ref is not None
        if ref.features is None or analysis.features is None:
            raise EstimationError("shift_robust DLE needs the features of the reference and the window")
        sub = ref if self._subset is None else ref.take(self._subset)
        assert sub.features is not None
        w = importance_weights(sub.features, np.asarray(analysis.features, dtype=float), self.seed)
        self.quality["effective_reference_rows"] = effective_sample_size(w)
        x = _design(sub)
        return {name: self._new_model().fit(x, t, sample_weight=w) for name, t in self._targets(sub).items()}

    def _estimate_window(self, analysis: Sample) -> dict[str, tuple[float, float, float, float]]:
        x = _design(analysis)
        if not np.all(np.isfinite(x[:, -1])):
            raise EstimationError("predictions must be finite numbers")
        n = x.shape[0]
        models = self._loss_models(analysis)
        abs_hat = np.maximum(models["abs"].predict(x), 0.0)
        sq_hat = np.maximum(models["sq"].predict(x), 0.0)
        z = NormalDist().inv_cdf(0.5 + BAND_LEVEL / 2)
        out = {}
        mae = float(abs_hat.mean())
        mae_se = self._resid_sd["abs"] / math.sqrt(n)
        mse = float(sq_hat.mean())
        mse_se = self._resid_sd["sq"] / math.sqrt(n)
        for metric in self.metrics:
            if metric == "mae":
                out[metric] = (mae, mae - z * mae_se, mae + z * mae_se, mae_se)
            elif metric == "mse":
                out[metric] = (mse, max(mse - z * mse_se, 0.0), mse + z * mse_se, mse_se)
            else:
                rmse = math.sqrt(mse)
                lo, hi = math.sqrt(max(mse - z * mse_se, 0.0)), math.sqrt(mse + z * mse_se)
                out[metric] = (rmse, lo, hi, mse_se / (2 * rmse) if rmse > 0 else 0.0)
        return out

    def _realised(self, sample: Sample) -> dict[str, float]:
        err = self._targets(sample)["abs"]
        return {m: regression_metric(m, err) for m in self.metrics}

    def describe(self) -> dict[str, Any]:
        return {"estimator": "dle", "shift_robust": self.shift_robust, "loss_model": self.quality}
