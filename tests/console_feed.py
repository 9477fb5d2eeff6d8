"""A real service fed with findings of every kind through producers' real paths, for the
console's tests: OTLP spans (inferences, LLM calls, training steps), the in-process fake GPU
agent, a codecarbon tracker, and reference datasets posted through the API."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detectors.training.synthetic import RunSpec, simulate
from mlvigil.app.demo.webhook_sink import WebhookSink
from mlvigil_producer.codecarbon_output import MlvigilOutput
from tests.harness import ServiceHandle
from tests.otel_helpers import http_span_exporter, tracer_provider

RUN_ID = "console-run"
NODE = "console-node"
#: Kinds the feed makes fire (each page kind of the console has at least one).
KINDS = (
    "data_drift",
    "performance_drift",
    "llm_drift",
    "straggler",
    "loss_anomaly",
    "gpu_fault",
    "gpu_degraded",
    "carbon_overrun",
)


def gpu_uuid(index: int) -> str:
    return f"GPU-c0701e00-0000-4000-8000-{index:012d}"


def gpu_scenario() -> dict[str, Any]:
    """Four GPUs; GPU 2 is held under its clocks from the start, GPU 3 logs XID 79 and is lost."""
    return {
        "description": "console test node",
        "gpus": [{"uuid": gpu_uuid(i), "count": 1} for i in range(4)],
        "timeline": [
            {
                "at": "0s",
                "gpu": 2,
                "set": {"clock_events": ["hw_slowdown"]},
                "ramp": {"clocks.sm": {"to": 1200, "over": "1s"}},
            },
            {"at": "1s", "gpu": 3, "xid": 79},
            {"at": "2s", "gpu": 3, "lost": True},
        ],
    }


def service_config(sink: WebhookSink, scenario: Path) -> dict[str, Any]:
    return {
        "detectors": {
            "interval": "1h",  # evaluated on demand (POST /api/v1/evaluate)
            "training": {},
            "carbon": {
                "country_iso_code": "FRA",
                "budgets": [
                    {"name": "console-budget", "run_id": RUN_ID, "kg_co2e": 1e-12, "planned_steps": 400}
                ],
            },
        },
        "gpu": {
            "enabled": True,
            "backend": "fake",
            "scenario": str(scenario),
            "interval": "250ms",
            "rules": {
                "slowdown": {"window": "3s", "min_samples": 3},
                "clocks": {"window": "3s", "min_samples": 3},
            },
        },
        "alerts": {
            "receivers": [{"name": "sink", "webhook": {"url": sink.url + "/alerts"}}],
            "routes": [
                {"receiver": "sink", "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1s"}
            ],
            "tick": "100ms",
        },
        "retrain": {
            "targets": [{"name": "pipeline", "webhook": {"url": sink.url + "/retrain"}}],
            "policies": [
                {
                    "name": "retrain-on-drift",
                    "target": "pipeline",
                    "kinds": ["data_drift"],
                    "severities": ["warning", "critical"],
                    "approval": True,
                }
            ],
        },
    }


def start(tmp: Path, sink: WebhookSink, token: str | None) -> ServiceHandle:
    scenario = tmp / "gpu-scenario.yaml"
    scenario.write_text(yaml.safe_dump(gpu_scenario()))
    env = {"NODE_NAME": NODE}
    if token:
        env["MLVIGIL_AUTH_TOKEN"] = token
    return ServiceHandle(tmp / "data", service_config(sink, scenario), env).start()


def _credit(
    rng: np.random.Generator, n: int, hard: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, the calibrated P(positive) of a credit model and its labels (tests/test_estimation_e2e)."""
    x = rng.uniform(-0.3, 0.3, n) if hard else rng.normal(0, 1.5, n)
    p = 1 / (1 + np.exp(-3 * x))
    return np.column_stack([x, rng.normal(size=n)]), p, (rng.random(n) < p).astype(int)


