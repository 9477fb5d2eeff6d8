"""Performance estimation without labels: CBPE, PAPE and DLE on data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.estimation import CBPE, DLE, PAPE, EstimationError, Sample
from detectors.estimation.calibration import expected_calibration_error
from detectors.estimation.metrics import soft_auc

pytestmark = pytest.mark.timeout(60)


def _binary(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, a miscalibrated score (squared probability) and labels drawn from the truth."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)) + np.array([shift, 0.0])
    truth = 1 / (1 + np.exp(-2 * x[:, 0]))
    return x, truth**2, (rng.random(n) < truth).astype(int)


def test_soft_auc_is_the_ordinary_auc_on_hard_labels_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    score = np.round(rng.random(300), 1)  # many ties
    y = (rng.random(300) < score).astype(int)
    assert soft_auc(score, y[None].astype(float))[0] == pytest.approx(roc_auc_score(y, score))


def test_cbpe_binary_estimates_every_metric_within_its_band_of_the_realised_value() -> None:
    _, score, y = _binary(8000, seed=1)
    metrics = ["accuracy", "precision", "recall", "f1", "auc"]
    est = CBPE(metrics).fit(Sample(scores=score[:4000], labels=y[:4000]))
    assert est.calibration["ece_raw"] > 0.05 > est.calibration["ece_calibrated"]
    assert est.calibration_ok
    covered = 0
    for lo in range(4000, 8000, 1000):
        window = Sample(scores=score[lo : lo + 1000], labels=y[lo : lo + 1000])
        for e in est.estimate(window):
            assert e.realised is not None
            assert abs(e.value - e.realised) < 4 * e.standard_error + 0.01, e
            assert e.lower < e.value < e.upper
            covered += e.lower <= e.realised <= e.upper
            assert not e.alarm, e
    assert covered >= 17  # of 20: a 95% band


def test_cbpe_alarms_on_a_window_of_uncertain_rows_before_any_label() -> None:
    x, score, y = _binary(6000, seed=2)
    est = CBPE(["accuracy", "f1"], threshold=0.02).fit(Sample(scores=score[:4000], labels=y[:4000]))
    rest_x, rest_score, rest_y = x[4000:], score[4000:], y[4000:]
    hard = np.abs(rest_x[:, 0]) < 0.4  # near the decision boundary: accuracy about 0.6
    got = {e.metric: e for e in est.estimate(Sample(scores=rest_score[hard][:500]))}
    assert got["accuracy"].alarm
    assert got["accuracy"].value < got["accuracy"].reference_lower - 0.02
    assert got["accuracy"].realised is None
    realised = float(np.mean((rest_score[hard][:500] >= 0.5) == rest_y[hard][:500]))
    assert abs(got["accuracy"].value - realised) < 0.06


def test_cbpe_multiclass_macro_metrics_match_the_realised_ones() -> None:
    rng = np.random.default_rng(3)
    n, k = 9000, 4
    logits = rng.normal(size=(n, k)) * 1.5
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = (rng.random((n, 1)) > np.cumsum(truth, axis=1)).sum(axis=1)
    score = truth**2 / (truth**2).sum(axis=1, keepdims=True)  # overconfident model
    est = CBPE(["accuracy", "f1", "auc"]).fit(Sample(scores=score[:6000], labels=y[:6000]))
    for e in est.estimate(Sample(scores=score[6000:], labels=y[6000:])):
        assert e.realised is not None
        assert abs(e.value - e.realised) < 0.03, e


def test_calibration_error_is_reported_and_a_poor_fit_is_flagged() -> None:
    rng = np.random.default_rng(4)
    p = rng.random(5000)
    y = (rng.random(5000) < p).astype(int)
    assert expected_calibration_error(p, y, (p >= 0.5).astype(int)) < 0.03
    assert expected_calibration_error(p**4, y, (p**4 >= 0.5).astype(int)) > 0.15
    # Forty rows cannot calibrate a model: the out-of-fold ECE says so.
    est = CBPE(["accuracy"], max_ece=0.05).fit(Sample(scores=p[:40], labels=y[:40]))
    assert not est.calibration_ok
    assert est.describe()["calibration"]["ok"] is False


def test_pape_follows_a_covariate_shift_that_breaks_cbpe() -> None:
    """The model ignores x1; labels depend on it. Shifting x1 changes P(y | score), which
    CBPE's reference calibration cannot see and PAPE's reweighted one can."""
    rng = np.random.default_rng(5)
    n = 6000
    x = rng.normal(size=(n, 2))
    score = 1 / (1 + np.exp(-2 * x[:, 0]))
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x[:, 0] + 1.5 * x[:, 1]))).astype(int)
    ref = Sample(scores=score[:4000], labels=y[:4000], features=x[:4000])
    shifted = x[4000:, 1] > 0.8
    window = Sample(scores=score[4000:][shifted], labels=y[4000:][shifted], features=x[4000:][shifted])
    cbpe = CBPE(["accuracy"]).fit(ref).estimate(window)[0]
    pape = PAPE(["accuracy"]).fit(ref).estimate(window)[0]
    assert pape.realised is not None and cbpe.realised is not None
    assert abs(pape.value - pape.realised) < 0.5 * abs(cbpe.value - cbpe.realised)
    assert abs(pape.value - pape.realised) < 0.06


def test_dle_estimates_mae_and_rmse_and_alarms_where_errors_grow() -> None:
    rng = np.random.default_rng(6)
    n = 8000
    x = rng.normal(size=(n, 2))
    y = x[:, 0] + rng.normal(size=n) * (0.2 + np.abs(x[:, 1]))
    pred = x[:, 0]
    est = DLE(["mae", "rmse"], threshold=0.1).fit(
        Sample(predictions=pred[:5000], labels=y[:5000], features=x[:5000])
    )
    assert est.describe()["loss_model"]["r2_abs_loss"] > 0.2
    same = Sample(predictions=pred[5000:6000], labels=y[5000:6000], features=x[5000:6000])
    for e in est.estimate(same):
        assert e.realised is not None and abs(e.value - e.realised) < 4 * e.standard_error, e
        assert not e.alarm
    far = np.abs(x[6000:, 1]) > 1.2
    worse = Sample(predictions=pred[6000:][far], labels=y[6000:][far], features=x[6000:][far])
    for e in est.estimate(worse):
        assert e.alarm, e
        assert e.realised is not None and abs(e.value - e.realised) < 0.15 * e.realised, e


def test_shift_robust_dle_runs_and_reports_its_effective_reference() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 2))
    y = x[:, 0] + rng.normal(size=3000) * (0.2 + np.abs(x[:, 1]))
    est = DLE(["mae"], shift_robust=True).fit(
        Sample(predictions=x[:2000, 0], labels=y[:2000], features=x[:2000])
    )
    sel = x[2000:, 1] > 0.5
    e = est.estimate(Sample(predictions=x[2000:, 0][sel], labels=y[2000:][sel], features=x[2000:][sel]))[0]
    assert e.realised is not None and abs(e.value - e.realised) < 0.15 * e.realised
    assert 0 < est.describe()["loss_model"]["effective_reference_rows"] < 2000


def test_shift_robust_dle_weights_every_reference_row_beyond_the_domain_classifiers_sample() -> None:
    from detectors.estimation.density_ratio import CLASSIFIER_ROWS

    rng = np.random.default_rng(8)
    n = CLASSIFIER_ROWS + 3000
    x = rng.normal(size=(n + 1000, 2))
    y = x[:, 0] + rng.normal(size=n + 1000) * (0.2 + np.abs(x[:, 1]))
    est = DLE(["mae"], shift_robust=True).fit(Sample(predictions=x[:n, 0], labels=y[:n], features=x[:n]))
    window = Sample(predictions=x[n:, 0], labels=y[n:], features=x[n:])
    e = est.estimate(window)[0]
    assert e.realised is not None and abs(e.value - e.realised) < 0.15 * e.realised
    # No shift: the weighted reference is worth about all its rows, not only the
    # CLASSIFIER_ROWS the domain classifier learnt from.
    assert est.describe()["loss_model"]["effective_reference_rows"] > CLASSIFIER_ROWS + 1000


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: CBPE(["mae"]), "CBPE cannot estimate"),
        (lambda: DLE(["auc"]), "DLE cannot estimate"),
        (lambda: CBPE().fit(Sample(scores=np.array([0.2, 0.8]))), "needs labels"),
        (
            lambda: CBPE().fit(Sample(predictions=np.array([0, 1]), labels=np.array([0, 1]))),
            "needs the model's scores",
        ),
        (lambda: CBPE().fit(Sample(scores=np.array([0.2, np.nan]), labels=np.array([0, 1]))), "finite"),
        (
            lambda: CBPE().fit(Sample(scores=np.array([0.2, 0.9]), labels=np.array([0, 2]))),
            "class indices 0..1",
        ),
        (lambda: CBPE().fit(Sample(scores=np.array([0.2, 0.9]), labels=np.array([1, 1]))), "single class"),
        (lambda: PAPE().fit(Sample(scores=np.array([0.2, 0.9]), labels=np.array([0, 1]))), "features"),
    ],
)
def test_bad_input_says_what_is_wrong(make, message: str) -> None:
    with pytest.raises(EstimationError, match=message):
        make()


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("metric", ["accuracy", "precision", "recall", "f1", "auc"])
def test_closed_form_band_matches_the_spread_of_simulated_labels(k: int, metric: str) -> None:
    from detectors.estimation.metrics import classification_metric, classification_se

    rng = np.random.default_rng(8)
    n = 600
    logits = rng.normal(size=(n, k)) * 2
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = np.argmax(prob, axis=1)
    if k == 2:
        prob, scores = prob[:, 1], prob[:, 1]
        draws = (rng.random((2000, n)) < prob).astype(float)
    else:
        scores = prob
        drawn = (rng.random((2000, n, 1)) > np.cumsum(prob, axis=1)[None]).sum(axis=2)
        draws = np.eye(k)[np.minimum(drawn, k - 1)]
    value = float(classification_metric(metric, prob[None], predicted, scores, hard=False)[0])
    simulated = classification_metric(metric, draws, predicted, scores, hard=True)
    assert classification_se(metric, prob, predicted, value) == pytest.approx(simulated.std(), rel=0.25)
    assert value == pytest.approx(simulated.mean(), abs=0.01)


@pytest.mark.parametrize("metric", ["accuracy", "f1", "auc"])
def test_expected_metric_equals_the_metric_and_its_band_computed_apart(metric: str) -> None:
    from detectors.estimation.metrics import classification_metric, classification_se, expected_metric

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(400, 3)) * 2
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predicted = np.argmax(prob, axis=1)
    value, se = expected_metric(metric, prob, predicted, prob)
    assert value == pytest.approx(
        float(classification_metric(metric, prob[None], predicted, prob, hard=False)[0])
    )
    assert se == pytest.approx(classification_se(metric, prob, predicted, value))


def test_dle_loss_model_is_lightgbm_with_its_defaults_missing_values_included() -> None:
    import lightgbm

    from detectors.estimation.dle import LOSS_MODEL_TREES

    rng = np.random.default_rng(5)
    x = rng.normal(size=(3000, 3))
    x[rng.random(x.shape) < 0.05] = np.nan
    pred = np.nan_to_num(x[:, 0])
    y = pred + rng.normal(size=3000) * (0.5 + np.abs(np.nan_to_num(x[:, 1])))
    est = DLE(["mae"]).fit(Sample(predictions=pred[:2000], labels=y[:2000], features=x[:2000]))
    design = np.hstack([x[:2000], pred[:2000, None]])
    # LightGBM's own defaults (as NannyML's DLE fits them), not a hand-tuned model.
    plain = lightgbm.train(
        {"objective": "regression", "verbosity": -1, "num_threads": 1, "deterministic": True, "seed": 0},
        lightgbm.Dataset(design, np.abs(y[:2000] - pred[:2000])),
        num_boost_round=LOSS_MODEL_TREES,
    )
    window = np.hstack([x[2000:], pred[2000:, None]])
    assert np.isnan(window).any()
    assert np.allclose(est._models["abs"].predict(window), plain.predict(window))
    value = est.estimate(Sample(predictions=pred[2000:], features=x[2000:]))[0].value
    assert np.isfinite(value)


def test_dle_fits_only_the_loss_models_its_metrics_need() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(600, 2))
    y = x[:, 0] + rng.normal(size=600)
    ref = Sample(predictions=x[:, 0], labels=y, features=x)
    assert set(DLE(["mae"]).fit(ref)._models) == {"abs"}
    assert set(DLE(["rmse", "mse"]).fit(ref)._models) == {"sq"}
    both = DLE(["mae", "rmse"]).fit(ref)
    assert set(both._models) == {"abs", "sq"}
    assert [e.metric for e in both.estimate(ref.take(np.arange(100)))] == ["mae", "rmse"]


def test_dle_without_lightgbm_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm now raises ImportError
    x = np.random.default_rng(9).normal(size=(100, 2))
    with pytest.raises(ImportError, match=r"pip install 'mlvigil\[estimation\]'"):
        DLE(["mae"]).fit(Sample(predictions=x[:, 0], labels=x[:, 1], features=x))


def test_soft_auc_is_the_expected_auc_of_labels_drawn_from_the_probabilities() -> None:
    """CBPE's AUC counts pairs of distinct rows; counting each row with itself, half (as
    NannyML 0.13 does), pulls the estimate towards 0.5 by more than the draws' noise."""
    rng = np.random.default_rng(0)
    n = 40
    score = np.sort(rng.random(n))
    q = np.clip(score + rng.normal(0, 0.25, n), 0.05, 0.95)
    ours = float(soft_auc(score, q[None], hard=False)[0])
    drawn = (rng.random((100_000, n)) < q).astype(float)
    monte_carlo = float(np.nanmean(soft_auc(score, drawn, hard=True)))
    self_pairs = float((q * (1 - q)).sum())
    distinct_pairs = float(q.sum() * (1 - q).sum()) - self_pairs
    with_self_pairs = (ours * distinct_pairs + self_pairs / 2) / (distinct_pairs + self_pairs)
    assert abs(ours - monte_carlo) < 0.001
    assert abs(with_self_pairs - monte_carlo) > 0.002


