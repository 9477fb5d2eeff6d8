"""mlvigil_native's Forest (native/tree-eval) applies LightGBM's trees as LightGBM does.

Its predictions are held equal to ``Booster.predict`` on random rows with NaNs, zeros and
values within LightGBM's zero threshold, categorical features (listed, unlisted, negative,
fractional, huge categories), each missing-value treatment, several objectives, random
forests (averaged output), single-leaf trees and DLE's real loss models; what it does not
reproduce is left to LightGBM (``compile_booster`` returns None).
"""

from __future__ import annotations

from typing import Any

import lightgbm
import mlvigil_native as native
import numpy as np
import pytest

from detectors.estimation import DLE, Sample
from detectors.estimation import forest as forest_module
from detectors.estimation.forest import compile_booster

pytestmark = pytest.mark.timeout(120)


def _rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Five numerical features (NaNs, zeros, values within 1e-35 of zero) and a category."""
    x = rng.normal(size=(n, 6))
    x[rng.random((n, 6)) < 0.08] = np.nan
    x[rng.random((n, 6)) < 0.08] = 0.0
    x[rng.random((n, 6)) < 0.01] = 1e-36
    x[:, 5] = rng.integers(0, 30, n).astype(float)
    return x


def _target(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cat_effect = np.where(np.isin(x[:, 5], [1, 3, 7, 12, 25]), 2.0, -1.0)
    return (
        np.nan_to_num(x[:, 0]) * 2
        + np.isnan(x[:, 1]) * 3
        + (x[:, 2] == 0) * 1.5
        + cat_effect
        + rng.normal(size=len(x))
    )


def _analysis_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = _rows(rng, n)
    # Categories never seen, negative, fractional, NaN and past int32 go right.
    x[:, 5] = rng.choice([-3.0, -0.5, 0.0, 1.0, 3.7, 12.0, 29.0, 31.0, 500.0, 3e9, np.nan], size=n)
    return x


CASES: list[dict[str, Any]] = [
    {"objective": "regression"},
    {"objective": "regression", "zero_as_missing": True},
    {"objective": "regression", "use_missing": False},
    {"objective": "regression_l1", "num_leaves": 63},
    {"objective": "huber", "learning_rate": 0.3},
    {"objective": "quantile", "alpha": 0.8},
    {"objective": "regression", "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.7},
    {"objective": "regression", "min_data_in_leaf": 5000},  # every tree a single leaf
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
@pytest.mark.parametrize("categorical", [False, True], ids=["numerical", "categorical"])
def test_forest_predicts_what_lightgbm_predicts(params: dict[str, Any], categorical: bool) -> None:
    rng = np.random.default_rng(len(str(params)) + categorical)
    x = _rows(rng, 3000)
    data = lightgbm.Dataset(x, _target(x, rng), categorical_feature=[5] if categorical else "auto")
    booster = lightgbm.train(
        {"verbosity": -1, "num_threads": 1, "seed": 1, **params}, data, num_boost_round=40
    )
    dump = booster.dump_model()
    kinds = {n["decision_type"] for t in dump["tree_info"] for n in _splits(t["tree_structure"])}
    assert ("==" in kinds) == categorical or "min_data_in_leaf" in params
    forest = compile_booster(booster)
    assert forest is not None
    for n in (1, 7, 64, 1001):  # a block's and the lanes' tails
        window = _analysis_rows(rng, n)
        expected = booster.predict(window, num_threads=1)
        got = forest.predict(window)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
        assert np.array_equal(got, expected)  # in fact the same bits: same sums, same order


def test_forest_on_several_threads_predicts_the_same_bits_as_on_one_and_as_lightgbm() -> None:
    rng = np.random.default_rng(17)
    x = _rows(rng, 3000)
    data = lightgbm.Dataset(x, _target(x, rng), categorical_feature=[5])
    booster = lightgbm.train({"verbosity": -1, "num_threads": 1, "seed": 1}, data, num_boost_round=40)
    forest = compile_booster(booster)
    assert forest is not None
    # Row counts that split unevenly over 2 and 3 threads; the largest is enough for auto (0)
    # to start a second thread where there is a second core.
    for n in (1, 5, 2 * 1024 + 3, 4097):
        window = _analysis_rows(rng, n)
        expected = booster.predict(window, num_threads=1)
        for threads in (1, 2, 3, 0):
            assert np.array_equal(forest.predict(window, threads=threads), expected), (n, threads)


def _avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return False


def test_quick_scorer_applies_plain_trees_with_lightgbms_bits_nan_and_zeros_included() -> None:
    # Trained without missing values: every split a plain `<=` (missing type None), which
    # QuickScorer applies; the analysis rows' NaNs are read as 0, as LightGBM reads them.
    rng = np.random.default_rng(23)
    x = np.nan_to_num(_rows(rng, 3000))
    booster = lightgbm.train(
        {"verbosity": -1, "num_threads": 1, "seed": 1},
        lightgbm.Dataset(x, _target(x, rng)),
        num_boost_round=60,
    )
    forest = compile_booster(booster)
    assert forest is not None
    assert forest._forest.quick_scorer == _avx2()
    for n in (1, 7, 8, 9, 64, 65, 1001, 2 * 1024 + 3):  # the eight rows' and a block's tails
        window = _analysis_rows(rng, n)
        window[::3, 0] = np.nan
        window[1::5, 1] = -0.0
        expected = booster.predict(window, num_threads=1)
        for threads in (1, 2, 0):
            assert np.array_equal(forest.predict(window, threads=threads), expected), (n, threads)
    # Missing values in training make NaN-aware splits: those trees are walked.
    nan_aware = compile_booster(
        lightgbm.train(
            {"verbosity": -1, "num_threads": 1},
            lightgbm.Dataset(_rows(rng, 3000), _target(x, rng)),
            num_boost_round=5,
        )
    )
    assert nan_aware is not None and not nan_aware._forest.quick_scorer


def _splits(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "split_index" not in node:
        return []
    return [node, *_splits(node["left_child"]), *_splits(node["right_child"])]


def test_dle_loss_models_are_applied_by_forest_with_lightgbms_predictions() -> None:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    rng = np.random.default_rng(3)
    pred = y + rng.normal(size=y.size) * 30
    ref = Sample(predictions=pred[:300], labels=y[:300], features=x[:300])
    est = DLE(["mae", "rmse"]).fit(ref)
    design = np.hstack([x[300:], pred[300:, None]])
    for model in est._models.values():
        assert model.native is not None
        assert model.native._forest.quick_scorer == _avx2()
        assert np.array_equal(model.predict(design), model.booster.predict(design, num_threads=1))
    # The estimate is the one LightGBM's predictor gives.
    lightgbm_only = DLE(["mae", "rmse"]).fit(ref)
    for model in lightgbm_only._models.values():
        model.native = None
    window = Sample(predictions=pred[300:], features=x[300:])
    assert [e.value for e in est.estimate(window)] == [e.value for e in lightgbm_only.estimate(window)]


def test_models_forest_does_not_reproduce_are_left_to_lightgbm(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 3))
    y = x[:, 0] + rng.normal(size=500)
    train = {"verbosity": -1, "num_threads": 1}
    linear = lightgbm.train({**train, "linear_tree": True}, lightgbm.Dataset(x, y), num_boost_round=5)
    assert compile_booster(linear) is None
    binary = lightgbm.train({**train, "objective": "binary"}, lightgbm.Dataset(x, y > 0), num_boost_round=5)
    assert compile_booster(binary) is None  # its output goes through a sigmoid
    multi = lightgbm.train(
        {**train, "objective": "multiclass", "num_class": 3}, lightgbm.Dataset(x, np.digitize(y, [-1, 1])), 5
    )
    assert compile_booster(multi) is None
    # An older native build without Forest: DLE still works, through LightGBM.
    monkeypatch.setattr(forest_module, "_NativeForest", None)
    est = DLE(["mae"]).fit(Sample(predictions=x[:, 0], labels=y, features=x))
    assert est._models["abs"].native is None
    assert np.isfinite(est.estimate(Sample(predictions=x[:100, 0], features=x[:100]))[0].value)


def test_forest_refuses_malformed_trees_and_rows_with_a_reason() -> None:
    # Per tree: features, thresholds, decision codes, left, right, categories; leaf values.
    leaf: tuple[list[Any], ...] = ([], [], [], [], [], [], [1.0])
    split: tuple[list[Any], ...] = ([0], [0.5], [0], [-1], [-2], [[]], [1.0, 2.0])
    backward: tuple[list[Any], ...] = (
        [0, 0],
        [0.5, 0.5],
        [0, 0],
        [1, 0],
        [-1, -2],
        [[], []],
        [1.0, 2.0, 3.0],
    )
    with pytest.raises(ValueError, match="out of order or range"):
        native.Forest([backward])
    with pytest.raises(ValueError, match="leaves for"):
        native.Forest([([0], [0.5], [0], [-1], [-2], [[]], [1.0])])
    with pytest.raises(ValueError, match="differ in length"):
        native.Forest([([0], [0.5, 1.0], [0], [-1], [-2], [[]], [1.0, 2.0])])
    forest = native.Forest([leaf, split])
    assert (forest.n_trees, forest.n_features) == (2, 1)
    out = np.empty(2)
    forest.predict(np.array([[0.5], [0.6]]), out)
    assert out.tolist() == [2.0, 3.0]
    with pytest.raises(ValueError, match="columns"):
        forest.predict(np.empty((2, 0)), out)
    with pytest.raises(ValueError, match="places"):
        forest.predict(np.zeros((3, 1)), out)
    with pytest.raises(ValueError, match="2-D"):
        forest.predict(np.zeros(2), out)
    with pytest.raises((ValueError, TypeError, BufferError)):
        forest.predict(np.zeros((2, 1), dtype=np.float32), out)


def test_predict_together_gives_each_forests_own_predictions_in_one_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # DLE's case: two loss models on the same rows, one plain (QuickScorer where the CPU has
    # AVX2) and one with NaN-aware and categorical splits (walked).
    rng = np.random.default_rng(29)
    plain_x = np.nan_to_num(_rows(rng, 3000))
    plain = lightgbm.train(
        {"verbosity": -1, "num_threads": 1, "seed": 1},
        lightgbm.Dataset(plain_x, _target(plain_x, rng)),
        num_boost_round=50,
    )
    x = _rows(rng, 3000)
    mixed = lightgbm.train(
        {"verbosity": -1, "num_threads": 1, "seed": 2},
        lightgbm.Dataset(x, _target(x, rng), categorical_feature=[5]),
        num_boost_round=30,
    )
    forests = [compile_booster(plain), compile_booster(mixed)]
    assert forests[0] is not None and forests[1] is not None
    together = [f for f in forests if f is not None]
    for n in (0, 1, 9, 1025, 2 * 1024 + 3, 4099):  # tails of the eight rows, a tile, the threads
        window = _analysis_rows(rng, n)
        window[::7, 0] = np.inf
        window[1::7, 1] = -np.inf
        window[2::7, 2] = 1e-36
        expected = np.stack([plain.predict(window, num_threads=1), mixed.predict(window, num_threads=1)])
        for threads in (1, 2, 0):
            for f in together:
                f.threads = threads
            got = forest_module.predict_together(together, window)
            assert got.shape == (2, n)
            assert np.array_equal(got, expected), (n, threads)
            # Any layout of the window: a transposed copy's view, every other row.
            assert np.array_equal(
                forest_module.predict_together(together, np.asfortranarray(window)[::2]), expected[:, ::2]
            )
    # A native build without predict_forests: one call per forest, the same predictions.
    monkeypatch.setattr(forest_module, "_predict_forests", None)
    window = _analysis_rows(rng, 500)
    assert np.array_equal(
        forest_module.predict_together(together, window),
        np.stack([plain.predict(window, num_threads=1), mixed.predict(window, num_threads=1)]),
    )


def test_predict_forests_refuses_misshapen_outputs_and_narrow_rows_with_a_reason() -> None:
    split: tuple[list[Any], ...] = ([0], [0.5], [0], [-1], [-2], [[]], [1.0, 2.0])
    wide: tuple[list[Any], ...] = ([3], [0.5], [0], [-1], [-2], [[]], [1.0, 2.0])
    one, four = native.Forest([split]), native.Forest([wide])
    x = np.array([[0.5, 0.0], [0.6, 0.0], [np.nan, 0.0]])
    out = np.full((2, 3), np.nan)
    native.predict_forests([one, one], x, out)
    assert out.tolist() == [[1.0, 2.0, 1.0]] * 2
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        native.predict_forests([one, one], x, np.empty((2, 2)))
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        native.predict_forests([one], x, out)
    with pytest.raises(ValueError, match="4 features"):
        native.predict_forests([one, four], x, out)
    with pytest.raises(ValueError, match="2-D"):
        native.predict_forests([one], x, np.empty(3))
    with pytest.raises(TypeError):
        native.predict_forests([one, "not a forest"], x, out)
    native.predict_forests([], x, np.empty((0, 3)))


def test_dle_reuses_every_shared_row_when_rows_crowd_the_cache_index(monkeypatch: pytest.MonkeyPatch) -> None:
    from detectors.estimation.dle import LossCache

    # 8 slots for 600 rows: nearly every row loses its slot to another and is found by the
    # search among the crowded rows instead.
    monkeypatch.setattr(LossCache, "SLOT_BITS", 3)
    rng = np.random.default_rng(31)
    x = rng.normal(size=(3000, 3))
    y = x[:, 0] + rng.normal(size=3000) * (0.2 + np.abs(x[:, 1]))
    ref = Sample(predictions=x[1500:, 0], labels=y[1500:], features=x[1500:])
    est = DLE(["mae", "rmse"]).fit(ref)

    def window(start: int) -> Sample:
        return Sample(predictions=x[start : start + 600, 0], features=x[start : start + 600])

    est.estimate(window(0))
    shifted = est.estimate(window(60))
    assert (est._cache.predicted, est._cache.reused) == (600 + 60, 540)
    fresh = DLE(["mae", "rmse"]).fit(ref)
    assert [e.value for e in shifted] == [e.value for e in fresh.estimate(window(60))]
    # Both loss models were applied in one native call (where the native module has it).
    assert all(isinstance(m.native, forest_module.NativeForest) for m in est._models.values())


@pytest.mark.parametrize("slot_bits", [16, 2])
def test_last_rows_finds_the_rows_the_numpy_version_finds(slot_bits: int) -> None:
    from detectors.estimation.dle import _LastRows

    rng = np.random.default_rng(41)
    x = rng.normal(size=(3000, 4))
    x[7, 2] = np.nan  # never found
    x[8] = [0.0, -0.0, np.inf, -np.inf]
    both = (native.LastRows(slot_bits), _LastRows(slot_bits))
    # Tumbling, sliding by 10%, a column fewer (none found), back, and non-contiguous input.
    views = [x[:1000], x[100:1100], x[2000:3000], x[1900:2900, :3], x[1800:2800, :3], x[1000:2000:1, ::1]]
    views.append(np.asfortranarray(x[1500:2500]))
    for view in views:
        got = []
        for last in both:
            found = np.full(view.shape[0], 99, dtype=np.int64)
            last.match_and_keep(view, found)
            got.append(found)
        assert np.array_equal(got[0], got[1])
        assert len(both[0]) == len(both[1]) == view.shape[0]
    # Sliding by 100 rows: the 900 shared found at their place in the last window.
    last = native.LastRows(slot_bits)
    found = np.empty(1000, dtype=np.int64)
    last.match_and_keep(x[:1000], found)
    last.match_and_keep(x[100:1100], found)
    want = np.r_[np.arange(100, 1000), np.full(100, -1)]
    assert np.array_equal(found, want)


def test_last_rows_refuses_wrong_shapes_and_read_only_places() -> None:
    last = native.LastRows()
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="3 places for 4 rows"):
        last.match_and_keep(x, np.empty(3, dtype=np.int64))
    with pytest.raises(ValueError, match="2-D"):
        last.match_and_keep(np.zeros(4), np.empty(4, dtype=np.int64))
    read_only = np.empty(4, dtype=np.int64)
    read_only.flags.writeable = False
    with pytest.raises((ValueError, BufferError)):
        last.match_and_keep(x, read_only)
    with pytest.raises((ValueError, BufferError, TypeError)):
        last.match_and_keep(x, np.empty(4, dtype=np.int32))
    assert len(last) == 0  # nothing kept from a refused call


def test_joined_forests_give_lightgbms_predictions_and_dle_joins_its_loss_models() -> None:
    # Two plain models on the same features (DLE's two loss models): one joint layout where
    # the CPU has AVX2, LightGBM's predictions either way; a third model not joined.
    rng = np.random.default_rng(37)
    x = np.nan_to_num(_rows(rng, 3000))
    boosters = [
        lightgbm.train(
            {"verbosity": -1, "num_threads": 1, "seed": seed},
            lightgbm.Dataset(x, _target(x, rng) ** power),
            num_boost_round=60,
        )
        for seed, power in ((1, 1), (2, 2), (3, 1))
    ]
    forests = [compile_booster(b) for b in boosters]
    assert all(f is not None for f in forests)
    pair = [f for f in forests[:2] if f is not None]
    forest_module.join(pair)
    assert pair[0]._joint is not None and pair[0]._joint[1].joint == _avx2()
    for n in (0, 1, 25, 1025, 4099):
        window = np.nan_to_num(_analysis_rows(rng, n))
        window[::5, 0] = np.inf
        window[1::5, 1] = -0.0
        expected = np.stack([b.predict(window, num_threads=1) for b in boosters[:2]])
        for threads in (1, 2, 0):
            for f in pair:
                f.threads = threads
            assert np.array_equal(forest_module.predict_together(pair, window), expected), (n, threads)
        # Other forests, or these in another order: not the joint layout, the same values.
        swapped = forest_module.predict_together(pair[::-1], window)
        assert np.array_equal(swapped, expected[::-1])
    # DLE lays its two loss models out together at fit.
    ref = Sample(predictions=x[:, 0], labels=x[:, 0] + rng.normal(size=3000), features=x)
    est = DLE(["mae", "rmse"]).fit(ref)
    natives = [m.native for m in est._models.values()]
    assert natives[0]._joint is not None and list(natives[0]._joint[0]) == natives


def test_forests_refuses_wrong_shapes() -> None:
    split: tuple[list[Any], ...] = ([0], [0.5], [0], [-1], [-2], [[]], [1.0, 2.0])
    one = native.Forest([split])
    both = native.Forests([one, one])
    assert len(both) == 2
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        both.predict(x, np.empty((1, 3)))
    with pytest.raises(ValueError, match="2-D"):
        both.predict(x, np.empty(6))
    out = np.empty((2, 3))
    both.predict(np.array([[0.5, 0.0], [0.6, 0.0], [np.nan, 0.0]]), out)
    assert np.array_equal(out, [[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])
