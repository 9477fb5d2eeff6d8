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


def default_test(profile: FeatureProfile) -> UnivariateTest:
    """The test used when a monitor says ``test: auto``.

    Numeric features: Anderson-Darling, the EDF test with the best power against both
    location and scale changes at every sample size, with accurate small p-values (so it
    survives multiple-testing correction). Categorical and low-cardinality numeric
    features: chi-squared with sparse cells pooled and unseen categories in their own cell.
    """
    return UNIVARIATE["anderson"] if isinstance(profile, NumericProfile) else UNIVARIATE["chi2"]


def test_for(name: str, profile: FeatureProfile) -> UnivariateTest:
    """The named test, or the default where the named one does not accept the feature's kind."""
    if name == "auto" or name in MULTIVARIATE:
        return default_test(profile)
    test = UNIVARIATE[name]
    return test if profile.kind in test.accepts else default_test(profile)


__all__ = [
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
