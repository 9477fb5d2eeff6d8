"""LLM calls from the three dialects seen in the wild, mapped to one ``llm_calls`` row.

- OTel gen_ai semantic conventions, current (``gen_ai.provider.name``,
  ``gen_ai.usage.input_tokens``, ``gen_ai.input.messages``) and deprecated
  (``gen_ai.system``, ``gen_ai.usage.prompt_tokens``, ``gen_ai.prompt.N.*``);
- OpenLLMetry / traceloop-sdk (``llm.request.type``, ``llm.usage.total_tokens``,
  ``traceloop.workflow.name``, ``traceloop.entity.name``);
- OpenInference (``openinference.span.kind``, ``llm.model_name``, ``llm.token_count.*``,
  ``llm.invocation_parameters``, ``llm.input_messages.N.message.*``).

The first key present wins in each list below; current names come before deprecated ones.
"""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collector.attributes import Attrs, get, get_float, get_int, get_str, parse_json
from mlvigil.core.records import json_text

PROVIDER = ("gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
OPERATION = ("gen_ai.operation.name", "llm.request.type")
REQUEST_MODEL = ("gen_ai.request.model", "llm.request.model")
RESPONSE_MODEL = ("gen_ai.response.model", "llm.response.model", "llm.model_name")
INPUT_TOKENS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKENS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.usage.completion_tokens",
    "llm.token_count.completion",
)
TOTAL_TOKENS = ("gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
TEMPERATURE = ("gen_ai.request.temperature", "llm.request.temperature")
MAX_TOKENS = ("gen_ai.request.max_tokens", "llm.request.max_tokens")
TTFT = (
    "mlvigil.llm.time_to_first_token",
    "gen_ai.response.time_to_first_token",
    "gen_ai.server.time_to_first_token",
    "llm.response.time_to_first_token",
)
WORKFLOW = ("traceloop.workflow.name", "gen_ai.workflow.name")
ENTITY = ("traceloop.entity.name", "gen_ai.agent.name", "traceloop.entity.path")
ERROR = ("error.type",)

# Span events that mark the first streamed token (OpenLLMetry, OpenInference, ours).
FIRST_TOKEN_EVENTS = frozenset(
    {
        "gen_ai.content.completion.chunk",
        "llm.content.completion.chunk",
        "First Token Stream Event",
        "gen_ai.first_token",
        "mlvigil.first_token",
    }
)

_MARKERS = frozenset(PROVIDER + OPERATION + REQUEST_MODEL + ("gen_ai.response.model", "llm.model_name"))


def is_llm_span(attrs: Attrs) -> bool:
    kind = attrs.get("openinference.span.kind")
    if kind is not None:
        return kind.string_value.upper() in {"LLM", "EMBEDDING"}
    return any(k in attrs for k in _MARKERS)


def _indexed(attrs: Attrs, prefix: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """Collect ``prefix.N.field`` attributes into a list of dicts ordered by N."""
    items: dict[int, dict[str, Any]] = {}
    plen = len(prefix)
    for key in attrs:
        if not key.startswith(prefix):
            continue
        idx, _, rest = key[plen:].partition(".")
        if idx.isdigit() and rest in fields:
            items.setdefault(int(idx), {})[rest] = get(attrs, key)
    return [items[i] for i in sorted(items)]


def _invocation_params(attrs: Attrs) -> dict[str, Any]:
    raw = get(attrs, "llm.invocation_parameters")
    if isinstance(raw, str):
        try:
            parsed = parse_json(raw, "llm.invocation_parameters")
        except ValueError:
            return {}  # only a source of defaults: unreadable parameters are ignored
        return parsed if isinstance(parsed, dict) else {}
    return raw if isinstance(raw, dict) else {}


def _finish_reasons_attr(attrs: Attrs) -> str | None:
    value = get(attrs, "gen_ai.response.finish_reasons", "llm.response.finish_reason")
    if isinstance(value, list) and value:
        return ",".join(str(x) for x in value)
    if isinstance(value, str) and value:
        return value
    return None


def _finish_reasons_fallback(completions: list[dict[str, Any]], output_messages: Any) -> str | None:
    reasons = [str(c["finish_reason"]) for c in completions if c.get("finish_reason")]
    if not reasons and isinstance(output_messages, list):
        reasons = [
            str(m["finish_reason"]) for m in output_messages if isinstance(m, dict) and m.get("finish_reason")
        ]
    return ",".join(reasons) if reasons else None


def _messages(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_json(value, "gen_ai messages")
        except ValueError:
            return value  # kept as the text it is
    return value


def llm_row(
    span: Span, attrs: Attrs, keep_content: bool, max_chars: int, latency: float | None = None
) -> dict[str, Any]:
    """The ``llm_calls`` columns for one LLM span (without the resource columns)."""
    # One pass over the keys tells the dialect and which indexed families are present, so
    # the common case (current gen_ai names) reads only the keys it needs.
    has_traceloop = has_indexed_completion = has_oi_messages = False
    for key in attrs:
        if key.startswith(("traceloop.", "llm.", "gen_ai.prompt.", "gen_ai.completion.")):
            has_traceloop = True
            if key.startswith("gen_ai.completion."):
                has_indexed_completion = True
            elif key.startswith(("llm.input_messages.", "llm.output_messages.")):
                has_oi_messages = True
    if "openinference.span.kind" in attrs:
        dialect = "openinference"
    else:
        dialect = "traceloop" if has_traceloop else "gen_ai"
    params = _invocation_params(attrs) if dialect == "openinference" else {}
    start = span.start_time_unix_nano
    if latency is None and span.end_time_unix_nano >= start:
        latency = (span.end_time_unix_nano - start) / 1e9

    ttft = get_float(attrs, *TTFT)
    if ttft is None and span.events:
        for ev in span.events:
            if ev.name in FIRST_TOKEN_EVENTS and ev.time_unix_nano >= start:
                ttft = (ev.time_unix_nano - start) / 1e9
                break

    completions = (
        _indexed(attrs, "gen_ai.completion.", ("finish_reason", "content", "role"))
        if has_indexed_completion
        else []
    )
    reasons = _finish_reasons_attr(attrs)
    output_messages: Any = None
    if reasons is None or keep_content:
        output_messages = _messages(get(attrs, "gen_ai.output.messages"))
    if reasons is None:
        reasons = _finish_reasons_fallback(completions, output_messages)

    error = get_str(attrs, *ERROR)
    if error is None and span.status.code == Status.STATUS_CODE_ERROR:
        error = span.status.message or "error"
    if error is None and span.events:
        for ev in span.events:
            if ev.name == "exception":
                error = next(
                    (kv.value.string_value for kv in ev.attributes if kv.key == "exception.type"), "exception"
                )
                break

    input_tokens = get_int(attrs, *INPUT_TOKENS)
    output_tokens = get_int(attrs, *OUTPUT_TOKENS)
    total = get_int(attrs, *TOTAL_TOKENS)
    if total is None and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens

    operation = get_str(attrs, *OPERATION)
    if operation is None and dialect == "openinference":
        operation = (
            "embeddings" if attrs["openinference.span.kind"].string_value.upper() == "EMBEDDING" else "chat"
        )

    # Invocation parameters are settings, not measurements: a value that is not a finite
    # number there (``"max_tokens": Infinity`` for "no limit") leaves the column NULL rather
    # than rejecting the call. The same value in a gen_ai.request.* attribute rejects it.
    temperature = get_float(attrs, *TEMPERATURE)
    if temperature is None and _finite(params.get("temperature")):
        temperature = float(params["temperature"])
    max_tokens = get_int(attrs, *MAX_TOKENS)
    if max_tokens is None:
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            if _finite(params.get(key)):
                max_tokens = params[key]
                break

    request_model = get_str(attrs, *REQUEST_MODEL)
    if request_model is None and isinstance(params.get("model"), str):
        request_model = params["model"]
    response_model = get_str(attrs, *RESPONSE_MODEL)

    prompt = completion = None
    if keep_content:
        prompt_value: Any = get(attrs, "gen_ai.input.messages")
        if prompt_value is None:
            prompt_value = _indexed(attrs, "gen_ai.prompt.", ("role", "content")) or None
        if prompt_value is None and has_oi_messages:
            prompt_value = _indexed(attrs, "llm.input_messages.", ("message.role", "message.content")) or None
        if prompt_value is None:
            prompt_value = get(attrs, "input.value")
        completion_value: Any = output_messages
        if completion_value is None:
            completion_value = [
                {k: v for k, v in c.items() if k in ("role", "content")} for c in completions
            ] or None
        if completion_value is None and has_oi_messages:
            completion_value = (
                _indexed(attrs, "llm.output_messages.", ("message.role", "message.content")) or None
            )
        if completion_value is None:
            completion_value = get(attrs, "output.value")
        prompt = _text(prompt_value, max_chars)
        completion = _text(completion_value, max_chars)

    return {
        "dialect": dialect,
        "provider": get_str(attrs, *PROVIDER),
        "operation": operation,
        "request_model": request_model or response_model,
        "response_model": response_model or request_model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total,
        "latency_s": latency,
        "ttft_s": ttft,
        "finish_reasons": reasons,
        "error": error,
        "temperature": temperature,
        "max_tokens": max_tokens,
        "workflow": get_str(attrs, *WORKFLOW),
        "entity": get_str(attrs, *ENTITY),
        "prompt": prompt,
        "completion": completion,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _text(value: Any, max_chars: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json_text(value, ascii_only=False)
    return text[:max_chars] if text is not None else None
