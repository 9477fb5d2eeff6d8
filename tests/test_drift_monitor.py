"""Drift monitors as Detectors over the real DuckDB store: reference, windows, Findings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detectors.drift.config import DriftConfig, MonitorConfig
from detectors.drift.monitor import REFERENCE_DOCS, MonitorDetector
from detectors.drift.profile import rows_to_columns
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore


def _inferences(
    store: DuckDBStore, rows: list[dict], t0: float, model: str = "fraud", version: str = "v1", rid: str = "r"
) -> None:
    batch = RecordBatch()
    for i, feats in enumerate(rows):
        batch.add(
            "inferences",
            ts=t0 + i * 0.01,
            service="fraud-api",
            model=model,
            model_version=version,
            request_id=f"{rid}{i}",
            features=json.dumps(feats),
            prediction=json.dumps(feats.pop("_pred", 1)),
            score=feats.pop("_score", None),
            source="otlp",
        )
    store.append(batch)


def _rows(
    rng: np.random.Generator,
    n: int,
    amount_mu: float = 0.0,
    country_p: tuple = (0.6, 0.3, 0.1),
    new_country: float = 0.0,
) -> list[dict]:
    out = []
    for _ in range(n):
        country = rng.choice(["fr", "de", "es"], p=country_p)
        if rng.random() < new_country:
            country = "zz"
        out.append(
            {
                "amount": float(rng.lognormal(3 + amount_mu, 1)),
                "age": float(rng.normal(40, 10)),
                "country": str(country),
                "items": int(rng.integers(1, 4)),
            }
        )
    return out


def _monitor(**kw: object) -> MonitorDetector:
    cfg = DriftConfig.model_validate(
        {"monitors": [{"name": "fraud-features", "service": "fraud-api", "model": "fraud", **kw}]}
    )
    return MonitorDetector(cfg.monitors[0].resolved(cfg.defaults))


def test_data_drift_finding_names_the_shifted_features(store: DuckDBStore) -> None:
    rng = np.random.default_rng(0)
    _inferences(store, _rows(rng, 2000), t0=1000.0, rid="ref")
    det = _monitor(reference={"start": 1000, "end": 1100}, window={"size": 500})
    _inferences(store, _rows(rng, 500), t0=2000.0, rid="ok")
    assert det.evaluate(store, 2100.0) == []
    assert det.last["status"] == "ok"

    _inferences(store, _rows(rng, 500, amount_mu=0.5, new_country=0.2), t0=3000.0, rid="bad")
    found = det.evaluate(store, 3100.0)
    assert len(found) == 1
    f = found[0]
    assert f.kind == "data_drift" and f.key == "fraud-features"
    assert f.subject == {
        "service": "fraud-api",
        "model": "fraud",
        "model_version": "v1",
        "monitor": "fraud-features",
    }
    assert set(f.evidence["drifted_features"]) >= {"amount", "country"}
    assert "age" not in f.evidence["drifted_features"] and "items" not in f.evidence["drifted_features"]
    country = next(t for t in f.evidence["top_features"] if t["feature"] == "country")
    assert country["movement"]["unseen"]["zz"] > 0.1
    assert f.window_start == pytest.approx(3000.0) and f.evidence["n_current"] == 500


def test_engine_fires_then_resolves_with_a_stable_fingerprint(store: DuckDBStore) -> None:
    from mlvigil.core.detector_loop import DetectorLoop

    rng = np.random.default_rng(1)
    _inferences(store, _rows(rng, 1500), t0=1000.0, rid="ref")
    det = _monitor(reference={"start": 1000, "end": 1100}, window={"duration": 100})
    book = FindingBook(store)
    loop = DetectorLoop(store, book, [det], 15)
    _inferences(store, _rows(rng, 400, amount_mu=0.6), t0=2000.0, rid="a")
    fired = loop.evaluate_all(2050.0)
    assert [(f.kind, t) for f, t in fired] == [("data_drift", "fired")]
    _inferences(store, _rows(rng, 400, amount_mu=0.6), t0=2060.0, rid="b")
    again = loop.evaluate_all(2090.0)
    assert [t for _, t in again] == ["updated"] and again[0][0].id == fired[0][0].id
    _inferences(store, _rows(rng, 400), t0=3000.0, rid="c")
    resolved = loop.evaluate_all(3050.0)
    assert [(f.id, t) for f, t in resolved] == [(fired[0][0].id, "resolved")]


def test_tumbling_count_windows_and_rolling_reference(store: DuckDBStore) -> None:
    rng = np.random.default_rng(2)
    _inferences(store, _rows(rng, 1000), t0=1000.0, rid="ref")
    det = _monitor(reference={"last": 500, "offset": 600}, window={"size": 300, "mode": "tumbling"})
    _inferences(store, _rows(rng, 299, amount_mu=1.0), t0=1600.0, rid="x")
    assert det.evaluate(store, 1700.0) == []  # no complete block yet
    _inferences(store, _rows(rng, 10, amount_mu=1.0), t0=1650.0, rid="y")
    found = det.evaluate(store, 1700.0)
    assert len(found) == 1 and found[0].evidence["n_current"] == 300


def test_dataset_reference_posted_as_rows(store: DuckDBStore) -> None:
    rng = np.random.default_rng(3)
    det = _monitor(reference={"dataset": True}, window={"size": 400})
    _inferences(store, _rows(rng, 400), t0=1000.0)
    assert det.evaluate(store, 2000.0) == [] and det.last["status"] == "waiting for reference"
    store.put_doc(
        REFERENCE_DOCS, "fraud-features", {"columns": rows_to_columns(_rows(rng, 1500)), "texts": []}
    )
    assert det.evaluate(store, 2001.0) == [] and det.last["status"] == "ok"


def test_prediction_and_performance_drift_with_late_labels(store: DuckDBStore) -> None:
    rng = np.random.default_rng(4)
    batch = RecordBatch()
    labels = RecordBatch()
    for i in range(1600):
        late = i >= 800
        y = int(rng.random() < 0.3)
        correct = rng.random() < (0.9 if not late else 0.7)
        pred = y if correct else 1 - y
        score = float(np.clip(rng.normal(0.7 if pred else 0.3, 0.1), 0, 1)) + (0.15 if late else 0)
        batch.add(
            "inferences",
            ts=1000.0 + i,
            service="s",
            model="m",
            model_version="v1",
            request_id=f"q{i}",
            features="{}",
            prediction=json.dumps(pred),
            score=score,
            source="otlp",
        )
        labels.add("labels", ts=5000.0 + i, request_id=f"q{i}", service="s", model="m", label=json.dumps(y))
    store.append(batch)
    store.append(labels)
    base = {"service": "s", "model": "m", "reference": {"start": 1000, "end": 1800}}
    pred_cfg = MonitorConfig.model_validate(
        {"name": "p", "kind": "prediction", **base, "window": {"size": 500}}
    )
    pred_det = MonitorDetector(pred_cfg.resolved(DriftConfig().defaults))
    found = pred_det.evaluate(store, 2600.0)
    assert [f.kind for f in found] == ["prediction_drift"] and "score" in found[0].evidence[
        "drifted_features"
    ]

    perf_cfg = MonitorConfig.model_validate(
        {
            "name": "q",
            "kind": "performance",
            **base,
            "metrics": ["accuracy", "f1"],
            "window": {"duration": 800},
            "label_delay": 100,
        }
    )
    perf = MonitorDetector(perf_cfg.resolved(DriftConfig().defaults))
    found = perf.evaluate(store, 2700.0)  # window [1800, 2600): labelled, accuracy ~0.7 vs ~0.9
    assert [f.kind for f in found] == ["performance_drift"]
    acc = next(m for m in found[0].evidence["metrics"] if m["metric"] == "accuracy")
    assert acc["reference"] > 0.85 and acc["current"] < 0.78 and acc["drifted"]


def test_reference_file_is_read_with_bounds_and_a_broken_one_says_why(
    store: DuckDBStore, tmp_path: Path
) -> None:
    """A reference file named in the config goes through the gate's checked reader: a ragged
    CSV leaves the monitor in an error status naming the line (no exception every pass);
    once the file is fixed the next pass builds the reference and evaluates."""
    rng = np.random.default_rng(3)
    rows = _rows(rng, 400)
    ref = tmp_path / "ref.csv"
    ragged = "amount,age,country,items\n" + "\n".join(
        f"{r['amount']},{r['age']},{r['country']},{r['items']}" for r in rows
    )
    ref.write_text(ragged + "\n1,2,fr,3,extra\n")
    det = _monitor(reference={"file": str(ref)}, window={"size": 200})
    _inferences(store, _rows(rng, 300), t0=5000.0)
    assert det.evaluate(store, 5010.0) == []
    assert det.last["status"] == "error" and "line 402" in det.last["error"], det.last
    ref.write_text(ragged + "\n")
    det.evaluate(store, 5010.0)
    assert det.last["status"] in ("ok", "drift"), det.last
