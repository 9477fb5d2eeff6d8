"""Realistic LLM spans (as traceloop-sdk 0.62 sends them) in OTLP export requests."""

from __future__ import annotations

import json
import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    if isinstance(value, list):
        return KeyValue(
            key=key, value=AnyValue(array_value=ArrayValue(values=[AnyValue(string_value=v) for v in value]))
        )
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def llm_request(n_spans: int, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    now = time.time_ns()
    spans = []
    for i in range(n_spans):
        pt, ct = rng.randint(20, 2000), rng.randint(5, 800)
        start = now - rng.randint(0, 10**9)
        question = " ".join(
            rng.choice(["how", "do", "I", "reset", "my", "password", "order", "refund"]) for _ in range(25)
        )
        attrs = {
            "gen_ai.operation.name": "chat",
            "traceloop.workflow.name": "support_flow",
            "traceloop.entity.path": "answer",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.request.max_tokens": 512,
            "gen_ai.request.temperature": 0.3,
            "gen_ai.is_streaming": False,
            "gen_ai.openai.api_base": "https://api.openai.com/v1/",
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": question}]}]
            ),
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.response.id": f"chatcmpl-{seed}-{i}",
            "gen_ai.response.finish_reasons": ["stop"],
            "gen_ai.usage.total_tokens": pt + ct,
            "gen_ai.usage.output_tokens": ct,
            "gen_ai.usage.input_tokens": pt,
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": question[::-1]}],
                        "finish_reason": "stop",
                    }
                ]
            ),
        }
        spans.append(
            Span(
                trace_id=rng.getrandbits(128).to_bytes(16, "big"),
                span_id=rng.getrandbits(64).to_bytes(8, "big"),
                parent_span_id=rng.getrandbits(64).to_bytes(8, "big"),
                name="openai.chat",
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randint(10**8, 5 * 10**9),
                attributes=[_kv(k, v) for k, v in attrs.items()],
            )
        )
    resource = Resource(
        attributes=[
            _kv("service.name", "support-bot"),
            _kv("service.version", "1.4.2"),
            _kv("host.name", "pod-7"),
            _kv("telemetry.sdk.name", "opentelemetry"),
        ]
    )
    req = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()