def test_density_ratio_weights_follow_the_shift_on_every_reference_row() -> None:
    from detectors.estimation.density_ratio import CLASSIFIER_ROWS, MAX_WEIGHT, DensityRatio

    rng = np.random.default_rng(11)
    ref = rng.normal(size=(CLASSIFIER_ROWS + 4000, 2))
    window = rng.normal(loc=[1.0, 0.0], size=(3000, 2))
    ratio = DensityRatio().fit(ref)
    w = ratio.weights(window)
    assert w.shape == (ref.shape[0],)
    assert w.mean() == pytest.approx(1.0)
    assert w.max() <= 1.01 * MAX_WEIGHT  # clipped, then normalised once more
    # The weighted reference looks like the window: its mean moved to about 1 along the
    # shifted feature and stayed at 0 along the other; so for the rows the classifier did
    # not learn from as well as for those it did.
    learnt = np.zeros(ref.shape[0], dtype=bool)
    learnt[ratio._sample] = True
    for rows in (learnt, ~learnt):
        mean = np.average(ref[rows], axis=0, weights=w[rows])
        assert 0.7 < mean[0] < 1.2, mean
        assert abs(mean[1]) < 0.15, mean
    # No shift: the weights stay near 1 (the reference keeps most of its worth).
    from detectors.estimation.density_ratio import effective_sample_size

    same = ratio.weights(rng.normal(size=(3000, 2)))
    assert effective_sample_size(same) > 0.8 * ref.shape[0]


