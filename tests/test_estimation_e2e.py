"""End to end through the real service: unlabelled OTLP spans and KServe CloudEvents, a
performance drop mid-stream found by estimation, then labels and the realised metric."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.harness import ServiceHandle
from tests.otel_helpers import http_span_exporter, post_kserve, tracer_provider

pytestmark = pytest.mark.timeout(120)


def _model(rng: np.random.Generator, n: int, hard: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, the calibrated P(positive) of a credit model and the labels it will get."""
    x = rng.uniform(-0.3, 0.3, n) if hard else rng.normal(0, 1.5, n)
    p = 1 / (1 + np.exp(-3 * x))
    return np.column_stack([x, rng.normal(size=n)]), p, (rng.random(n) < p).astype(int)


def test_a_drop_mid_stream_is_found_before_labels_and_the_realised_value_follows(service_factory) -> None:
    svc: ServiceHandle = service_factory({"detectors": {"interval": 3600}})
    rng = np.random.default_rng(0)
    svc.post(
        "/api/v1/monitors",
        {
            "name": "credit-estimated",
            "kind": "estimated_performance",
            "service": "credit",
            "model": "credit",
            "metrics": ["accuracy", "auc"],
            "reference": {"dataset": True},
            "window": {"size": 300, "min_size": 100},
            "max_drop": 0.02,
        },
    )
    x, p, y = _model(rng, 2000)
    ref = [
        {"f0": float(a), "f1": float(b), "prediction": [1 - float(q), float(q)], "label": int(t)}
        for (a, b), q, t in zip(x, p, y, strict=True)
    ]
    posted = svc.post("/api/v1/monitors/credit-estimated/reference", {"rows": ref})
    assert posted["rows"] == 2000
    # A reference without labels cannot calibrate anything: refused, with the reason.
    status, _, body = svc.request(
        "POST",
        "/api/v1/monitors/credit-estimated/reference",
        json.dumps({"rows": [{"f0": 1.0, "score": 0.5}] * 30}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400 and b"'label'" in body

    # Healthy traffic over OTLP spans: score, prediction and features, no label.
    x, p, _ = _model(rng, 300)
    with tracer_provider(http_span_exporter(svc.otlp_http), "credit") as provider:
        tracer = provider.get_tracer("model-server")
        for i, ((a, b), q) in enumerate(zip(x, p, strict=True)):
            with tracer.start_as_current_span("predict") as span:
                span.set_attribute("mlvigil.model.name", "credit")
                span.set_attribute("mlvigil.inference.request_id", f"span-{i}")
                span.set_attribute("mlvigil.inference.features", json.dumps({"f0": float(a), "f1": float(b)}))
                span.set_attribute("mlvigil.inference.prediction", int(q >= 0.5))
                span.set_attribute("mlvigil.inference.score", float(q))
    svc.wait_for(lambda: svc.stats()["inferences"] >= 300)
    svc.evaluate()
    assert svc.findings(kind="performance_drift") == []

    # Mid-stream the traffic moves to cases the model is unsure of (KServe payload logging).
    x, p, y = _model(rng, 300, hard=True)
    for i in range(0, 300, 10):
        post_kserve(
            svc,
            f"ce-{i}",
            "credit",
            {"instances": x[i : i + 10].tolist()},
            {"predictions": [[1 - float(q), float(q)] for q in p[i : i + 10]]},
        )
    svc.wait_for(lambda: svc.stats()["inferences"] >= 600)
    svc.evaluate()
    found = svc.wait_for(
        lambda: svc.findings(kind="performance_drift", monitor="credit-estimated"), timeout=10
    )
    ev = found[0]["evidence"]
    assert found[0]["state"] == "firing" and ev["estimated"] and ev["n_labelled"] == 0
    acc = next(m for m in ev["metrics"] if m["metric"] == "accuracy")
    assert acc["alarm"] and acc["realised"] is None and acc["value"] < acc["reference_lower"]
    assert "no labels yet" in found[0]["summary"]

    # Labels arrive: the realised accuracy appears beside the estimate.
    labels = [{"request_id": f"ce-{i - i % 10}:{i % 10}", "label": int(t)} for i, t in enumerate(y)]
    svc.post("/api/v1/labels", {"labels": labels})
    truth = float(np.mean((p >= 0.5).astype(int) == y))

    def realised() -> float | None:
        svc.evaluate()
        got = svc.findings(kind="performance_drift", monitor="credit-estimated")
        metrics = got[0]["evidence"]["metrics"] if got else []
        return next((m["realised"] for m in metrics if m["metric"] == "accuracy"), None)

    assert svc.wait_for(realised, timeout=20) == pytest.approx(truth)
    assert abs(acc["value"] - truth) < 0.1
    _, _, text = svc.request("GET", "/metrics", b"", {})
    for value in ("estimate", "lower", "upper", "reference_lower", "realised"):
        assert (
            f'mlvigil_performance_estimate{{metric="accuracy",monitor="credit-estimated",value="{value}"}}'
            in text.decode()
        )
