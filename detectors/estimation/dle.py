"""DLE: direct loss estimation for regression models.

A second model learns the first one's loss from its inputs and output on the labelled
reference: E[|y - ŷ| | x, ŷ] and E[(y - ŷ)² | x, ŷ]. A window's estimated MAE is the
mean predicted absolute error, its MSE the mean predicted squared error, RMSE the root.
Method: NannyML's DLE
(https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html#direct-loss-estimation-dle).

The loss model is LightGBM with its default settings, the model NannyML's DLE uses:
NannyML's accuracy is the benchmark, and no smaller model (fewer trees, at the same or a
higher learning rate) was at least as accurate on both regression datasets
(docs/estimation.md). Its predictor applies the trees about twice as fast as
scikit-learn's, and it needs at least 3 rows in a histogram bin, which keeps a small
reference's split points from resting on one or two rows. Only the models the metrics
need are fitted: |e| for MAE, e² for MSE and RMSE. Applying the trees is a window's
whole cost: mlvigil_native's ``Forest`` applies them (LightGBM's predictions to the last
bit, faster; LightGBM's predictor where the native module is missing), and each row's
predicted loss is kept until the next window (``LossCache``): a sliding window predicts
only its new rows.

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

from detectors.estimation.base import BAND_LEVEL, EstimationError, PerformanceEstimator, Sample
from detectors.estimation.density_ratio import DensityRatio, effective_sample_size
from detectors.estimation.forest import NativeForest, compile_booster, join, predict_together
from detectors.estimation.metrics import REGRESSION_METRICS, regression_metric

try:
    from mlvigil_native import LastRows as _NativeLastRows
except ImportError:  # no native module, or an older build without it: _LastRows
    _NativeLastRows = None


def _design(sample: Sample) -> np.ndarray:
    """The loss models' input: the features, then the prediction, one row a row (a new
    array, which the caller may keep)."""
    if sample.predictions is None:
        raise EstimationError("DLE needs the model's prediction for every row")
    pred = np.asarray(sample.predictions, dtype=float)
    if sample.features is None:
        return pred[:, None].copy()
    features = np.asarray(sample.features, dtype=float)
    x = np.empty((features.shape[0], features.shape[1] + 1))
    x[:, :-1] = features
    x[:, -1] = pred
    return x


#: LightGBM's defaults, spelled out so that a new LightGBM release cannot change them,
#: on one thread: the models are small and the service has other work (base.one_thread).
LOSS_MODEL_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "max_bin": 255,
    "min_data_in_bin": 3,
    "num_threads": 1,
    "deterministic": True,
    "verbosity": -1,
}
LOSS_MODEL_TREES = 100
#: The metrics each loss target serves: |e| for MAE, e² for MSE and RMSE.
_TARGET_OF = {"mae": "abs", "mse": "sq", "rmse": "sq"}


class _LossModel:
    """A LightGBM model of one loss target, applied by mlvigil_native's ``Forest`` (the same
    predictions, 6-8x faster on one thread: detectors/estimation/forest.py), else through its
    booster on one thread."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.booster: Any = None
        self.native: NativeForest | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> _LossModel:
        try:
            import lightgbm
        except (ImportError, OSError) as exc:  # OSError: no OpenMP runtime for its library
            raise ImportError(
                f"DLE needs LightGBM ({exc}): pip install 'mlvigil[estimation]'; on Linux it also "
                "needs the OpenMP runtime (Debian: apt-get install libgomp1)",
                name="lightgbm",
            ) from exc

        data = lightgbm.Dataset(x, y, free_raw_data=True)
        params = {**LOSS_MODEL_PARAMS, "seed": self.seed}
        self.booster = lightgbm.train(params, data, num_boost_round=LOSS_MODEL_TREES)
        return self

    def for_windows(self) -> _LossModel:
        """Lay the trees out for ``Forest`` (~0.1 s, once per fit: worth it for a model
        applied to every window, not for one applied once)."""
        self.native = compile_booster(self.booster)
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.native is not None:
            return self.native.predict(x)
        return np.asarray(self.booster.predict(x, num_threads=1))

    def fit_weighted(self, data: Any, weight: np.ndarray) -> _LossModel:
        """Fit on ``data``, a LightGBM Dataset already binned, with the rows weighted by
        ``weight``: the shift-robust refit, which bins the reference once, not per window.
        Applied once, to one window, by the booster: laying the trees out for ``Forest``
        (``dump_model``) costs more than it saves on one window."""
        import lightgbm

        data.set_weight(weight)
        params = {**LOSS_MODEL_PARAMS, "seed": self.seed}
        # keep_training_booster: the booster is used as is, not round-tripped through text.
        self.booster = lightgbm.train(
            params, data, num_boost_round=LOSS_MODEL_TREES, keep_training_booster=True
        )
        return self


