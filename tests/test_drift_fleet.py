"""Drift monitors at fleet scale, through the real service: calibration off the detector loop
(a monitor still calibrating never delays another's verdict, and says it uses Bonferroni
meanwhile), calibrations kept across a restart, detector timing exported."""

from __future__ import annotations

from typing import Any

import numpy as np

from tests.harness import ServiceHandle
from tests.otel_helpers import post_kserve

FEATURES = 6


def _rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[list[float]]:
    x = rng.normal(size=(n, FEATURES))
    x[:, 0] += shift
    return x.round(4).tolist()


def _send(svc: ServiceHandle, rng: np.random.Generator, n: int, shift: float = 0.0, tag: str = "r") -> None:
    for i in range(0, n, 50):
        post_kserve(
            svc, f"{tag}-{i}", "fleet", {"instances": _rows(rng, 50, shift)}, {"predictions": [1] * 50}
        )


def _reference(rng: np.random.Generator) -> dict[str, Any]:
    return {"rows": [{f"f{j}": v for j, v in enumerate(row)} for row in _rows(rng, 2000)]}


def _monitor(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "data",
        "service": "fleet",
        "reference": {"dataset": True},
        "window": {"size": 400, "min_size": 100},
        **extra,
    }


def _status(svc: ServiceHandle, name: str) -> dict[str, Any]:
    return dict(svc.get(f"/api/v1/monitors/{name}")["status"])


def test_a_calibrating_monitor_never_delays_another_monitors_verdict(service_factory) -> None:
    # The slow monitor's calibration (100,000 resampled windows) takes minutes, far longer
    # than this test waits. Detectors run on their own schedule (1 s).
    svc: ServiceHandle = service_factory({"detectors": {"interval": 1}})
    rng = np.random.default_rng(1)
    svc.post("/api/v1/monitors", _monitor("slow", null_windows=100_000))
    svc.post("/api/v1/monitors", _monitor("quick", correction="bh"))
    svc.post("/api/v1/monitors/slow/reference", _reference(rng))
    svc.post("/api/v1/monitors/quick/reference", _reference(rng))
    _send(svc, rng, 400, shift=1.0)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 400)

    # Both reach a verdict within a few intervals: the quick monitor is not held behind the
    # slow one's calibration, and the slow one decides with Bonferroni meanwhile, saying so.
    quick = svc.wait_for(lambda: (s := _status(svc, "quick"))["status"] == "drift" and s, timeout=30)
    slow = svc.wait_for(lambda: (s := _status(svc, "slow"))["status"] == "drift" and s, timeout=30)
    assert "calibration" not in quick  # bh needs none
    assert slow["calibration"] == "pending"
    assert slow["report"]["calibration"] == "pending"
    finding = svc.wait_for(lambda: svc.findings(kind="data_drift", monitor="slow"), timeout=10)[0]
    assert finding["evidence"]["calibration"] == "pending/bonferroni"
    assert finding["evidence"]["drifted_features"] == ["f0"]

    _, _, body = svc.request("GET", "/metrics", b"", {})
    text = body.decode()
    assert 'mlvigil_drift_calibration_pending{monitor="slow"} 1.0' in text
    assert 'mlvigil_detector_evaluation_seconds_count{detector="drift:quick"}' in text
    assert 'mlvigil_detector_lag_seconds{detector="drift:slow"}' in text


def test_calibrations_survive_a_restart(service_factory) -> None:
    # A calibration worker process (the default), a small calibration.
    svc: ServiceHandle = service_factory({"detectors": {"interval": 3600}})
    rng = np.random.default_rng(2)
    svc.post("/api/v1/monitors", _monitor("kept", null_windows=200))
    svc.post("/api/v1/monitors/kept/reference", _reference(rng))
    _send(svc, rng, 400)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 400)

    svc.evaluate()
    assert _status(svc, "kept")["calibration"] == "pending"  # queued, never computed inline

    def calibrated() -> bool:
        svc.evaluate()
        return _status(svc, "kept").get("calibration") == "ready"

    svc.wait_for(calibrated, timeout=60, interval=0.5)
    minp_verdict = _status(svc, "kept")["report"]

    svc.restart()
    # The first evaluation after the restart already uses the stored calibration.
    svc.evaluate()
    after = _status(svc, "kept")
    assert after["calibration"] == "ready"
    assert after["report"]["p_value"] == minp_verdict["p_value"]


def test_the_stores_feature_columns_match_parsing_each_rows_json(tmp_path) -> None:
    """DuckDB's extraction (what monitors read) gives exactly the values and category labels
    that parsing each row's JSON in Python gives (the Store default), edge cases included."""
    import json

    from mlvigil.core.records import RecordBatch
    from mlvigil.core.store.base import Store
    from mlvigil.core.store.duckdb import DuckDBStore

    docs: list[Any] = [
        {"num": 1.5, "text": "x", "flag": True, "int": 3, "whole": 2.0, "nested": [1], "null": None},
        {"num": 2, "big": 12345678901234567891, "huge": 1e20, "small": 0.1, "zip": "02139", "str_num": "3.5"},
        {"text": "true", "whole": -0.0, "flag": False, 'quo"te': 1, "uni": "ü"},
        {},
        None,
    ]
    n = len(docs)
    batch = RecordBatch()
    batch.columns["inferences"] = {
        "ts": [float(i) for i in range(n)],
        "service": ["s"] * n,
        "model": ["m"] * n,
        "model_version": [None] * n,
        "request_id": [str(i) for i in range(n)],
        "features": [None if d is None else json.dumps(d) for d in docs],
        "prediction": [None] * n,
        "score": [None] * n,
        "latency_s": [None] * n,
        "source": ["t"] * n,
    }
    store = DuckDBStore(tmp_path)
    try:
        store.append(batch)
        for kw in ({}, {"last": 3}, {"numeric": ["num", "int", "text"], "text": ["zip", "flag", "absent"]}):
            got = store.feature_window(where={"model": "m"}, **kw)  # type: ignore[arg-type]
            want = Store.feature_window(store, where={"model": "m"}, **kw)  # type: ignore[arg-type]
            assert [c.tolist() for c in got[0].values()] == [list(c) for c in want[0].values()]
            num = {k: [None if v != v else v for v in c.tolist()] for k, c in got[1].items()}
            assert num == want[1]
            assert {k: c.tolist() for k, c in got[2].items()} == want[2]
        full = store.feature_window(where={"model": "m"})[2]
        assert full["flag"].tolist() == ["True", None, "False", None, None]
        assert full["big"].tolist()[1] == "12345678901234567891" and full["zip"].tolist()[1] == "02139"
        assert 'quo"te' not in full
    finally:
        store.close()
