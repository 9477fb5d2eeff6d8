"""Official OpenTelemetry SDK exporters (gRPC and HTTP) -> running mlvigil -> typed records."""

from __future__ import annotations

import json
import time

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from tests.harness import ServiceHandle
from tests.otel_helpers import grpc_span_exporter, http_span_exporter, tracer_provider


def _records(svc: ServiceHandle, table: str, **where: str) -> list[dict]:
    return list(svc.get(f"/api/v1/records/{table}", **where)["rows"])


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_gen_ai_spans_become_llm_calls(service: ServiceHandle, transport: str) -> None:
    exporter = (
        grpc_span_exporter(service.otlp_grpc)
        if transport == "grpc"
        else http_span_exporter(service.otlp_http)
    )
    with tracer_provider(exporter, f"chatbot-{transport}", **{"service.version": "1.2.3"}) as provider:
        tracer = provider.get_tracer("test")
        t0 = time.time_ns()
        span = tracer.start_span(
            "chat gpt-4o",
            start_time=t0,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.response.model": "gpt-4o-2024-08-06",
                "gen_ai.usage.input_tokens": 120,
                "gen_ai.usage.output_tokens": 48,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.max_tokens": 256,
                "gen_ai.response.finish_reasons": ["stop"],
                "gen_ai.input.messages": json.dumps([{"role": "user", "content": "secret prompt"}]),
            },
        )
        span.add_event("gen_ai.first_token", timestamp=t0 + 150_000_000)
        span.end(end_time=t0 + 1_250_000_000)
        # Deprecated names (gen_ai.system, prompt/completion tokens) map to the same columns.
        old = tracer.start_span(
            "chat llama",
            start_time=t0,
            attributes={
                "gen_ai.system": "vllm",
                "gen_ai.request.model": "llama-3-8b",
                "gen_ai.usage.prompt_tokens": 7,
                "gen_ai.usage.completion_tokens": 5,
            },
        )
        old.end(end_time=t0 + 500_000_000)

    rows = {r["request_model"]: r for r in _records(service, "llm_calls", service=f"chatbot-{transport}")}
    assert set(rows) == {"gpt-4o", "llama-3-8b"}
    new = rows["gpt-4o"]
    assert new["provider"] == "openai" and new["operation"] == "chat"
    assert new["response_model"] == "gpt-4o-2024-08-06"
    assert (new["input_tokens"], new["output_tokens"], new["total_tokens"]) == (120, 48, 168)
    assert new["latency_s"] == pytest.approx(1.25)
    assert new["ttft_s"] == pytest.approx(0.15)
    assert new["temperature"] == pytest.approx(0.2) and new["max_tokens"] == 256
    assert new["finish_reasons"] == "stop" and new["error"] is None
    assert new["service_version"] == "1.2.3" and new["dialect"] == "gen_ai"
    assert new["prompt"] is None, "prompt text must not be kept unless the config says so"
    legacy = rows["llama-3-8b"]
    assert legacy["provider"] == "vllm"
    assert (legacy["input_tokens"], legacy["output_tokens"], legacy["total_tokens"]) == (7, 5, 12)
    # Raw spans are kept besides the mapping.
    raw = _records(service, "spans", service=f"chatbot-{transport}")
    assert {r["record_kind"] for r in raw} == {"llm"} and len(raw) == 2


def test_openinference_spans(service: ServiceHandle) -> None:
    with tracer_provider(http_span_exporter(service.otlp_http), "rag-app") as provider:
        tracer = provider.get_tracer("openinference")
        span = tracer.start_span(
            "ChatCompletion",
            attributes={
                "openinference.span.kind": "LLM",
                "llm.model_name": "claude-3-5-sonnet",
                "llm.provider": "anthropic",
                "llm.token_count.prompt": 300,
                "llm.token_count.completion": 20,
                "llm.token_count.total": 320,
                "llm.invocation_parameters": json.dumps({"temperature": 0.7, "max_tokens": 512}),
                "llm.input_messages.0.message.role": "user",
                "llm.input_messages.0.message.content": "hello",
            },
        )
        span.end()
        chain = tracer.start_span("retrieve", attributes={"openinference.span.kind": "RETRIEVER"})
        chain.end()
    rows = _records(service, "llm_calls", service="rag-app")
    assert len(rows) == 1, "only LLM-kind OpenInference spans are LLM calls"
    row = rows[0]
    assert row["dialect"] == "openinference" and row["provider"] == "anthropic"
    assert row["request_model"] == "claude-3-5-sonnet"
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (300, 20, 320)
    assert row["temperature"] == pytest.approx(0.7) and row["max_tokens"] == 512
    assert len(_records(service, "spans", service="rag-app")) == 2


