"""traceloop-sdk, instrumenting the real OpenAI client against a local fake OpenAI server."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlvigil.app.demo.fake_llm import FakeLLM
from tests.harness import ServiceHandle
from tests.otel_helpers import http_span_exporter, tracer_provider

APP = Path(__file__).parent / "producers" / "traceloop_app.py"


@pytest.fixture
def fake_llm() -> Iterator[FakeLLM]:
    llm = FakeLLM().start()
    yield llm
    llm.stop()


def _run_app(endpoint: str, base_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(APP), endpoint, base_url], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_traceloop_openai_calls_arrive_with_their_values(service_factory, fake_llm: FakeLLM) -> None:
    svc: ServiceHandle = service_factory({"ingest": {"keep_llm_content": True}})
    _run_app(svc.otlp_http, fake_llm.base_url)
    rows = svc.get("/api/v1/records/llm_calls", service="support-bot")["rows"]
    assert len(rows) == 2
    plain = next(r for r in rows if r["max_tokens"] == 5)
    stream = next(r for r in rows if r["max_tokens"] is None)
    for r in rows:
        assert (r["dialect"], r["provider"], r["operation"]) == ("traceloop", "openai", "chat")
        assert r["request_model"] == r["response_model"] == "gpt-4o-mini"
        assert r["temperature"] == pytest.approx(0.3)
        assert r["workflow"] == "support_flow" and r["entity"] == "answer"
        assert r["error"] is None and 0 < r["latency_s"] < 30
    # The fake server counts words: 2 + 8 prompt words; max_tokens=5 cuts the answer ("length").
    assert (plain["input_tokens"], plain["output_tokens"], plain["total_tokens"]) == (10, 5, 15)
    assert plain["finish_reasons"] == "length" and plain["ttft_s"] is None
    assert (stream["input_tokens"], stream["output_tokens"]) == (3, 6)
    assert stream["finish_reasons"] == "stop"
    assert stream["ttft_s"] is not None and 0 <= stream["ttft_s"] <= stream["latency_s"]
    # Content was kept because the config says so; it is the real conversation.
    assert "one two three" in plain["prompt"] and "the answer is" in plain["completion"]
    # The workflow and task spans are kept raw too.
    kinds = [r["record_kind"] for r in svc.get("/api/v1/records/spans", service="support-bot")["rows"]]
    assert sorted(kinds) == ["llm", "llm", "span", "span", "span"]


def test_content_not_kept_by_default(service: ServiceHandle, fake_llm: FakeLLM) -> None:
    _run_app(service.otlp_http, fake_llm.base_url)
    rows = service.get("/api/v1/records/llm_calls", service="support-bot")["rows"]
    assert len(rows) == 2 and all(r["prompt"] is None and r["completion"] is None for r in rows)


def test_older_traceloop_attributes_map(service_factory) -> None:
    """Older OpenLLMetry releases: gen_ai.system, gen_ai.prompt.N.*, llm.usage.total_tokens."""
    svc: ServiceHandle = service_factory({"ingest": {"keep_llm_content": True}})
    with tracer_provider(http_span_exporter(svc.otlp_http), "legacy-bot") as provider:
        span = provider.get_tracer("old").start_span(
            "openai.chat",
            attributes={
                "llm.request.type": "chat",
                "gen_ai.system": "OpenAI",
                "gen_ai.request.model": "gpt-3.5-turbo",
                "gen_ai.response.model": "gpt-3.5-turbo-0125",
                "gen_ai.usage.prompt_tokens": 11,
                "gen_ai.usage.completion_tokens": 4,
                "llm.usage.total_tokens": 15,
                "gen_ai.prompt.0.role": "user",
                "gen_ai.prompt.0.content": "ping",
                "gen_ai.completion.0.role": "assistant",
                "gen_ai.completion.0.content": "pong",
                "gen_ai.completion.0.finish_reason": "stop",
                "traceloop.workflow.name": "legacy_flow",
            },
        )
        span.end()
        failed = provider.get_tracer("old").start_span(
            "openai.chat", attributes={"llm.request.type": "chat", "gen_ai.request.model": "gpt-3.5-turbo"}
        )
        failed.record_exception(TimeoutError("upstream timed out"))
        failed.end()
    rows = sorted(svc.get("/api/v1/records/llm_calls", service="legacy-bot")["rows"], key=lambda r: r["ts"])
    ok, err = rows
    assert (ok["provider"], ok["operation"], ok["workflow"]) == ("OpenAI", "chat", "legacy_flow")
    assert (ok["input_tokens"], ok["output_tokens"], ok["total_tokens"]) == (11, 4, 15)
    assert ok["finish_reasons"] == "stop" and ok["response_model"] == "gpt-3.5-turbo-0125"
    assert json.loads(ok["prompt"]) == [{"role": "user", "content": "ping"}]
    assert json.loads(ok["completion"]) == [{"role": "assistant", "content": "pong"}]
    assert err["error"] == "TimeoutError"