def _send_inferences(svc: ServiceHandle, x: np.ndarray, p: np.ndarray, first: int) -> None:
    with tracer_provider(http_span_exporter(svc.otlp_http, svc.token), "credit", batched=True) as provider:
        tracer = provider.get_tracer("model-server")
        for i, ((a, b), q) in enumerate(zip(x, p, strict=True), start=first):
            with tracer.start_as_current_span("predict") as span:
                span.set_attribute("mlvigil.model.name", "credit")
                span.set_attribute("mlvigil.inference.request_id", f"r-{i}")
                span.set_attribute("mlvigil.inference.features", json.dumps({"f0": float(a), "f1": float(b)}))
                span.set_attribute("mlvigil.inference.prediction", int(q >= 0.5))
                span.set_attribute("mlvigil.inference.score", float(q))


def feed_drift(svc: ServiceHandle) -> None:
    """Credit traffic moving to cases the model is unsure of: data drift on f0 and an estimated
    accuracy drop (no labels); a support bot whose prompts grew and answers got cut (LLM drift)."""
    rng = np.random.default_rng(0)
    window = {"size": 300, "min_size": 100}
    svc.post(
        "/api/v1/monitors",
        {
            "name": "credit-features",
            "kind": "data",
            "service": "credit",
            "model": "credit",
            "reference": {"dataset": True},
            "window": window,
        },
    )
    svc.post(
        "/api/v1/monitors",
        {
            "name": "credit-estimated",
            "kind": "estimated_performance",
            "service": "credit",
            "model": "credit",
            "metrics": ["accuracy"],
            "reference": {"dataset": True},
            "window": window,
            "max_drop": 0.02,
        },
    )
    x, p, y = _credit(rng, 2000)
    svc.post(
        "/api/v1/monitors/credit-features/reference",
        {"rows": [{"f0": float(a), "f1": float(b)} for a, b in x]},
    )
    svc.post(
        "/api/v1/monitors/credit-estimated/reference",
        {
            "rows": [
                {"f0": float(a), "f1": float(b), "prediction": [1 - float(q), float(q)], "label": int(t)}
                for (a, b), q, t in zip(x, p, y, strict=True)
            ]
        },
    )
    x, p, _ = _credit(rng, 300)
    _send_inferences(svc, x, p, 0)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 300)
    svc.evaluate()  # a first, healthy window: the monitors' statistic has a history
    x, p, _ = _credit(rng, 300, hard=True)
    _send_inferences(svc, x, p, 300)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 600)

    svc.post(
        "/api/v1/monitors",
        {
            "name": "bot-traffic",
            "kind": "llm",
            "service": "support-bot",
            "reference": {"dataset": True},
            "window": {"size": 200, "min_size": 100},
            "signals": ["input_tokens", "output_tokens", "latency_s", "finish_reason"],
        },
    )
    ref = [
        {
            "input_tokens": float(rng.poisson(200)),
            "output_tokens": float(rng.poisson(80)),
            "latency_s": float(rng.gamma(4, 0.2)),
            "finish_reason": "stop" if rng.random() < 0.95 else "length",
        }
        for _ in range(600)
    ]
    svc.post("/api/v1/monitors/bot-traffic/reference", {"rows": ref})
    with tracer_provider(
        http_span_exporter(svc.otlp_http, svc.token), "support-bot", batched=True
    ) as provider:
        tracer = provider.get_tracer("opentelemetry.instrumentation.openai")
        for i in range(200):
            with tracer.start_as_current_span("openai.chat") as span:
                span.set_attribute("llm.request.type", "chat")
                span.set_attribute("gen_ai.system", "openai")
                span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
                span.set_attribute("gen_ai.usage.prompt_tokens", int(rng.poisson(320)))
                span.set_attribute("gen_ai.usage.completion_tokens", int(rng.poisson(80)))
                span.set_attribute("gen_ai.completion.0.finish_reason", "length" if i % 3 == 0 else "stop")
    svc.wait_for(lambda: svc.stats()["llm_calls"] >= 200)


