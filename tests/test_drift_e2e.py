"""End to end through the real service: spans and KServe events in, drift Findings out."""

from __future__ import annotations

import json

import numpy as np

from tests.harness import ServiceHandle
from tests.otel_helpers import http_span_exporter, post_kserve, tracer_provider


def _reference_rows(rng: np.random.Generator, n: int) -> list[dict]:
    return [
        {
            "petal_length": float(rng.normal(4.0, 0.5)),
            "petal_width": float(rng.normal(1.3, 0.2)),
            "sepal_length": float(rng.normal(5.8, 0.4)),
        }
        for _ in range(n)
    ]


def test_inference_spans_and_kserve_events_raise_a_data_drift_finding(service_factory) -> None:
    svc: ServiceHandle = service_factory({"detectors": {"interval": 3600}})
    rng = np.random.default_rng(0)
    monitor = {
        "name": "iris-features",
        "kind": "data",
        "service": "iris",
        "model": "iris",
        "reference": {"dataset": True},
        "window": {"size": 300, "min_size": 100},
    }
    created = svc.post("/api/v1/monitors", monitor)
    assert created["config"]["name"] == "iris-features"
    posted = svc.post("/api/v1/monitors/iris-features/reference", {"rows": _reference_rows(rng, 1500)})
    assert posted["rows"] == 1500

    # No drift yet: 300 inference spans from the same distribution, via the OTel SDK.
    with tracer_provider(http_span_exporter(svc.otlp_http), "iris") as provider:
        tracer = provider.get_tracer("model-server")
        for i, feats in enumerate(_reference_rows(rng, 300)):
            with tracer.start_as_current_span("predict") as span:
                span.set_attribute("mlvigil.model.name", "iris")
                span.set_attribute("mlvigil.inference.request_id", f"span-{i}")
                span.set_attribute("mlvigil.inference.features", json.dumps(feats))
                span.set_attribute("mlvigil.inference.prediction", 1)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 300)
    svc.evaluate()
    assert svc.findings(kind="data_drift") == []

    # KServe payload-logger events whose petal length moved: the window now drifts.
    for i in range(0, 300, 10):
        rows = [
            [float(rng.normal(5.0, 0.5)), float(rng.normal(1.3, 0.2)), float(rng.normal(5.8, 0.4))]
            for _ in range(10)
        ]
        post_kserve(svc, f"ce-{i}", "iris", {"instances": rows}, {"predictions": [2] * 10})
    svc.wait_for(lambda: svc.stats()["inferences"] >= 600)
    # KServe V1 instances carry no names: the reference must use the same f0.. names.
    svc.post("/api/v1/monitors", {**monitor, "name": "iris-kserve", "service": "iris", "model": None})
    ref = [
        {"f0": r["petal_length"], "f1": r["petal_width"], "f2": r["sepal_length"]}
        for r in _reference_rows(rng, 1500)
    ]
    svc.post("/api/v1/monitors/iris-kserve/reference", {"rows": ref})
    svc.evaluate()
    findings = svc.wait_for(lambda: svc.findings(kind="data_drift", monitor="iris-kserve"), timeout=10)
    f = findings[0]
    assert f["state"] == "firing" and f["subject"]["service"] == "iris"
    assert f["evidence"]["drifted_features"] == ["f0"]
    assert "f0" in f["summary"]

    # Metrics per monitor and feature are exported.
    status, _, body = svc.request("GET", "/metrics", b"", {})
    text = body.decode()
    assert 'mlvigil_drift_drifted{feature="f0",monitor="iris-kserve"} 1.0' in text
    assert 'mlvigil_drift_window_rows{monitor="iris-kserve",sample="current"} 300.0' in text

    # API-added monitors and their reference survive a restart.
    svc.restart()
    names = {m["config"]["name"] for m in svc.get("/api/v1/monitors")["monitors"]}
    assert names == {"iris-features", "iris-kserve"}
    svc.evaluate()
    assert svc.findings(kind="data_drift", monitor="iris-kserve", state="firing")
    status, _, _ = svc.request("DELETE", "/api/v1/monitors/iris-kserve", b"", {})
    assert status == 200
    assert svc.findings(kind="data_drift", monitor="iris-kserve", state="resolved")


