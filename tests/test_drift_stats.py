"""Calibration and power of each drift test, and of the correction across features."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats as ss

from detectors.drift.compare import CompareOptions, compare
from detectors.drift.min_p import Member, min_p_null
from detectors.drift.multiple import benjamini_hochberg, bonferroni, correct
from detectors.drift.profile import ReferenceProfile, feature_profile
from detectors.drift.stats import UNIVARIATE, MissingRate
from detectors.drift.stats.classifier import ClassifierTwoSample
from detectors.drift.stats.mmd import MMD

ALPHA = 0.05
SEEDS = 300
# Three standard errors of a rejection rate at ALPHA over SEEDS draws.
TOLERANCE = 3 * math.sqrt(ALPHA * (1 - ALPHA) / SEEDS)
CATS = np.array(list("abcdef"), dtype=object)
SHARES = [0.3, 0.25, 0.2, 0.15, 0.07, 0.03]


def _p(p_value: float | None) -> float:
    """A missing p-value counts as no evidence of drift."""
    return 1.0 if p_value is None else p_value


def _draw(name: str, rng: np.random.Generator, size: int, shift: bool = False) -> np.ndarray:
    if name == "chi2":
        p = [0.22, 0.25, 0.2, 0.15, 0.12, 0.06] if shift else SHARES
        return rng.choice(CATS, size, p=p)
    return rng.normal(0.3 if shift else 0.0, 1.0, size)


@pytest.mark.parametrize("name", sorted(UNIVARIATE))
def test_false_positive_rate_at_alpha_without_drift(name: str) -> None:
    rng = np.random.default_rng(7)
    test = UNIVARIATE[name]
    rejected = 0
    for _ in range(SEEDS):
        prof = feature_profile("x", _draw(name, rng, 1000), "categorical" if name == "chi2" else "numeric")
        res = test.compare(prof, _draw(name, rng, 300))
        assert res.p_value is not None and 0.0 <= res.p_value <= 1.0
        rejected += res.p_value <= ALPHA
    assert rejected / SEEDS <= ALPHA + TOLERANCE
    # Not uselessly conservative either (the binned tests on continuous data lose a little).
    assert rejected / SEEDS >= ALPHA / 3


@pytest.mark.parametrize("name", sorted(UNIVARIATE))
def test_power_on_a_known_shift(name: str) -> None:
    rng = np.random.default_rng(8)
    test = UNIVARIATE[name]
    hits = sum(
        _p(
            test.compare(
                feature_profile("x", _draw(name, rng, 1000), "categorical" if name == "chi2" else "numeric"),
                _draw(name, rng, 300, shift=True),
            ).p_value
        )
        <= ALPHA
        for _ in range(60)
    )
    assert hits / 60 >= 0.6


def test_statistics_agree_with_scipy() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=800), rng.normal(0.1, 1.2, size=300)
    ks = UNIVARIATE["ks"].two_sample(x, y)
    ref = ss.ks_2samp(x, y, method="asymp")
    assert ks.statistic == pytest.approx(ref.statistic) and ks.p_value == pytest.approx(ref.pvalue)
    cvm = UNIVARIATE["cvm"].two_sample(x, y)
    ref2 = ss.cramervonmises_2samp(x, y, method="asymptotic")
    assert cvm.statistic == pytest.approx(ref2.statistic) and cvm.p_value == pytest.approx(
        ref2.pvalue, rel=1e-6
    )
    ad = UNIVARIATE["anderson"].two_sample(x, y)
    ref3 = ss.anderson_ksamp([x, y], variant="midrank")
    sigma = (ad.statistic - 1) / ref3.statistic
    assert sigma == pytest.approx(math.sqrt(2 * (math.pi**2 - 9) / 3), rel=0.05)
    w = UNIVARIATE["wasserstein"].two_sample(x, y)
    assert w.statistic == pytest.approx(ss.wasserstein_distance(x, y))


def test_unseen_categories_and_missing_values_are_drift() -> None:
    rng = np.random.default_rng(10)
    ref = {"city": rng.choice(["paris", "lyon"], 2000).astype(object), "x": rng.normal(size=2000)}
    cur_city = rng.choice(["paris", "lyon"], 500).astype(object)
    cur_city[:60] = "nice"
    cur_x = rng.normal(size=500).astype(object)
    cur_x[:80] = None
    report = compare(ReferenceProfile.from_columns(ref), {"city": cur_city, "x": cur_x})
    drifted = {f.feature for f in report.drifted_features}
    assert drifted == {"city", "x:missing"}
    city = next(f for f in report.features if f.feature == "city")
    assert city.movement["unseen"]["nice"] == pytest.approx(0.12)
    assert MissingRate().compare(0, 1000, 0, 500).p_value == 1.0


def test_fifty_features_keep_the_monitor_false_alarm_rate() -> None:
    rng = np.random.default_rng(11)
    alarms = {"bh": 0, "bonferroni": 0, "none": 0}
    runs = 60
    for _ in range(runs):
        ref = {f"f{j}": rng.normal(size=600) for j in range(50)}
        cur = {f"f{j}": rng.normal(size=200) for j in range(50)}
        prof = ReferenceProfile.from_columns(ref)
        for method in alarms:
            alarms[method] += compare(prof, cur, CompareOptions(correction=method)).drifted
    assert alarms["none"] / runs > 0.6  # uncorrected: most windows alarm on some feature
    assert alarms["bh"] / runs <= 0.15 and alarms["bonferroni"] / runs <= 0.15


def _factor_columns(rng: np.random.Generator, rows: int, shift_first: float = 0.0) -> dict[str, np.ndarray]:
    """Twenty features driven by one common factor (pairwise correlation about 0.9)."""
    common = rng.normal(size=rows)
    cols = {f"f{j}": common + 0.33 * rng.normal(size=rows) for j in range(20)}
    cols["f0"] = cols["f0"] + shift_first
    return cols


def test_min_p_keeps_alpha_on_correlated_features_where_bonferroni_and_bh_fall_short() -> None:
    """min-P's null comes from the reference, so correlated features cost it less than
    Bonferroni and BH: its false-alarm rate is alpha (theirs fall well below), and it sees a
    shift of one feature more often."""
    rng = np.random.default_rng(100)
    methods = ("minp", "bonferroni", "bh")
    null_alarms, detected = dict.fromkeys(methods, 0), dict.fromkeys(methods, 0)
    references, windows = 4, 150
    for _ in range(references):
        prof = ReferenceProfile.from_columns(_factor_columns(rng, 4000))
        for _ in range(windows):
            cur = _factor_columns(rng, 300)
            shifted = _factor_columns(rng, 300, shift_first=0.2)
            for method in methods:
                opt = CompareOptions(correction=method)
                null_alarms[method] += compare(prof, cur, opt).drifted
                detected[method] += compare(prof, shifted, opt).drifted
    n = references * windows
    rate = {m: k / n for m, k in null_alarms.items()}
    # The resampled null (500 windows) adds its own Monte Carlo error to the rate's.
    assert abs(rate["minp"] - ALPHA) <= 3 * math.sqrt(ALPHA * (1 - ALPHA) / n) + 0.01, rate
    assert rate["bonferroni"] < 0.6 * ALPHA and rate["bh"] < 0.6 * ALPHA, rate
    assert detected["minp"] > 1.2 * detected["bonferroni"] and detected["minp"] > 1.2 * detected["bh"], (
        detected
    )


def test_min_p_without_reference_rows_is_bonferroni() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    assert correct(p, 0.05, "minp")[0].tolist() == pytest.approx(bonferroni(p, 0.05)[0].tolist())
    # Independent features: the resampled null is Sidak's, 1 - (1 - p)^k, up to Monte Carlo error.
    rng = np.random.default_rng(3)
    prof = ReferenceProfile.from_columns({f"x{j}": rng.normal(size=3000) for j in range(8)})
    null = min_p_null(prof, [Member(f"x{j}", "ks") for j in range(8)], 200, 2000)
    for t in (0.005, 0.02, 0.1):
        sidak = 1 - (1 - t) ** 8
        assert abs(float(np.mean(null <= t)) - sidak) < 4 * math.sqrt(sidak * (1 - sidak) / 2000) + 0.01


def test_corrections_match_statsmodels_definitions() -> None:
    p = [0.01, 0.04, 0.03, 0.2]
    adj, rej = benjamini_hochberg(p, 0.05)
    assert adj.tolist() == pytest.approx([0.04, 0.0533333, 0.0533333, 0.2], rel=1e-5) and rej.tolist() == [
        True,
        False,
        False,
        False,
    ]
    adj, rej = bonferroni(p, 0.05)
    assert adj.tolist() == pytest.approx([0.04, 0.16, 0.12, 0.8]) and rej.tolist() == [
        True,
        False,
        False,
        False,
    ]


def test_mmd_and_classifier_calibrated_and_see_a_correlation_change() -> None:
    rng = np.random.default_rng(12)
    cov_shift = np.array([[1.0, 0.8], [0.8, 1.0]])
    fp_mmd = fp_c2st = 0
    runs = 40
    for s in range(runs):
        ref = rng.normal(size=(400, 2))
        fp_mmd += _p(MMD(ref, permutations=100, seed=s).test(rng.normal(size=(200, 2))).p_value) <= ALPHA
        fp_c2st += _p(ClassifierTwoSample(seed=s).test(ref, rng.normal(size=(400, 2))).p_value) <= ALPHA
    assert fp_mmd / runs <= 0.15 and fp_c2st / runs <= 0.15
    # Same marginals, new correlation: invisible to per-feature tests, visible to both.
    ref = rng.normal(size=(600, 2))
    cur = rng.multivariate_normal([0, 0], cov_shift, size=400)
    assert _p(MMD(ref, permutations=200).test(cur).p_value) <= 0.01
    assert _p(ClassifierTwoSample().test(ref, cur).p_value) <= 0.01
    prof = ReferenceProfile.from_columns({"a": ref[:, 0], "b": ref[:, 1]}, multivariate_rows=600)
    report = compare(prof, {"a": cur[:, 0], "b": cur[:, 1]}, CompareOptions(test="mmd"))
    assert report.drifted and report.multivariate is not None


def test_anderson_fast_path_equals_the_tie_aware_formula() -> None:
    rng = np.random.default_rng(13)
    prof = feature_profile("x", rng.normal(size=3000), "numeric")
    cur = rng.normal(0.1, size=700)
    fast = UNIVARIATE["anderson"].compare(prof, cur)
    prof.__dict__["_has_ties"] = True  # force the general (midrank) path
    slow = UNIVARIATE["anderson"].compare(prof, cur)
    assert fast.statistic == pytest.approx(slow.statistic) and fast.p_value == pytest.approx(slow.p_value)
    assert fast.distance == pytest.approx(slow.distance)
