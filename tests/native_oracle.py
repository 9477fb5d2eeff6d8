"""The Python normaliser as the oracle of the native one: one request through both, compared
row for row (the differential tests and the fuzz tests of the native normaliser use it)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.message import DecodeError

from collector.normalize import NORMALISERS, NormaliseOptions
from collector.otlp_decode import REQUEST_TYPES, TooLarge, count_items

# Columns the native path leaves out on purpose (raw spans go to the write-ahead log).
NOT_NATIVE = {"spans": {"span_proto"}}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def compare(signal: str, body: bytes, opts: NormaliseOptions, max_items: int = 100_000) -> str:
    """Normalise ``body`` (an export request of ``signal``: traces, metrics or logs) both
    ways; AssertionError naming the first difference. Returns 'native' (compared equal),
    'unsupported' (the native side hands it to Python), 'invalid' (both refuse the bytes)
    or 'too large' (both count more than ``max_items`` items)."""
    import mlvigil_native

    too_large = None
    try:
        msg = REQUEST_TYPES[signal].FromString(body)
        try:
            count_items(signal, msg, max_items)
            py = NORMALISERS[signal](msg, opts)
        except TooLarge as exc:
            py, too_large = None, str(exc)
        py_error = None
    except (DecodeError, RuntimeError, ValueError) as exc:
        py, py_error = None, exc
    try:
        if signal == "traces":
            received, rejected, reasons, tables = mlvigil_native.normalise_traces(
                body, opts.keep_llm_content, opts.keep_raw_spans, opts.max_content_chars, max_items
            )
        elif signal == "metrics":
            received, rejected, reasons, tables = mlvigil_native.normalise_metrics(body, max_items)
        else:
            received, rejected, reasons, tables = mlvigil_native.normalise_logs(body, max_items)
    except mlvigil_native.TooLarge as exc:
        assert py_error is None, f"native counted items of bytes protobuf refuses: {py_error}"
        assert too_large == str(exc), (too_large, str(exc))
        return "too large"
    except mlvigil_native.InvalidRequest as exc:
        assert py_error is not None, f"native refused bytes protobuf accepts: {exc}"
        return "invalid"
    except mlvigil_native.Unsupported:
        assert py_error is None, f"native did not refuse bytes protobuf refuses: {py_error}"
        return "unsupported"
    assert too_large is None, f"native did not count more than {max_items} items: {too_large}"
    assert py is not None, f"native accepted bytes protobuf refuses: {py_error}"
    assert (received, rejected, dict(reasons)) == (py.received, py.rejected, py.reasons)
    py_tables = {t for t, cols in py.batch.columns.items() if cols and len(next(iter(cols.values())))}
    assert set(tables) == py_tables, (set(tables), py_tables)
    for name, batch in tables.items():
        native_cols = batch.to_pydict()
        py_cols = {c: v for c, v in py.batch.columns[name].items() if c not in NOT_NATIVE.get(name, ())}
        assert list(native_cols) == list(py_cols), (name, list(native_cols), list(py_cols))
        for col, py_values in py_cols.items():
            native_values = native_cols[col]
            assert len(native_values) == len(py_values), (name, col)
            for i, (n, p) in enumerate(zip(native_values, py_values, strict=True)):
                assert _same(n, p), f"{name}.{col} row {i}: native {n!r} != python {p!r}"
    return "native"


def compare_traces(body: bytes, opts: NormaliseOptions) -> str:
    return compare("traces", body, opts)