def _predict_losses(models: dict[str, _LossModel], x: np.ndarray) -> dict[str, np.ndarray]:
    """Each model's predicted loss for the rows of ``x``: models applied by ``Forest`` in one
    native call (one copy of the rows, one start of the threads), others one by one."""
    natives = [model.native for model in models.values()]
    if len(natives) > 1 and all(isinstance(f, NativeForest) for f in natives):
        return dict(zip(models, predict_together(natives, x), strict=True))  # type: ignore[arg-type]
    return {name: np.asarray(model.predict(x), dtype=float) for name, model in models.items()}


class _LastRows:
    """mlvigil_native's ``LastRows`` in numpy, where the native module lacks it: the rows of
    the last window, found again in the next by their hash, then their values.

    The index maps the top ``slot_bits`` of a row's hash to a last-window row; a slot several
    rows share is marked crowded and its other rows are kept, sorted by hash, for a search.
    """

    def __init__(self, slot_bits: int) -> None:
        self.slot_bits = slot_bits
        self.keys = np.zeros(0, dtype=np.uint64)
        self.slots = np.zeros(0, dtype=np.intp)
        #: Per slot, 1 + the last window's row there, negated where the slot is crowded
        #: (0: none).
        self.index = np.zeros(1 << slot_bits, dtype=np.int32)
        #: The rows whose slot another row holds, and their hashes, sorted by hash.
        self.crowded_keys = np.zeros(0, dtype=np.uint64)
        self.crowded_rows = np.zeros(0, dtype=np.intp)
        self.rows = np.zeros((0, 0))
        self._mult = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return int(self.keys.size)

    def _keys(self, x: np.ndarray) -> np.ndarray:
        """A 64-bit hash of each row's bytes: the sum of its words times odd constants (rows
        that differ in one word always differ), then mixed so that the top bits are even."""
        words = np.ascontiguousarray(x, dtype=float).view(np.uint64)
        if self._mult.size != words.shape[1]:
            odd = np.random.default_rng(0x10553CAC4E).integers(0, 1 << 63, words.shape[1], np.uint64)
            self._mult = odd * np.uint64(2) + np.uint64(1)
        with np.errstate(over="ignore"):
            h = words @ self._mult
            h ^= h >> np.uint64(29)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(32)
        return h

    def match_and_keep(self, x: np.ndarray, found: np.ndarray) -> None:
        """As the native ``LastRows.match_and_keep``: per row of ``x``, the index of an equal
        row among the last call's, or -1, into ``found``; then keeps ``x``'s rows."""
        keys = self._keys(x)
        slots = (keys >> np.uint64(64 - self.slot_bits)).astype(np.intp)
        found[:] = -1
        if self.keys.size and self.rows.shape[1] == x.shape[1]:
            held = self.index[slots]
            at = np.abs(held).astype(np.intp) - 1
            look = np.flatnonzero(held)
            same_key = self.keys[at[look]] == keys[look]
            match = look[same_key]
            # In a crowded slot, not its holder: one of the rows that lost the slot?
            crowded = look[~same_key & (held[look] < 0)]
            if crowded.size:
                pos = np.searchsorted(self.crowded_keys, keys[crowded])
                pos = np.minimum(pos, self.crowded_keys.size - 1)
                hit = self.crowded_keys[pos] == keys[crowded]
                at[crowded[hit]] = self.crowded_rows[pos[hit]]
                match = np.concatenate([match, crowded[hit]])
            # Same hash and the same values (NaN never equals, so a row with one is not found).
            same = match[np.all(self.rows[at[match]] == x[match], axis=1)]
            found[same] = at[same]
        self.index[self.slots] = 0
        row = np.arange(1, x.shape[0] + 1, dtype=np.int32)
        self.index[slots] = row
        holder = self.index[slots]
        lost = np.flatnonzero(holder != row)  # rows whose slot another row holds
        self.index[slots[lost]] = -holder[lost]
        order = np.argsort(keys[lost])
        self.crowded_keys, self.crowded_rows = keys[lost][order], lost[order]
        self.keys, self.slots = keys, slots
        self.rows = np.array(x, dtype=float)


