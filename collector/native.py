"""The OTLP normaliser on the product path: ``mlvigil_native`` (Rust; source in native/,
built by scripts/setup.sh), OTLP protobuf bytes in, one Arrow table per record table out.

A request holding a rare shape the native side does not map exactly (``Unsupported``:
non-ASCII numeric text, lone surrogates in JSON, huge JSON integers) is normalised by the
Python reference (collector/normalize.py) instead, converted to the same Arrow tables, so
results never differ; ``mlvigil_native_fallbacks_total`` counts those requests.

The ``spans`` table carries no ``span_proto`` column: raw spans go to the write-ahead log,
not into a per-row blob in the store.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError, Message

from collector.normalize import NORMALISERS, Normalised, NormaliseOptions
from collector.otlp_decode import REQUEST_TYPES, BadRequest, TooLarge, count_items
from mlvigil.core.records import TABLES, arrow_schema

try:
    import mlvigil_native
except ImportError:  # not built yet: scripts/setup.sh builds it with maturin
    mlvigil_native = None

MISSING = (
    "the native normaliser (Python module mlvigil_native) is not installed: run scripts/setup.sh,"
    " which builds native/mlvigil-native with cargo and maturin"
)

# Columns the store has and the log leaves out (raw spans are the log itself).
NOT_LOGGED = {"spans": frozenset({"span_proto"})}

#: Arrow schema of each record table as logged (the Python fallback's tables follow it).
LOG_SCHEMAS = {table: arrow_schema(table, omit=NOT_LOGGED.get(table, frozenset())) for table in TABLES}


class NotBuilt(RuntimeError):
    """The extension is missing (``mlvigil serve`` exits saying to run scripts/setup.sh)."""


def available() -> bool:
    return mlvigil_native is not None


def require() -> None:
    """NotBuilt, saying how to build the extension, when it is missing."""
    if mlvigil_native is None:
        raise NotBuilt(MISSING)


def scan(
    signal: str, body: bytes, opts: NormaliseOptions, max_items: int
) -> tuple[Normalised, dict[str, Any]]:
    """(counts and reasons, {table: pyarrow.RecordBatch}) of protobuf ``body``. BadRequest
    for bytes protobuf refuses, TooLarge past ``max_items`` items (counted as ``count_items``
    counts them), ``mlvigil_native.Unsupported`` for a shape left to the Python reference."""
    result, tables = _scan(signal, body, opts, max_items, log_record=False)
    return result, tables


def scan_to_log(
    signal: str, body: bytes | list[bytes], opts: NormaliseOptions, max_items: int
) -> tuple[Normalised, tuple[bytes, int]]:
    """``scan``, with the tables as one write-ahead log record payload and its CRC-32
    (``(b"", 0)`` when no table has rows), encoded in Rust without the GIL: no pyarrow
    objects on the way to the log. ``body`` may be the chunks a request arrived in (joined
    in Rust, without the GIL). Same errors as ``scan``."""
    result, payload = _scan(signal, body, opts, max_items, log_record=True)
    return result, payload


def _scan(
    signal: str, body: bytes | list[bytes], opts: NormaliseOptions, max_items: int, *, log_record: bool
) -> Any:
    require()
    assert mlvigil_native is not None
    try:
        if signal == "traces":
            received, rejected, reasons, out = mlvigil_native.normalise_traces(
                body,
                opts.keep_llm_content,
                opts.keep_raw_spans,
                opts.max_content_chars,
                max_items,
                log_record,
            )
        elif signal == "metrics":
            received, rejected, reasons, out = mlvigil_native.normalise_metrics(body, max_items, log_record)
        else:
            received, rejected, reasons, out = mlvigil_native.normalise_logs(body, max_items, log_record)
    except mlvigil_native.InvalidRequest as exc:
        raise BadRequest(f"invalid protobuf {REQUEST_TYPES[signal].__name__}: {exc}") from None
    except mlvigil_native.TooLarge as exc:
        raise TooLarge(str(exc)) from None
    return Normalised(received=received, rejected=rejected, reasons=dict(reasons)), out


def is_unsupported(exc: BaseException) -> bool:
    return mlvigil_native is not None and isinstance(exc, mlvigil_native.Unsupported)


def reference(
    signal: str, message: Message | bytes, opts: NormaliseOptions, max_items: int
) -> tuple[Normalised, dict[str, pa.Table]]:
    """The Python reference normaliser's result for ``message`` (or its protobuf bytes), as
    the same Arrow tables the native side makes (the fallback for ``Unsupported``)."""
    if isinstance(message, bytes):
        msg = REQUEST_TYPES[signal]()
        try:
            msg.ParseFromString(message)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(f"invalid protobuf {type(msg).__name__}: {exc}") from None
        message = msg
    count_items(signal, message, max_items)
    result = NORMALISERS[signal](message, opts)
    tables: dict[str, pa.Table] = {}
    for name, cols in result.batch.columns.items():
        schema = LOG_SCHEMAS[name]
        if result.batch.rows(name):
            tables[name] = pa.Table.from_pydict({f.name: cols[f.name] for f in schema}, schema=schema)
    return result, tables
