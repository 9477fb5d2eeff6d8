"""The estimated_performance monitor kind over a real store: a drop found without labels,
the realised metric beside the estimate once labels arrive, and bad input refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.monitor import MonitorDetector
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

pytestmark = pytest.mark.timeout(60)


def _rows(rng: np.random.Generator, n: int, hard: bool = False) -> list[dict]:
    """A binary model whose score is calibrated; ``hard`` rows sit near its boundary."""
    x = rng.uniform(-0.3, 0.3, n) if hard else rng.normal(0, 1.5, n)
    p = 1 / (1 + np.exp(-3 * x))
    y = (rng.random(n) < p).astype(int)
    return [
        {"x": float(a), "other": float(b), "score": float(s), "prediction": int(s >= 0.5), "label": int(t)}
        for a, b, s, t in zip(x, rng.normal(size=n), p, y, strict=True)
    ]


def _send(store: DuckDBStore, rows: list[dict], t0: float, rid: str) -> None:
    batch = RecordBatch()
    for i, r in enumerate(rows):
        batch.add(
            "inferences",
            ts=t0 + i,
            service="s",
            model="m",
            model_version="v1",
            request_id=f"{rid}{i}",
            features=json.dumps({"x": r["x"], "other": r["other"]}),
            prediction=json.dumps(r["prediction"]),
            score=r["score"],
            source="otlp",
        )
    store.append(batch)


def _monitor(**kw: object) -> MonitorDetector:
    cfg = MonitorConfig.model_validate(
        {
            "name": "est",
            "kind": "estimated_performance",
            "service": "s",
            "model": "m",
            "reference": {"dataset": True},
            "metrics": ["accuracy", "f1", "auc"],
            "window": {"size": 400, "min_size": 100},
            "max_drop": 0.02,
            **kw,
        }
    )
    return MonitorDetector(cfg.resolved(DriftConfig().defaults))


def _columns(rows: list[dict]) -> dict[str, list]:
    return {k: [r[k] for r in rows] for k in rows[0]}


def test_a_drop_is_found_before_labels_then_the_realised_value_joins_it(store: DuckDBStore) -> None:
    rng = np.random.default_rng(0)
    det = _monitor()
    det.set_dataset(_columns(_rows(rng, 3000)))
    _send(store, _rows(rng, 400), 1000.0, "a")
    assert det.evaluate(store, 2000.0) == []
    assert det.last["status"] == "ok" and det.last["n_labelled"] == 0

    hard = _rows(rng, 400, hard=True)
    _send(store, hard, 3000.0, "b")
    found = det.evaluate(store, 4000.0)
    assert [f.kind for f in found] == ["performance_drift"]
    ev = found[0].evidence
    assert ev["estimated"] is True and ev["n_labelled"] == 0 and "accuracy" in ev["drifted_features"]
    acc = next(m for m in ev["metrics"] if m["metric"] == "accuracy")
    assert acc["value"] < acc["reference_lower"] - 0.02 and acc["realised"] is None
    assert acc["lower"] < acc["value"] < acc["upper"]
    assert "no labels yet" in found[0].summary
    assert [s["feature"] for s in ev["shifted_features"]] == ["x"]

    labels = RecordBatch()
    for i, r in enumerate(hard):
        labels.add(
            "labels", ts=5000.0 + i, request_id=f"b{i}", service="s", model="m", label=json.dumps(r["label"])
        )
    store.append(labels)
    found = det.evaluate(store, 6000.0)
    acc = next(m for m in found[0].evidence["metrics"] if m["metric"] == "accuracy")
    truth = float(np.mean([r["prediction"] == r["label"] for r in hard]))
    assert acc["realised"] == pytest.approx(truth)
    assert abs(acc["value"] - truth) < 0.08
    assert found[0].evidence["n_labelled"] == 400


def test_poor_calibration_is_reported_and_raises_no_finding(store: DuckDBStore) -> None:
    rng = np.random.default_rng(1)
    det = _monitor(estimation={"max_ece": 0.001})
    det.set_dataset(_columns(_rows(rng, 300)))
    _send(store, _rows(rng, 400, hard=True), 1000.0, "a")
    assert det.evaluate(store, 2000.0) == []
    assert det.last["status"] == "unreliable" and "max_ece" in det.last["reason"]


def test_regression_monitor_estimates_mae_with_dle(store: DuckDBStore) -> None:
    rng = np.random.default_rng(2)

    def rows(n: int, far: bool = False) -> list[dict]:
        x = rng.uniform(1.5, 3, n) * rng.choice([-1, 1], n) if far else rng.normal(size=n)
        y = x + rng.normal(size=n) * (0.1 + np.abs(x))
        return [
            {"x": float(a), "other": 0.0, "prediction": float(a), "score": None, "label": float(t)}
            for a, t in zip(x, y, strict=True)
        ]

    det = _monitor(metrics=["mae", "rmse"], max_drop=0.1)
    det.set_dataset(_columns(rows(2000)))
    _send(store, rows(400), 1000.0, "a")
    assert det.evaluate(store, 2000.0) == [] and det.last["status"] == "ok"
    _send(store, rows(400, far=True), 3000.0, "b")
    found = det.evaluate(store, 4000.0)
    assert found and set(found[0].evidence["drifted_features"]) == {"mae", "rmse"}
    assert found[0].evidence["method"] == "dle"


def test_a_sliding_window_applies_the_loss_model_to_its_new_rows_only(store: DuckDBStore) -> None:
    rng = np.random.default_rng(3)

    def rows(n: int) -> list[dict]:
        x = rng.normal(size=n)
        y = x + rng.normal(size=n) * (0.1 + np.abs(x))
        return [
            {"x": float(a), "other": 0.0, "prediction": float(a), "score": None, "label": float(t)}
            for a, t in zip(x, y, strict=True)
        ]

    det = _monitor(metrics=["mae"], max_drop=0.1)  # window: the latest 400 rows (sliding)
    det.set_dataset(_columns(rows(1000)))
    _send(store, rows(400), 1000.0, "a")
    det.evaluate(store, 2000.0)
    assert det.last["fit"]["rows"] == {"predicted": 400, "from_last_window": 0}
    _send(store, rows(40), 2100.0, "b")
    det.evaluate(store, 3000.0)
    assert det.last["n_current"] == 400
    assert det.last["fit"]["rows"] == {"predicted": 440, "from_last_window": 360}


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"metrics": ["accuracy", "mae"]}, "mix classification"),
        ({"metrics": ["mae"], "estimation": {"method": "cbpe"}}, "does not estimate"),
        ({"streaming": {"detector": "adwin"}}, "remove streaming"),
        ({"estimation": {"method": "nope"}}, "method"),
    ],
)
def test_config_errors_say_what_to_change(kw: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _monitor(**kw)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"x": [1.0] * 50, "score": [0.5] * 50}, "needs a 'label' column"),
        ({"x": [1.0] * 50, "label": [1] * 50}, "model's output"),
        ({"prediction": [1] * 50, "label": [1, 0] * 25}, "need probabilities"),
        ({"score": [0.2, 0.8] * 5, "label": [0, 1] * 5}, "need at least 20"),
    ],
)
def test_unusable_reference_is_refused_with_the_reason(columns: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _monitor().set_dataset(columns)


def _data_monitor(**kw: object) -> MonitorDetector:
    cfg = MonitorConfig.model_validate(
        {
            "name": "feat",
            "kind": "data",
            "service": "s",
            "model": "m",
            "reference": {"dataset": True},
            "window": {"size": 400, "min_size": 100},
            "metrics": ["accuracy"],
            "max_drop": 0.02,
            **kw,
        }
    )
    return MonitorDetector(cfg.resolved(DriftConfig().defaults))


def test_drift_findings_carry_the_estimated_impact_and_can_require_it(store: DuckDBStore) -> None:
    rng = np.random.default_rng(3)
    reference = _columns(_rows(rng, 3000))
    annotate, require = (
        _data_monitor(performance_impact="annotate"),
        _data_monitor(performance_impact="require"),
    )
    for det in (annotate, require):
        det.set_dataset(reference)

    # A feature the model ignores moves: drift, but the estimated accuracy holds.
    harmless = _rows(rng, 400)
    for r in harmless:
        r["other"] += 2.0
    _send(store, harmless, 1000.0, "a")
    found = annotate.evaluate(store, 2000.0)
    assert found and found[0].evidence["drifted_features"] == ["other"]
    impact = found[0].evidence["performance_impact"]
    assert impact["moved"] is False and impact["metrics"][0]["metric"] == "accuracy"
    assert "within the reference range" in found[0].summary
    assert require.evaluate(store, 2000.0) == []
    assert require.last["status"] == "drift without estimated performance impact"

    # The model's input moves towards its decision boundary: drift that costs accuracy.
    _send(store, _rows(rng, 400, hard=True), 3000.0, "b")
    for det in (annotate, require):
        found = det.evaluate(store, 4000.0)
        assert found and "x" in found[0].evidence["drifted_features"]
        assert found[0].evidence["performance_impact"]["moved"] is True
        assert "estimated accuracy" in found[0].summary


def test_performance_impact_needs_a_labelled_reference() -> None:
    with pytest.raises(ValidationError, match="labelled reference"):
        _data_monitor(performance_impact="annotate", reference={"last": 3600})
    with pytest.raises(ValidationError, match="windowed data and prediction"):
        _monitor(kind="llm", performance_impact="annotate")


def test_hostile_probability_vectors_are_refused() -> None:
    det = _monitor()
    wide = {"prediction": [[1 / 500] * 500] * 30, "label": [0, 1] * 15}
    with pytest.raises(ValueError, match="at most 100"):
        det.set_dataset(wide)
    nan = {"prediction": [[0.2, 0.3, float("nan")]] * 30, "label": [0, 1, 2] * 10}
    with pytest.raises(ValueError, match="finite"):
        det.set_dataset(nan)
