"""Prometheus series of LLM traffic, from the ``llm_calls`` rows as they are committed.

Counted once per committed batch, aggregated per (service, model) first, so the cost per
span is a dict update, not a label lookup per metric. Labels: ``service`` and ``model`` (the
response model, else the request model).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlvigil.records import RecordBatch

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
_TTFT_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8, 1.5, 3.0, 6.0, 12.0)
# The llm_calls columns these series read.
_OBSERVED = [
    "service",
    "response_model",
    "request_model",
    "error",
    "input_tokens",
    "output_tokens",
    "finish_reasons",
    "latency_s",
    "ttft_s",
]


class LlmTrafficMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["service", "model"]
        self.calls = Counter(
            "mlvigil_llm_calls", "LLM calls by outcome.", [*labels, "outcome"], registry=registry
        )
        self.tokens = Counter(
            "mlvigil_llm_tokens", "LLM tokens by type.", [*labels, "type"], registry=registry
        )
        self.errors = Counter(
            "mlvigil_llm_errors", "Failed LLM calls by error type.", [*labels, "error"], registry=registry
        )
        self.finish_reasons = Counter(
            "mlvigil_llm_finish_reasons",
            "Finish reasons of LLM calls.",
            [*labels, "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "mlvigil_llm_call_duration_seconds",
            "LLM call latency (span duration).",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "mlvigil_llm_time_to_first_token_seconds",
            "Time to the first streamed token.",
            labels,
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )

    def observe(self, batch: RecordBatch) -> None:
        cols = batch.columns.get("llm_calls")
        if cols:
            self._observe(cols)

    def observe_arrow(self, tables: Mapping[str, pa.Table | pa.RecordBatch]) -> None:
        """The same from one request's Arrow tables (the write-ahead log path)."""
        table = tables.get("llm_calls")
        if table is not None and table.num_rows:
            self._observe(table.select(_OBSERVED).to_pydict())

    def _observe(self, cols: Mapping[str, list[Any]]) -> None:
        if not cols["service"]:
            return
        calls: Tally[tuple[str, str, str]] = Tally()
        tokens: Tally[tuple[str, str, str]] = Tally()
        errors: Tally[tuple[str, str, str]] = Tally()
        reasons: Tally[tuple[str, str, str]] = Tally()
        for i, service in enumerate(cols["service"]):
            svc = service or ""
            model = cols["response_model"][i] or cols["request_model"][i] or ""
            error = cols["error"][i]
            calls[(svc, model, "error" if error else "ok")] += 1
            if error:
                errors[(svc, model, error)] += 1
            if (n := cols["input_tokens"][i]) is not None:
                tokens[(svc, model, "input")] += n
            if (n := cols["output_tokens"][i]) is not None:
                tokens[(svc, model, "output")] += n
            if fr := cols["finish_reasons"][i]:
                for reason in fr.split(","):
                    reasons[(svc, model, reason)] += 1
            if (latency := cols["latency_s"][i]) is not None:
                self.duration.labels(svc, model).observe(latency)
            if (ttft := cols["ttft_s"][i]) is not None:
                self.ttft.labels(svc, model).observe(ttft)
        for counter, tally in (
            (self.calls, calls),
            (self.tokens, tokens),
            (self.errors, errors),
            (self.finish_reasons, reasons),
        ):
            for key, n in tally.items():
                counter.labels(*key).inc(n)
