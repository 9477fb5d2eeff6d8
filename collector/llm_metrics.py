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
        """The same from one loaded group's Arrow tables (the write-ahead log path). The rows
        are grouped once by (service, model), as integer codes, and every series is counted
        from those codes with numpy: per row in Python this cost more than loading the rows
        into DuckDB, and an Arrow ``group_by`` per series cost ~5 ms per call whatever the
        group's size (the loader pays it per group: per request when it keeps up)."""
        table = tables.get("llm_calls")
        if table is None or not table.num_rows:
            return
        svc = pc.fill_null(table["service"], "")
        model = pc.coalesce(_truthy(table["response_model"]), _truthy(table["request_model"]), "")
        keys, group = _pairs(svc, model)
        n = len(keys)
        error = _truthy(table["error"])
        has_error = _mask(pc.is_valid(error))
        outcomes = np.bincount(2 * group + has_error, minlength=2 * n)
        for k, (s, m) in enumerate(keys):
            for j, outcome in enumerate(("ok", "error")):
                if outcomes[2 * k + j]:
                    self.calls.labels(s, m, outcome).inc(int(outcomes[2 * k + j]))
        if has_error.any():
            _count_by(self.errors, keys, group[has_error], pc.filter(error, pa.array(has_error)))
        for column, kind in (("input_tokens", "input"), ("output_tokens", "output")):
            values = table[column]
            valid = _mask(pc.is_valid(values))
            if not valid.any():
                continue
            totals = np.zeros(n, dtype=np.int64)
            np.add.at(totals, group[valid], _numbers(values)[valid])
            present = np.bincount(group[valid], minlength=n)
            for k, (s, m) in enumerate(keys):
                if present[k]:  # a valid 0 still makes the series, as the per-row path does
                    self.tokens.labels(s, m, kind).inc(int(totals[k]))
        finish = _truthy(table["finish_reasons"])
        if pc.any(pc.is_valid(finish)).as_py():
            lists = pc.split_pattern(finish, ",")
            rows = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            _count_by(self.finish_reasons, keys, group[rows], pc.list_flatten(lists))
        _observe_many(self.duration, keys, group, table["latency_s"])
        _observe_many(self.ttft, keys, group, table["ttft_s"])

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


def _mask(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow column without nulls as a numpy bool array."""
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    """A numeric column as numpy, nulls as 0 (callers mask them out)."""
    return np.asarray(pc.fill_null(column, 0).to_numpy(zero_copy_only=False))


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[list[Any], np.ndarray]:
    """(distinct values, each row's index among them) of a column without nulls."""
    values = pc.unique(column)
    codes = pc.index_in(column, value_set=values)
    return values.to_pylist(), np.asarray(codes.to_numpy(zero_copy_only=False), dtype=np.int64)


def _pairs(first: pa.ChunkedArray, second: pa.ChunkedArray) -> tuple[list[tuple[Any, Any]], np.ndarray]:
    """(distinct (first, second) pairs present, each row's index among them)."""
    a_values, a = _codes(first)
    b_values, b = _codes(second)
    pairs, group = np.unique(a * len(b_values) + b, return_inverse=True)
    keys = [(a_values[p // len(b_values)], b_values[p % len(b_values)]) for p in pairs.tolist()]
    return keys, group.reshape(-1)


def _count_by(
    counter: Counter, keys: list[tuple[Any, Any]], group: np.ndarray, third: pa.ChunkedArray | pa.Array
) -> None:
    """``counter.labels(*keys[g], v).inc(rows)`` for each (group g, value v) of the rows."""
    values, codes = _codes(third)
    combined, counts = np.unique(group * len(values) + codes, return_counts=True)
    for c, count in zip(combined.tolist(), counts.tolist(), strict=True):
        s, m = keys[c // len(values)]
        counter.labels(s, m, values[c % len(values)]).inc(count)


def _observe_many(
    histogram: Histogram, keys: list[tuple[Any, Any]], group: np.ndarray, column: pa.ChunkedArray
) -> None:
    """``histogram.labels(*keys[g]).observe(v)`` for every non-null ``v`` of ``column`` (row
    group ``g``), as one increment per bucket and label set: the bucket is the first upper
    bound >= v (``observe``'s rule; NaN goes in none but into the sum, as there). Sums are
    added in row order, as the per-row path adds them."""
    valid = _mask(pc.is_valid(column))
    if not valid.any():
        return
    values = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)[valid]
    group = group[valid]
    n = len(keys)
    bounds = np.asarray(histogram._upper_bounds)
    present = np.bincount(group, minlength=n)
    sums = np.bincount(group, weights=values, minlength=n)
    width = len(bounds) + 1  # a last slot for NaN (in no bucket)
    per_bucket = np.bincount(
        group * width + np.searchsorted(bounds, values, side="left"), minlength=n * width
    )
    # prometheus_client has no bulk observe: update the child's sum and bucket values directly.
    for k, (s, m) in enumerate(keys):
        if not present[k]:
            continue
        child = histogram.labels(s, m)
        child._sum.inc(float(sums[k]))
        for b in np.flatnonzero(per_bucket[k * width : k * width + len(bounds)]).tolist():
            child._buckets[b].inc(int(per_bucket[k * width + b]))