def test_llm_traffic_shift_from_traceloop_spans(service_factory) -> None:
    config = {
        "detectors": {
            "interval": 3600,
            "drift": {
                "monitors": [
                    {
                        "name": "bot-traffic",
                        "kind": "llm",
                        "service": "support-bot",
                        "reference": {"dataset": True},
                        "window": {"size": 200, "min_size": 100},
                        "signals": ["input_tokens", "output_tokens", "latency_s", "finish_reason", "model"],
                    }
                ]
            },
        }
    }
    svc: ServiceHandle = service_factory(config)
    rng = np.random.default_rng(1)
    ref = [
        {
            "input_tokens": float(rng.poisson(200)),
            "output_tokens": float(rng.poisson(80)),
            "latency_s": float(rng.gamma(4, 0.2)),
            "finish_reason": "stop" if rng.random() < 0.95 else "length",
            "model": "gpt-4o-mini",
        }
        for _ in range(1000)
    ]
    svc.post("/api/v1/monitors/bot-traffic/reference", {"rows": ref})

    # traceloop-style spans (OpenLLMetry attribute names) where prompts grew and answers got cut.
    with tracer_provider(http_span_exporter(svc.otlp_http), "support-bot") as provider:
        tracer = provider.get_tracer("opentelemetry.instrumentation.openai")
        for i in range(200):
            with tracer.start_as_current_span("openai.chat") as span:
                span.set_attribute("llm.request.type", "chat")
                span.set_attribute("gen_ai.system", "openai")
                span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                span.set_attribute("gen_ai.response.model", "gpt-4o-mini")
                span.set_attribute("gen_ai.usage.prompt_tokens", int(rng.poisson(320)))
                span.set_attribute("gen_ai.usage.completion_tokens", int(rng.poisson(80)))
                span.set_attribute("llm.usage.total_tokens", 400)
                span.set_attribute("traceloop.workflow.name", "support_flow")
                span.set_attribute("gen_ai.completion.0.finish_reason", "length" if i % 3 == 0 else "stop")
    svc.wait_for(lambda: svc.stats()["llm_calls"] >= 200)
    svc.evaluate()
    found = svc.findings(kind="llm_drift")
    assert len(found) == 1
    drifted = set(found[0]["evidence"]["drifted_features"])
    assert {"input_tokens", "finish_reason"} <= drifted
    assert "output_tokens" not in drifted
    assert found[0]["subject"]["service"] == "support-bot"


def test_streaming_monitor_over_otlp_spans(service_factory) -> None:
    svc: ServiceHandle = service_factory({"detectors": {"interval": 3600}})
    rng = np.random.default_rng(7)
    monitor = {
        "name": "iris-stream",
        "service": "iris",
        "model": "iris",
        "reference": {"dataset": True},
        "streaming": {"window_size": 50, "stride": 10, "ert": 20_000, "n_bootstraps": 20_000, "lag": 0},
    }
    svc.post("/api/v1/monitors", monitor)
    svc.post("/api/v1/monitors/iris-stream/reference", {"rows": _reference_rows(rng, 2000)})

    def send(rows: list[dict], first: int) -> None:
        with tracer_provider(http_span_exporter(svc.otlp_http), "iris") as provider:
            tracer = provider.get_tracer("model-server")
            for i, feats in enumerate(rows, start=first):
                with tracer.start_as_current_span("predict") as span:
                    span.set_attribute("mlvigil.model.name", "iris")
                    span.set_attribute("mlvigil.inference.request_id", f"s-{i}")
                    span.set_attribute("mlvigil.inference.features", json.dumps(feats))
        svc.wait_for(lambda: svc.stats()["inferences"] >= first + len(rows))

    send(_reference_rows(rng, 200), 0)
    svc.evaluate()
    assert svc.findings(kind="data_drift") == []
    status = svc.get("/api/v1/monitors/iris-stream")
    assert status["status"]["mode"] == "streaming" and status["status"]["rows_streamed"] >= 50

    shifted = _reference_rows(rng, 150)
    for r in shifted:
        r["petal_width"] += 0.4
    send(shifted, 200)
    svc.evaluate()
    found = svc.wait_for(lambda: svc.findings(kind="data_drift", monitor="iris-stream"), timeout=10)
    ev = found[0]["evidence"]
    assert ev["streaming"]["detector"] == "cvm"
    assert ev["top_features"][0]["feature"] == "petal_width"
