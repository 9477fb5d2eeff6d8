"""The optional alibi-detect backend: never imported unless a monitor asks for it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from detectors.drift.compare import CompareOptions
from detectors.drift.config import MonitorConfig
from detectors.drift.profile import ReferenceProfile


def test_native_monitors_never_import_alibi_detect() -> None:
    code = (
        "import sys, numpy as np\n"
        "from detectors.drift import build\n"
        "from detectors.drift.monitor import MonitorDetector\n"
        "from detectors.drift.compare import compare\n"
        "from detectors.drift.profile import ReferenceProfile\n"
        "p = ReferenceProfile.from_columns({'a': np.arange(100.0)})\n"
        "compare(p, {'a': np.arange(50.0)})\n"
        "assert 'alibi_detect' not in sys.modules, 'alibi_detect imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_unknown_alibi_detector_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="alibi-detect detector"):
        MonitorConfig.model_validate(
            {"name": "m", "reference": {"dataset": True}, "backend": "alibi", "alibi_detector": "NoSuchDrift"}
        )


@pytest.mark.parametrize("detector", ["KSDrift", "TabularDrift", "CVMDrift", "MMDDrift"])
def test_alibi_results_map_into_the_same_report(detector: str) -> None:
    pytest.importorskip("alibi_detect", exc_type=ImportError)
    from detectors.drift.alibi_backend import alibi_compare

    rng = np.random.default_rng(0)
    ref = {"a": rng.normal(size=1000), "b": rng.normal(size=1000)}
    cur = {"a": rng.normal(0.5, size=300), "b": rng.normal(size=300)}
    cfg = MonitorConfig.model_validate(
        {"name": "m", "reference": {"dataset": True}, "backend": "alibi", "alibi_detector": detector}
    )
    report = alibi_compare(cfg, ref, cur, ReferenceProfile.from_columns(ref), CompareOptions())
    assert report.drifted and report.test == f"alibi:{detector}"
    if report.multivariate is None:
        assert [f.feature for f in report.drifted_features] == ["a"]
