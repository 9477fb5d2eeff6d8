"""Prometheus series of LLM traffic, from the ``llm_calls`` rows as they are committed.

Counted once per committed batch, aggregated per (service, model) first, so the cost per
span is a dict update, not a label lookup per metric. Labels: ``service`` and ``model`` (the
response model, else the request model).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import CollectorRegistry, Counter, Histogram

from mlvigil.core.records import RecordBatch

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
        """The same from one request's Arrow tables (the write-ahead log path), aggregated in
        Arrow: per row in Python this cost more than loading the rows into DuckDB."""
        table = tables.get("llm_calls")
        if table is None or not table.num_rows:
            return
        svc = pc.fill_null(table["service"], "")
        model = pc.coalesce(_truthy(table["response_model"]), _truthy(table["request_model"]), "")
        error = _truthy(table["error"])
        has_error = pc.is_valid(error)
        t = pa.table(
            {
                "svc": svc,
                "model": model,
                "outcome": pc.if_else(has_error, "error", "ok"),
                "error": error,
                "in": table["input_tokens"],
                "out": table["output_tokens"],
                "latency": table["latency_s"],
                "ttft": table["ttft_s"],
            }
        )
        keys = ["svc", "model"]
        for row in t.group_by([*keys, "outcome"]).aggregate([([], "count_all")]).to_pylist():
            self.calls.labels(row["svc"], row["model"], row["outcome"]).inc(row["count_all"])
        errors = t.filter(has_error).group_by([*keys, "error"]).aggregate([([], "count_all")])
        for row in errors.to_pylist():
            self.errors.labels(row["svc"], row["model"], row["error"]).inc(row["count_all"])
        for row in t.group_by(keys).aggregate([("in", "sum"), ("out", "sum")]).to_pylist():
            for kind, total in (("input", row["in_sum"]), ("output", row["out_sum"])):
                if total is not None:
                    self.tokens.labels(row["svc"], row["model"], kind).inc(total)
        finish = _truthy(table["finish_reasons"])
        if pc.any(pc.is_valid(finish)).as_py():
            lists = pc.split_pattern(finish, ",")
            rows = pc.list_parent_indices(lists)
            reasons = pa.table(
                {"svc": svc.take(rows), "model": model.take(rows), "reason": pc.list_flatten(lists)}
            )
            for row in reasons.group_by([*keys, "reason"]).aggregate([([], "count_all")]).to_pylist():
                self.finish_reasons.labels(row["svc"], row["model"], row["reason"]).inc(row["count_all"])
        _observe_many(self.duration, t, "latency")
        _observe_many(self.ttft, t, "ttft")

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


def _truthy(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``column`` with "" as null (the Python path's ``x or y`` treats both alike)."""
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)


def _observe_many(histogram: Histogram, t: pa.Table, column: str) -> None:
    """``histogram.labels(svc, model).observe(v)`` for every non-null ``v`` of ``column``,
    as one increment per bucket and label set: the bucket is the first upper bound >= v
    (``observe``'s rule; NaN goes in none but into the sum, as there)."""
    t = t.filter(pc.is_valid(t[column]))
    if not t.num_rows:
        return
    values = t[column].to_numpy()
    bounds = np.asarray(histogram._upper_bounds)
    t = t.append_column("bucket", pa.array(np.searchsorted(bounds, values, side="left")))
    per_key = t.group_by(["svc", "model"]).aggregate([(column, "sum")]).to_pylist()
    per_bucket = t.group_by(["svc", "model", "bucket"]).aggregate([([], "count_all")]).to_pylist()
    # prometheus_client has no bulk observe: update the child's sum and bucket values directly.
    for row in per_key:
        histogram.labels(row["svc"], row["model"])._sum.inc(row[f"{column}_sum"])
    for row in per_bucket:
        if row["bucket"] < len(bounds):
            histogram.labels(row["svc"], row["model"])._buckets[row["bucket"]].inc(row["count_all"])