class LossCache:
    """The last window's rows and each loss model's predicted loss for them, so that the
    next window predicts only its new rows.

    A sliding window (the monitor's default mode) is mostly the rows of the one before; the
    trees are most of a window's cost, so a window that shares 90% of its rows costs about
    a tenth. Rows are matched by their design values (features and prediction):
    mlvigil_native's ``LastRows`` (native/tree-eval/src/last_rows.rs; ``_LastRows`` where
    the module lacks it) finds each row's equal among the last window's by a hash of its
    values, then compares the values, so a hit is the same row and a collision costs a
    comparison, never a wrong value. One match serves every loss model. Only the last
    window is kept: memory is bounded by the window and the index (``SLOT_BITS``). A window
    that shares no rows with the last (the tumbling mode) costs its hashes and one look-up
    each: ~0.1 ms of CPU for 5000 rows natively, 0.27-0.45 ms in numpy.
    """

    #: Bits of each hash the index keys on: 2^16 slots (256 KiB); about 4% of a 5000-row
    #: window's rows share a slot with another row of it.
    SLOT_BITS = 16

    def __init__(self) -> None:
        self._last: Any = (_NativeLastRows if _NativeLastRows is not None else _LastRows)(self.SLOT_BITS)
        self.loss: dict[str, np.ndarray] = {}
        #: Rows predicted and rows taken from the cache, over the estimator's life.
        self.predicted = 0
        self.reused = 0

    def predict(self, models: dict[str, Any], x: np.ndarray) -> dict[str, np.ndarray]:
        """Each model's predicted loss per row of ``x`` (arrays the caller must not change:
        they are kept for the next window)."""
        found = np.empty(x.shape[0], dtype=np.int64)
        self._last.match_and_keep(x, found)
        # Until this window's losses are made, none are kept: a failed prediction leaves no
        # losses that the rows now kept would be matched to.
        kept, self.loss = self.loss, {}
        if set(kept) == set(models):
            hit = np.flatnonzero(found >= 0)
            src = found[hit]
        else:  # other models than the kept losses': nothing to take
            hit = src = np.zeros(0, dtype=np.intp)
        n_hit = hit.size
        if n_hit == 0:  # a disjoint window: nothing to pick out
            out = _predict_losses(models, x)
        else:
            new = np.ones(x.shape[0], dtype=bool)
            new[hit] = False
            fresh = _predict_losses(models, x[new]) if n_hit < x.shape[0] else {}
            out = {}
            for name in models:
                loss = np.empty(x.shape[0])
                loss[hit] = kept[name][src]
                if fresh:
                    loss[new] = fresh[name]
                out[name] = loss
        self.predicted += x.shape[0] - n_hit
        self.reused += n_hit
        self.loss = out
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
        self._cache = LossCache()

    def _new_model(self) -> _LossModel:
        return _LossModel(self.seed)

    def _targets(self, sample: Sample) -> dict[str, np.ndarray]:
        """The loss targets the metrics need: abs (|e|) and/or sq (e²)."""
        err = self._errors(sample)
        wanted = {_TARGET_OF[m] for m in self.metrics}
        return {name: t for name, t in (("abs", err), ("sq", err**2)) if name in wanted}

    @staticmethod
    def _errors(sample: Sample) -> np.ndarray:
        assert sample.labels is not None and sample.predictions is not None
        return np.abs(np.asarray(sample.labels, dtype=float) - np.asarray(sample.predictions, dtype=float))

    def _fit(self, reference: Sample) -> None:
        x = _design(reference)
        targets = self._targets(reference)
        if not np.all(np.isfinite(self._errors(reference))):
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
            self._models[name] = self._new_model().fit(x, t).for_windows()
        natives = [model.native for model in self._models.values()]
        if all(isinstance(f, NativeForest) for f in natives):
            join(natives)
        self._cache = LossCache()
        if self.shift_robust:
            import lightgbm

            if reference.features is None:
                raise EstimationError("shift_robust DLE needs the features of the reference and the window")
            # What every window's refit shares, prepared once: the domain classifier's
            # reference side and the reference binned for LightGBM (only the weights change).
            # The refit needs the whole reference: on a 5000-row subset car_price's error
            # was 2-3x the plain DLE's, on 10,000 rows still 1.3x.
            self._ratio = DensityRatio(self.seed).fit(np.asarray(reference.features, dtype=float))
            self._ref_data = {
                name: lightgbm.Dataset(x, t, free_raw_data=False, params=dict(LOSS_MODEL_PARAMS)).construct()
                for name, t in targets.items()
            }

    def _loss_models(self, analysis: Sample) -> dict[str, Any]:
        if not self.shift_robust:
            return self._models
        ref = self.reference
        assert ref is not None
        if ref.features is None or analysis.features is None:
            raise EstimationError("shift_robust DLE needs the features of the reference and the window")
        w = self._ratio.weights(np.asarray(analysis.features, dtype=float))
        self.quality["effective_reference_rows"] = effective_sample_size(w)
        return {name: self._new_model().fit_weighted(data, w) for name, data in self._ref_data.items()}

    def _estimate_window(self, analysis: Sample) -> dict[str, tuple[float, float, float, float]]:
        x = _design(analysis)
        if not np.all(np.isfinite(x[:, -1])):
            raise EstimationError("predictions must be finite numbers")
        n = x.shape[0]
        # Each window's mean predicted loss and its standard error, per loss target.
        mean: dict[str, float] = {}
        se: dict[str, float] = {}
        models = self._loss_models(analysis)
        if models is self._models:
            losses = self._cache.predict(models, x)
        else:
            losses = {name: model.predict(x) for name, model in models.items()}
        for name, loss in losses.items():
            mean[name] = float(np.maximum(loss, 0.0).mean())
            se[name] = self._resid_sd[name] / math.sqrt(n)
        z = NormalDist().inv_cdf(0.5 + BAND_LEVEL / 2)
        out = {}
        for metric in self.metrics:
            if metric == "mae":
                mae, mae_se = mean["abs"], se["abs"]
                out[metric] = (mae, mae - z * mae_se, mae + z * mae_se, mae_se)
                continue
            mse, mse_se = mean["sq"], se["sq"]
            if metric == "mse":
                out[metric] = (mse, max(mse - z * mse_se, 0.0), mse + z * mse_se, mse_se)
            else:
                rmse = math.sqrt(mse)
                lo, hi = math.sqrt(max(mse - z * mse_se, 0.0)), math.sqrt(mse + z * mse_se)
                out[metric] = (rmse, lo, hi, mse_se / (2 * rmse) if rmse > 0 else 0.0)
        return out

    def _realised(self, sample: Sample) -> dict[str, float]:
        err = self._errors(sample)
        return {m: regression_metric(m, err) for m in self.metrics}

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "estimator": "dle",
            "shift_robust": self.shift_robust,
            "loss_model": self.quality,
        }
        cache = self._cache
        if self._models and not self.shift_robust:
            # Rows the loss model was applied to, and rows whose loss the window before had.
            out["rows"] = {"predicted": cache.predicted, "from_last_window": cache.reused}
        return out