def test_shift_robust_refit_on_the_binned_reference_equals_a_fresh_weighted_fit() -> None:
    """The shift-robust DLE bins the reference once and only changes the weights per
    window: the model must be the one a weighted fit from scratch gives."""
    import lightgbm

    from detectors.estimation.dle import LOSS_MODEL_PARAMS, LOSS_MODEL_TREES, _LossModel

    rng = np.random.default_rng(12)
    x = rng.normal(size=(3000, 3))
    t = np.abs(x[:, 0]) + rng.normal(size=3000) * 0.3
    binned = lightgbm.Dataset(x, t, free_raw_data=False, params=dict(LOSS_MODEL_PARAMS)).construct()
    probe = rng.normal(size=(500, 3))
    plain = _LossModel(0).fit(x, t).predict(probe)
    for shift in (1.0, -1.0):
        w = np.exp(shift * x[:, 0])
        w /= w.mean()
        reused = _LossModel(0).fit_weighted(binned, w).predict(probe)
        fresh = lightgbm.train(
            {**LOSS_MODEL_PARAMS, "seed": 0},
            lightgbm.Dataset(x, t, weight=w),
            num_boost_round=LOSS_MODEL_TREES,
        ).predict(probe, num_threads=1)
        assert np.allclose(reused, fresh)
        assert not np.allclose(reused, plain)  # the weights were applied


