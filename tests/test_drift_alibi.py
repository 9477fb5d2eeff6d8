"""The optional alibi-detect backend: never imported unless a monitor asks for it."""

from __future__ import annotations

import copy
import itertools
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from detectors.drift.alibi_backend import ONLINE_DETECTORS
from detectors.drift.compare import CompareOptions
from detectors.drift.config import MonitorConfig
from detectors.drift.profile import ReferenceProfile

ONLINE_KINDS = sorted(ONLINE_DETECTORS)


def test_native_monitors_never_import_alibi_detect() -> None:
    code = (
        "import sys, numpy as np\n"
        "from detectors.drift.plugin import PLUGIN\n"
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


# --- Online detectors (CVMDriftOnline, MMDDriftOnline, LSDDDriftOnline) ---------------------

ONLINE_ERT, ONLINE_WINDOW, N_FEATURES = 100, 10, 3
#: A stream with no change, ert / 4 rows long (seeded: a false alarm within ert / 4 steps
#: has a chance of about 1 - exp(-1/4), 22%, whatever the detector).
NULL_STREAM = np.random.default_rng(2).normal(size=(ONLINE_ERT // 4, N_FEATURES))


def _online(kind: str) -> Any:
    """A seeded online detector on 300 standard normal reference rows (alibi-detect draws
    its simulations from numpy's and torch's global generators)."""
    pytest.importorskip("alibi_detect", exc_type=ImportError)
    if kind != "CVMDriftOnline":
        torch = pytest.importorskip("torch")
        torch.manual_seed(0)
    from detectors.drift.alibi_backend import online_detector

    np.random.seed(0)
    x_ref = np.random.default_rng(1).normal(size=(300, N_FEATURES))
    return online_detector(
        kind, x_ref, ert=ONLINE_ERT, window_size=ONLINE_WINDOW, n_bootstraps=10 * ONLINE_ERT
    )


def _warmup(kind: str) -> int:
    """Observations after a (re)start before the first step: alibi-detect's MMD and LSDD
    start with a window of reference rows, CVM waits for a full window."""
    return ONLINE_WINDOW if kind == "CVMDriftOnline" else 1


@pytest.mark.parametrize("kind", ONLINE_KINDS)
def test_online_no_drift_stream_raises_no_alarm(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import detectors.drift.alibi_backend as backend

    det = _online(kind)
    assert det.window_size == ONLINE_WINDOW and det.step == -1
    untrimmed = copy.deepcopy(det)
    stream = NULL_STREAM
    stats = []
    monkeypatch.setattr(backend, "_TRIM_EVERY", 8)
    for i, x in enumerate(stream):
        assert det.update(x) is False, f"false alarm at row {i}"
        stats.append(det.statistic)
    assert det.step == len(stream) - _warmup(kind)
    assert math.isfinite(det.statistic) and det.statistic <= det.threshold < math.inf
    # alibi-detect's per-step histories are trimmed (else they grow without end) and
    # trimming changes nothing: the same statistics as an untrimmed copy.
    monkeypatch.setattr(backend, "_TRIM_EVERY", 10**9)
    assert untrimmed.update_many(stream) == []
    assert untrimmed.statistic == det.statistic
    inner = getattr(det.detector, "_detector", det.detector)
    assert len(inner.test_stats) <= ONLINE_WINDOW + 8 < len(stream)


@pytest.mark.parametrize("kind", ONLINE_KINDS)
def test_online_clear_shift_is_caught_within_a_few_windows(kind: str) -> None:
    det = _online(kind)
    before = NULL_STREAM
    after = np.random.default_rng(3).normal(size=(5 * ONLINE_WINDOW, N_FEATURES))
    after[:, 0] += 2.0  # one feature moves by two standard deviations
    alarms = det.update_many(np.vstack([before, after]))
    assert alarms, "the shift was never caught"
    first = alarms[0]
    assert len(before) <= first < len(before) + 3 * ONLINE_WINDOW, alarms
    # After an alarm the detector restarts: CVM needs a new full window before its next
    # step, so alarms are at least a window apart; MMD/LSDD restart on reference rows.
    if kind == "CVMDriftOnline":
        assert det.feature_statistics.shape == (N_FEATURES,)
        assert all(b - a >= ONLINE_WINDOW for a, b in itertools.pairwise(alarms))
    # The alarming step's statistic and threshold stay until the next observation.
    det = _online(kind)
    stream = np.vstack([before, after])
    for x in stream[: first + 1]:
        fired = det.update(x)
    assert fired and det.statistic > det.threshold
    if kind == "CVMDriftOnline":
        assert det.feature == 0  # the feature that moved
    det.update(stream[first + 1])
    assert int(det.detector.t) == 1 and det.step == (-1 if kind == "CVMDriftOnline" else 0)


@pytest.mark.parametrize("kind", ONLINE_KINDS)
def test_online_reset_restarts_the_stream(kind: str) -> None:
    det = _online(kind)
    assert det.update_many(NULL_STREAM[: ONLINE_WINDOW + 2]) == []
    assert det.step == ONLINE_WINDOW + 2 - _warmup(kind)
    det.reset()
    assert det.step == -1 and int(det.detector.t) == 0


def test_online_detector_rejects_bad_arguments_before_importing_alibi() -> None:
    from detectors.drift.alibi_backend import online_detector

    x_ref = np.zeros((300, 2))
    with pytest.raises(ValueError, match="online detector"):
        online_detector("KSDrift", x_ref, ert=100, window_size=10, n_bootstraps=1000)
    with pytest.raises(ValueError, match="n_bootstraps"):
        online_detector("CVMDriftOnline", x_ref, ert=100, window_size=10, n_bootstraps=500)
    with pytest.raises(ValueError, match="reference rows"):
        online_detector("LSDDDriftOnline", x_ref[:30], ert=100, window_size=10, n_bootstraps=1000)
    with pytest.raises(ValueError, match="finite"):
        online_detector(
            "MMDDriftOnline", np.full((300, 2), np.nan), ert=100, window_size=10, n_bootstraps=1000
        )


def test_alibi_backend_module_does_not_import_alibi_detect() -> None:
    code = (
        "import sys\n"
        "import detectors.drift.alibi_backend\n"
        "assert 'alibi_detect' not in sys.modules, 'alibi_detect imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_streaming_monitor_with_the_alibi_backend(tmp_path: Any) -> None:
    """A streaming monitor with ``backend: alibi`` runs CVMDriftOnline over the store's rows."""
    pytest.importorskip("alibi_detect", exc_type=ImportError)
    from detectors.drift.config import DriftConfig
    from detectors.drift.monitor import MonitorDetector
    from mlvigil.core.store.duckdb import DuckDBStore
    from tests.test_drift_stream_monitor import _inferences

    rng = np.random.default_rng(4)
    store = DuckDBStore(tmp_path / "data")
    try:

        def add(n: int, t0: float, mu: float, rid: str) -> float:
            rows = [{"x": float(rng.normal(mu)), "y": float(rng.normal())} for _ in range(n)]
            return _inferences(store, rows, t0, rid)

        add(1000, 1000.0, 0.0, "ref")
        cfg = MonitorConfig.model_validate(
            {
                "name": "a",
                "service": "fraud-api",
                "model": "fraud",
                "backend": "alibi",
                "reference": {"start": 1000, "end": 1100},
                "streaming": {"window_size": 20, "stride": 1, "ert": 200, "n_bootstraps": 2000, "lag": 0},
            }
        )
        det = MonitorDetector(cfg.resolved(DriftConfig().defaults))
        t = add(40, 2000.0, 0.0, "ok")
        assert det.evaluate(store, t) == [] and det.last["detector"] == "alibi:CVMDriftOnline"
        t = add(100, t, 2.0, "shift")
        found = det.evaluate(store, t)
        assert len(found) == 1 and found[0].evidence["streaming"]["detector"] == "alibi:CVMDriftOnline"
        assert found[0].evidence["top_features"][0]["feature"] == "x"
    finally:
        store.close()
