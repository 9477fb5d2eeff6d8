"""Univariate and multivariate two-sample drift tests, one per module."""

from __future__ import annotations

from detectors.drift.profile import FeatureProfile, NumericProfile
from detectors.drift.stats.anderson import AndersonDarling
from detectors.drift.stats.base import TestResult, UnivariateTest
from detectors.drift.stats.chi_squared import ChiSquared
from detectors.drift.stats.cvm import CramerVonMises
from detectors.drift.stats.hellinger import Hellinger
from detectors.drift.stats.jensen_shannon import JensenShannon
from detectors.drift.stats.ks import KolmogorovSmirnov
from detectors.drift.stats.missing import MissingRate
from detectors.drift.stats.psi import PopulationStabilityIndex
from detectors.drift.stats.wasserstein import Wasserstein

UNIVARIATE: dict[str, UnivariateTest] = {
    t.name: t
    for t in (
        KolmogorovSmirnov(),
        CramerVonMises(),
        AndersonDarling(),
        Wasserstein(),
        PopulationStabilityIndex(),
        JensenShannon(),
        Hellinger(),
        ChiSquared(),
    )
}
MULTIVARIATE = ("mmd", "classifier")
TEST_NAMES = ("auto", *UNIVARIATE, *MULTIVARIATE)


#: Windows at least this large use Kolmogorov-Smirnov on numeric features (see default_test).
LARGE_WINDOW = 300


def default_test(profile: FeatureProfile, n_current: int = 0) -> UnivariateTest:
    """The test used when a monitor says ``test: auto``.

    Numeric features, small windows (under ``LARGE_WINDOW`` rows): Anderson-Darling, the
    EDF test with the best power against location and above all scale changes where power
    is scarce, with accurate small p-values (so it survives multiple-testing correction).
    Larger windows: Kolmogorov-Smirnov; every EDF test catches location and scale changes
    there, and KS's largest-gap statistic keeps more power for changes confined to part of
    the distribution (a shifted subgroup) instead of spending it on the tails. Measured in
    bench/drift (breast-cancer, 100 rows: variance change 0.89 AD vs 0.47 KS; 500 rows,
    subgroup shift: 0.82 AD vs 0.90 KS; both under BH). Categorical and low-cardinality
    numeric features: chi-squared with sparse cells pooled and unseen categories in their
    own cell.
    """
    if not isinstance(profile, NumericProfile):
        return UNIVARIATE["chi2"]
    return UNIVARIATE["ks"] if n_current >= LARGE_WINDOW else UNIVARIATE["anderson"]


def test_for(name: str, profile: FeatureProfile, n_current: int = 0) -> UnivariateTest:
    """The named test, or the default where the named one does not accept the feature's kind."""
    if name == "auto" or name in MULTIVARIATE:
        return default_test(profile, n_current)
    test = UNIVARIATE[name]
    return test if profile.kind in test.accepts else default_test(profile, n_current)


__all__ = [
    "LARGE_WINDOW",
    "MULTIVARIATE",
    "TEST_NAMES",
    "UNIVARIATE",
    "AndersonDarling",
    "ChiSquared",
    "CramerVonMises",
    "Hellinger",
    "JensenShannon",
    "KolmogorovSmirnov",
    "MissingRate",
    "PopulationStabilityIndex",
    "TestResult",
    "UnivariateTest",
    "Wasserstein",
    "default_test",
    "test_for",
]