def test_inference_and_training_spans(service: ServiceHandle) -> None:
    with tracer_provider(
        grpc_span_exporter(service.otlp_grpc),
        "fraud-model",
        **{"host.name": "node-7", "k8s.pod.name": "trainer-0"},
    ) as provider:
        tracer = provider.get_tracer("ml")
        span = tracer.start_span(
            "predict",
            attributes={
                "mlvigil.model.name": "fraud",
                "mlvigil.model.version": "v3",
                "mlvigil.inference.request_id": "req-1",
                "mlvigil.inference.features": json.dumps({"amount": 12.5, "country": "DE"}),
                "mlvigil.feature.age": 41,
                "mlvigil.inference.prediction": "legit",
                "mlvigil.inference.score": 0.93,
            },
        )
        span.end()
        step = tracer.start_span(
            "train_step",
            attributes={
                "mlvigil.train.run_id": "run-42",
                "mlvigil.train.step": 100,
                "mlvigil.train.rank": 3,
                "mlvigil.train.world_size": 8,
                "mlvigil.train.loss": 2.5,
                "mlvigil.train.grad_norm": 1.1,
                "mlvigil.train.tokens": 4096,
                "mlvigil.train.step_time_seconds": 0.8,
                "mlvigil.train.data_wait_seconds": 0.05,
                "mlvigil.train.comm_seconds": 0.2,
                "hw.id": "GPU-abc",
            },
        )
        step.end()
    inf = _records(service, "inferences", model="fraud")
    assert len(inf) == 1
    assert inf[0]["features"] == {"amount": 12.5, "country": "DE", "age": 41}
    assert inf[0]["prediction"] == "legit" and inf[0]["score"] == pytest.approx(0.93)
    assert inf[0]["request_id"] == "req-1" and inf[0]["model_version"] == "v3"
    steps = _records(service, "training_steps", run_id="run-42")
    assert len(steps) == 1
    s = steps[0]
    assert (s["step"], s["rank"], s["world_size"]) == (100, 3, 8)
    assert s["loss"] == pytest.approx(2.5) and s["step_time_s"] == pytest.approx(0.8)
    assert s["comm_s"] == pytest.approx(0.2) and s["tokens"] == pytest.approx(4096)
    assert (s["host"], s["k8s_pod"], s["gpu_uuid"]) == ("node-7", "trainer-0", "GPU-abc")


def test_metrics_and_logs(service: ServiceHandle) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    resource = Resource.create({"service.name": "llm-gateway"})
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{service.otlp_http}/v1/metrics"), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("gen_ai")
    tokens = meter.create_histogram("gen_ai.client.token.usage", unit="{token}")
    tokens.record(100, {"gen_ai.token.type": "input", "gen_ai.request.model": "gpt-4o"})
    tokens.record(40, {"gen_ai.token.type": "output", "gen_ai.request.model": "gpt-4o"})
    duration = meter.create_histogram("gen_ai.client.operation.duration", unit="s")
    duration.record(1.5, {"gen_ai.request.model": "gpt-4o"})
    requests = meter.create_counter("requests", unit="1")
    requests.add(3)
    meter_provider.shutdown()  # exports the one final collection

    import logging

    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=service.otlp_grpc, insecure=True))
    )
    from opentelemetry.sdk._logs import LoggingHandler

    logger = logging.getLogger("mlvigil-test-producer")
    logger.propagate = False
    handler = LoggingHandler(logger_provider=log_provider)
    logger.addHandler(handler)
    logger.warning("model reloaded", extra={"mlvigil.model.name": "fraud"})
    log_provider.shutdown()
    logger.removeHandler(handler)

    points = _records(service, "metric_points", service="llm-gateway")
    by_name: dict[str, list[dict]] = {}
    for p in points:
        by_name.setdefault(p["name"], []).append(p)
    usage = sorted(by_name["gen_ai.client.token.usage"], key=lambda p: p["value"])
    assert [(p["value"], p["count"], p["kind"]) for p in usage] == [
        (40.0, 1, "histogram"),
        (100.0, 1, "histogram"),
    ]
    assert usage[0]["attributes"]["gen_ai.token.type"] == "output"
    assert by_name["gen_ai.client.operation.duration"][0]["unit"] == "s"
    assert by_name["requests"][0]["value"] == 3.0 and by_name["requests"][0]["monotonic"] is True
    logs = _records(service, "logs", service="llm-gateway")
    assert len(logs) == 1 and logs[0]["body"] == "model reloaded" and logs[0]["severity_text"] == "WARN"
    assert service.stats()["logs"] == 1