def feed_training(svc: ServiceHandle) -> int:
    """A 4-rank run (OTLP step spans, as the instrumented job sends them): rank 2 slows by 30 %
    from step 150 and the loss spikes at step 200. Returns the number of steps sent."""
    spec = RunSpec(
        run_id=RUN_ID,
        world_size=4,
        steps=300,
        step_time=1.0,
        slow_rank=2,
        slow_from=150,
        slow_factor=1.3,
        start_ts=time.time() - 420.0,
        blip_prob=0.0,
    )
    rows = simulate(spec)
    providers: dict[int, Any] = {}
    with (
        tracer_provider(
            http_span_exporter(svc.otlp_http, svc.token), "trainer", batched=True, **{"host.name": NODE}
        ) as p0,
        tracer_provider(
            http_span_exporter(svc.otlp_http, svc.token), "trainer", batched=True, **{"host.name": NODE}
        ) as p1,
        tracer_provider(
            http_span_exporter(svc.otlp_http, svc.token), "trainer", batched=True, **{"host.name": NODE}
        ) as p2,
        tracer_provider(
            http_span_exporter(svc.otlp_http, svc.token), "trainer", batched=True, **{"host.name": NODE}
        ) as p3,
    ):
        providers = {0: p0, 1: p1, 2: p2, 3: p3}
        tracers = {r: p.get_tracer("train") for r, p in providers.items()}
        for row in rows:
            loss = row["loss"] * (3.0 if row["step"] in (200, 201) else 1.0)
            start = int(row["ts"] * 1e9)
            span = tracers[row["rank"]].start_span(
                "train_step",
                start_time=start,
                attributes={
                    "mlvigil.train.run_id": RUN_ID,
                    "mlvigil.train.step": row["step"],
                    "mlvigil.train.rank": row["rank"],
                    "mlvigil.train.world_size": 4,
                    "mlvigil.train.gpu_uuid": gpu_uuid(row["rank"]),
                    "mlvigil.train.step_time_seconds": row["step_time_s"],
                    "mlvigil.train.loss": loss if math.isfinite(loss) else 0.0,
                    "mlvigil.train.samples": 8,
                    "mlvigil.train.comm_seconds": row["comm_s"],
                    "mlvigil.train.data_wait_seconds": row["data_wait_s"],
                },
            )
            span.end(end_time=start + int(row["step_time_s"] * 1e9))
    svc.wait_for(lambda: svc.stats()["training_steps"] >= len(rows), timeout=60)
    return spec.steps


def feed_carbon(svc: ServiceHandle) -> None:
    """A codecarbon tracker for the run, through mlvigil's output handler: over its tiny budget."""
    from codecarbon import OfflineEmissionsTracker

    headers = {"Authorization": f"Bearer {svc.token}"} if svc.token else None
    out = MlvigilOutput(svc.otlp_http, run_id=RUN_ID, headers=headers)
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",
        project_name="console",
        output_methods=[],
        output_handlers=[out],
        log_level="error",
        allow_multiple_runs=True,
    )
    tracker.start()
    sum(i * i for i in range(200_000))
    tracker.stop()
    assert out.failed_exports == 0 and out.sent_exports >= 1


def feed_all(svc: ServiceHandle, deadline_s: float = 90.0) -> dict[str, dict[str, Any]]:
    """Feed every producer, evaluate until a finding of each kind fires; the first of each kind."""
    feed_drift(svc)
    feed_training(svc)
    feed_carbon(svc)

    def every_kind() -> dict[str, dict[str, Any]] | None:
        svc.evaluate()
        got: dict[str, dict[str, Any]] = {}
        for f in svc.findings(limit=500):
            got.setdefault(f["kind"], f)
        return got if all(k in got for k in KINDS) else None

    found = svc.wait_for(every_kind, timeout=deadline_s, interval=0.5)
    return found