def test_dle_sliding_window_predicts_only_its_new_rows_and_estimates_the_same() -> None:
    rng = np.random.default_rng(13)
    x = rng.normal(size=(4000, 3))
    x[150, 1] = np.nan  # a row with a missing value: never matched, always predicted
    y = x[:, 0] + rng.normal(size=4000) * (0.2 + np.abs(np.nan_to_num(x[:, 1])))
    ref = Sample(predictions=x[2000:, 0], labels=y[2000:], features=x[2000:])
    sliding = DLE(["mae", "rmse"]).fit(ref)

    def window(start: int, rows: np.ndarray = x) -> Sample:
        return Sample(predictions=rows[start : start + 1000, 0], features=rows[start : start + 1000])

    sliding.estimate(window(0))
    cache = sliding._cache
    assert (cache.predicted, cache.reused) == (1000, 0)
    second = sliding.estimate(window(100))
    assert (cache.predicted, cache.reused) == (1000 + 100 + 1, 899)
    fresh = DLE(["mae", "rmse"]).fit(ref).estimate(window(100))
    assert [e.value for e in second] == [e.value for e in fresh]
    # A row whose values changed is predicted anew, not taken from the cache; so is the
    # row with a missing value.
    changed = x.copy()
    changed[500, 2] += 1.0
    sliding.estimate(window(0, changed))
    assert (cache.predicted, cache.reused) == (1101 + 100 + 1 + 1, 899 + 898)
    # A window sharing no rows with the last: every row predicted, none looked up past the
    # bitmap's few false candidates, the estimate a fresh estimator's.
    disjoint = sliding.estimate(window(3000))
    assert (cache.predicted, cache.reused) == (1203 + 1000, 899 + 898)
    assert [e.value for e in disjoint] == [
        e.value for e in DLE(["mae", "rmse"]).fit(ref).estimate(window(3000))
    ]
    # And a window that comes back to rows two windows ago shares nothing with the last.
    sliding.estimate(window(0))
    assert (cache.predicted, cache.reused) == (2203 + 1000, 1797)
