"""Monitors in streaming mode: rows fed to sequential detectors, Findings opened and closed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.monitor import MonitorDetector
from detectors.drift.streaming import OnlineCVM
from mlvigil.core.detector_loop import DetectorLoop
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

STREAMING = {"window_size": 100, "stride": 20, "ert": 20_000, "n_bootstraps": 10_000, "lag": 0, "hold": 300}


def _rows(rng: np.random.Generator, n: int, amount_mu: float = 0.0) -> list[dict]:
    return [
        {
            "amount": float(rng.lognormal(3 + amount_mu, 1)),
            "age": float(rng.normal(40, 10)),
            "country": str(rng.choice(["fr", "de", "es"], p=(0.6, 0.3, 0.1))),
        }
        for _ in range(n)
    ]


def _inferences(store: DuckDBStore, rows: list[dict], t0: float, rid: str) -> float:
    """Rows 0.01 s apart from ``t0``; returns the time just after the last one."""
    batch = RecordBatch()
    for i, feats in enumerate(rows):
        batch.add(
            "inferences",
            ts=t0 + i * 0.01,
            service="fraud-api",
            model="fraud",
            model_version="v1",
            request_id=f"{rid}{i}",
            features=json.dumps(feats),
            prediction="1",
            source="otlp",
        )
    store.append(batch)
    return t0 + len(rows) * 0.01


def _monitor(**kw: object) -> MonitorDetector:
    cfg = DriftConfig.model_validate(
        {"monitors": [{"name": "fraud-stream", "service": "fraud-api", "model": "fraud", **kw}]}
    )
    return MonitorDetector(cfg.monitors[0].resolved(cfg.defaults))


def test_streaming_monitor_alarms_on_the_shift_names_the_feature_and_resolves(store: DuckDBStore) -> None:
    rng = np.random.default_rng(0)
    _inferences(store, _rows(rng, 3000), 1000.0, "ref")
    det = _monitor(reference={"start": 1000, "end": 1100}, streaming=STREAMING)
    book = FindingBook(store)
    loop = DetectorLoop(store, book, [det], 15)

    # 1000 clean rows in five evaluations: the cursor follows the stream, nothing fires.
    t = 2000.0
    for k in range(5):
        t = _inferences(store, _rows(rng, 200), t, f"clean{k}-")
        assert loop.evaluate_all(t) == []
    assert det.last["mode"] == "streaming" and det.last["rows_streamed"] == 100 + 800
    assert det.last["detector"] == "cvm" and det.last["status"] == "ok"

    # The amount moves: the alarm comes within a few strides and names it first.
    shift_start = t
    t = _inferences(store, _rows(rng, 400, amount_mu=0.8), t, "shift-")
    fired = loop.evaluate_all(t)
    assert [(f.kind, what) for f, what in fired] == [("data_drift", "fired")]
    finding = fired[0][0]
    stream = finding.evidence["streaming"]
    assert stream["detector"] == "cvm" and stream["statistic"] > stream["threshold"]
    assert shift_start < stream["first_alarm_ts"] <= shift_start + 150 * 0.01
    assert stream["alarms"] >= 2 and stream["alarm_ts"] > stream["first_alarm_ts"]
    assert finding.evidence["top_features"][0]["feature"] == "amount"
    assert max(stream["feature_statistics"], key=stream["feature_statistics"].get) == "amount"
    assert "amount" in finding.summary and "streaming cvm alarm" in finding.summary
    assert "input distribution moved away from the reference" in finding.summary
    # Only the features over the threshold on their own are named: age and country did not move.
    assert [f["feature"] for f in finding.evidence["top_features"]] == ["amount"]
    assert "age" not in finding.summary and "country" not in finding.summary

    # Back to normal: once `hold` rows pass without an alarm the Finding resolves.
    t = _inferences(store, _rows(rng, 600), t, "back-")
    resolved = loop.evaluate_all(t)
    assert [(f.id, what) for f, what in resolved] == [(finding.id, "resolved")]


def test_streaming_alarm_that_ends_within_one_evaluation_still_fires_then_resolves(
    store: DuckDBStore,
) -> None:
    """A shift that comes and goes between two evaluations (its hold rows all in one batch)
    is reported once, dated to its first alarm, and resolves at the next evaluation."""
    rng = np.random.default_rng(1)
    _inferences(store, _rows(rng, 3000), 1000.0, "ref")
    det = _monitor(reference={"start": 1000, "end": 1100}, streaming=STREAMING)
    loop = DetectorLoop(store, FindingBook(store), [det], 15)
    t = _inferences(store, _rows(rng, 200), 2000.0, "clean-")
    assert loop.evaluate_all(t) == []
    # One batch: 400 shifted rows, then 600 clean ones (more than hold=300).
    shift_start = t
    t = _inferences(store, _rows(rng, 400, amount_mu=0.8), t, "shift-")
    t = _inferences(store, _rows(rng, 600), t, "back-")
    fired = loop.evaluate_all(t)
    assert [(f.kind, what) for f, what in fired] == [("data_drift", "fired")]
    stream = fired[0][0].evidence["streaming"]
    assert shift_start < stream["first_alarm_ts"] <= shift_start + 150 * 0.01
    t = _inferences(store, _rows(rng, 100), t, "later-")
    resolved = loop.evaluate_all(t)
    assert [(f.id, what) for f, what in resolved] == [(fired[0][0].id, "resolved")]


def test_streaming_false_alarms_of_a_monitor_come_ert_rows_apart() -> None:
    # Three correlated features calibrated jointly, a step every 5 rows: ERT 100 steps = 500 rows.
    rng = np.random.default_rng(5)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]])
    det = OnlineCVM(
        rng.multivariate_normal(np.zeros(3), cov, size=4000),
        window_size=20,
        stride=5,
        ert=100,
        n_bootstraps=3000,
    )
    stream = rng.multivariate_normal(np.zeros(3), cov, size=150_000)
    alarms = np.asarray(det.update_many(stream))
    runs = np.diff(np.r_[-1, alarms]) - 20  # monitoring restarts once the window is full again
    assert len(runs) > 100
    assert 0.7 * 500 <= float(np.mean(runs)) <= 1.4 * 500, float(np.mean(runs))


def test_streaming_mmd_monitor(store: DuckDBStore) -> None:
    rng = np.random.default_rng(2)
    _inferences(store, _rows(rng, 2000), 1000.0, "ref")
    det = _monitor(
        reference={"start": 1000, "end": 1100},
        streaming={
            **STREAMING,
            "detector": "mmd",
            "window_size": 50,
            "stride": 10,
            "ert": 5000,
            "n_bootstraps": 5000,
        },
    )
    t = _inferences(store, _rows(rng, 300), 2000.0, "a")
    assert det.evaluate(store, t) == []
    assert det.last["detector"] == "mmd"
    t = _inferences(store, _rows(rng, 300, amount_mu=1.0), t, "b")
    found = det.evaluate(store, t)
    assert len(found) == 1 and found[0].evidence["streaming"]["detector"] == "mmd"
    assert found[0].evidence["streaming"]["first_alarm_ts"] < t - 1.5  # early in the shifted rows


def _labelled(
    store: DuckDBStore,
    pairs: list[tuple[object, object]],
    t0: float,
    rid: str,
    *,
    model: str = "m",
    label_delay: float = 50,
) -> float:
    """(label, prediction) pairs one second apart from ``t0``, each label ``label_delay``
    after its prediction; returns the time just after the last one."""
    preds, labels = RecordBatch(), RecordBatch()
    for i, (y, pred) in enumerate(pairs):
        preds.add(
            "inferences",
            ts=t0 + i,
            service="s",
            model=model,
            model_version="v1",
            request_id=f"{rid}{i}",
            features="{}",
            prediction=json.dumps(pred),
            source="otlp",
        )
        labels.add(
            "labels", ts=t0 + i + label_delay, request_id=f"{rid}{i}", service="s", model=model, label=str(y)
        )
    store.append(preds)
    store.append(labels)
    return t0 + len(pairs)


def _classified(
    store: DuckDBStore, n: int, t0: float, error_rate: float, rng: np.random.Generator, rid: str
) -> float:
    """``n`` labelled 0/1 predictions, wrong at ``error_rate``."""
    pairs: list[tuple[object, object]] = []
    for _ in range(n):
        y = int(rng.random() < 0.4)
        pairs.append((y, y if rng.random() >= error_rate else 1 - y))
    return _labelled(store, pairs, t0, rid)


def test_streaming_performance_monitor_runs_adwin_on_the_error_stream(store: DuckDBStore) -> None:
    rng = np.random.default_rng(3)
    t = _classified(store, 2000, 1000.0, 0.08, rng, "ref")
    cfg = MonitorConfig.model_validate(
        {
            "name": "perf",
            "kind": "performance",
            "service": "s",
            "model": "m",
            "reference": {"start": 1000, "end": 3000},
            "streaming": {"lag": 0, "hold": 500},
            "label_delay": 100,
        }
    )
    det = MonitorDetector(cfg.resolved(DriftConfig().defaults))
    t = _classified(store, 1500, t, 0.08, rng, "ok")
    assert det.evaluate(store, t + 100) == [] and det.last["detector"] == "adwin"
    t = _classified(store, 1500, t, 0.3, rng, "bad")
    found = det.evaluate(store, t + 100)
    assert [f.kind for f in found] == ["performance_drift"]
    ev = found[0].evidence
    assert ev["reference_error"] < 0.12 and ev["current_error"] > 0.18
    assert ev["streaming"]["detector"] == "adwin"
    assert t - 1500 < ev["streaming"]["first_alarm_ts"] < t - 1000  # caught in the first third
    # The worse level persists without new alarms: the Finding stays open ...
    t = _classified(store, 300, t, 0.3, rng, "still")
    assert len(det.evaluate(store, t + 100)) == 1
    # ... and closes once ADWIN has cut back to the old error rate.
    t = _classified(store, 2500, t, 0.08, rng, "fixed")
    assert det.evaluate(store, t + 100) == [] and det.last["statistic"] < 0.12


@pytest.mark.parametrize(
    ("streaming", "kind", "message"),
    [
        ({"ert": 1_000_000}, "data", "n_bootstraps=10000 cannot calibrate ert=1000000"),
        ({"stride": 500}, "data", "stride (500) must not exceed window_size (200)"),
        ({"detector": "adwin"}, "data", "watches error streams"),
        ({"detector": "cvm"}, "performance", "watches distributions"),
        ({"ert": 50_000, "backend": "alibi"}, "data", "cannot calibrate alibi-detect's online detectors"),
    ],
)
def test_bad_streaming_config_names_the_problem(streaming: dict, kind: str, message: str) -> None:
    backend = streaming.pop("backend", "native")
    with pytest.raises(ValidationError, match="streaming") as err:
        MonitorConfig.model_validate(
            {
                "name": "m",
                "kind": kind,
                "reference": {"dataset": True},
                "streaming": streaming,
                "backend": backend,
            }
        )
    assert message in str(err.value)


def test_streaming_regression_monitor_runs_page_hinkley_on_absolute_errors(store: DuckDBStore) -> None:
    rng = np.random.default_rng(6)

    def add(n: int, t0: float, noise: float, rid: str) -> float:
        pairs: list[tuple[object, object]] = []
        for _ in range(n):
            y = float(rng.normal(100, 20))
            pairs.append((y, y + rng.normal(0, noise)))
        return _labelled(store, pairs, t0, rid, model="price", label_delay=10)

    t = add(1000, 1000.0, 5.0, "ref")
    cfg = MonitorConfig.model_validate(
        {
            "name": "price",
            "kind": "performance",
            "service": "s",
            "model": "price",
            "metrics": ["mae"],
            "reference": {"start": 1000, "end": 2000},
            "streaming": {"lag": 0},
            "label_delay": 20,
        }
    )
    det = MonitorDetector(cfg.resolved(DriftConfig().defaults))
    t = add(1000, t, 5.0, "ok")
    assert det.evaluate(store, t + 20) == [] and det.last["detector"] == "page_hinkley"
    t = add(300, t, 9.0, "worse")  # mean absolute error about 4 -> 7
    found = det.evaluate(store, t + 20)
    assert [f.kind for f in found] == ["performance_drift"]
    ev = found[0].evidence
    assert "absolute error" in found[0].summary and ev["current_error"] > 1.3 * ev["reference_error"]
    assert t - 300 < ev["streaming"]["first_alarm_ts"] < t - 150
