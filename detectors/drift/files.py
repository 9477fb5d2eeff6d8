"""The two input files of ``mlvigil drift``: checked, bounded and read, or refused with a reason.

Each refusal is an :class:`InputError` carrying the exit code of its class (schema mismatch,
too few rows, unreadable), so a CI gate never mistakes a broken input for "no drift".
Bounds come before the work: the file size before opening it, the column count from the
header or the Parquet footer before reading rows, the row count through a ``LIMIT``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.drift.exit_codes import EXIT_SCHEMA, EXIT_TOO_FEW_ROWS, EXIT_UNREADABLE, EXIT_USAGE
from detectors.drift.sources import Columns, numpy_columns

PARQUET_SUFFIXES = (".parquet", ".pq")
#: Bytes read to tell text from binary and to find the CSV delimiter.
SNIFF_BYTES = 64 * 1024
#: Lines scanned to name the first ragged line when DuckDB refuses a CSV.
RAGGED_SCAN_LINES = 200_000
CSV_DELIMITERS = (",", ";", "\t", "|")
_MISTYPED = re.compile(r'converting column "(.+?)"')
#: Values held in memory per file (rows x columns read). Measured: two files of 1M rows x 3
#: columns (one text) peak at 0.4 GB, so this cap keeps a run near 2 GB.
MAX_VALUES = 20_000_000


class InputError(Exception):
    """An input the gate must not compare: ``code`` is the exit status, ``kind`` its name in JSON."""

    def __init__(self, code: int, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.kind, self.message, self.details = code, kind, message, details

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **self.details}


@dataclass(frozen=True)
class Limits:
    min_rows: int = 50
    max_rows: int = 5_000_000
    max_columns: int = 1_000
    max_bytes: int = 2 * 1024**3


@dataclass
class InputFile:
    """One input: its path, the label used in messages and its columns' DuckDB types."""

    path: str
    label: str
    types: dict[str, str]
    #: The CSV delimiter; None for Parquet.
    delimiter: str | None
    columns: Columns = field(default_factory=dict)
    n_rows: int = 0

    @property
    def name(self) -> str:
        return f"{self.label} file {self.path}"

    @property
    def source(self) -> str:
        """The DuckDB table function that reads the file (the path is parameter 1)."""
        return _source(self.delimiter, self.types)


def open_input(path: str, label: str, limits: Limits) -> InputFile:
    """Check ``path`` (exists, a file, readable, within --max-file-size, the format its
    name says) and read its column names and types, without reading rows."""
    where = f"{label} file {path}"
    p = Path(path)
    if not p.exists():
        raise InputError(EXIT_UNREADABLE, "not_found", f"{where}: no such file")
    if not p.is_file():
        raise InputError(EXIT_UNREADABLE, "not_a_file", f"{where}: not a regular file")
    try:
        size = p.stat().st_size
        with p.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise InputError(EXIT_UNREADABLE, "unreadable", f"{where}: cannot be read ({exc.strerror})") from exc
    if size == 0:
        raise InputError(EXIT_TOO_FEW_ROWS, "empty", f"{where} is empty (0 bytes): nothing to compare")
    if size > limits.max_bytes:
        raise InputError(
            EXIT_UNREADABLE,
            "too_large",
            f"{where} is {size:,} bytes, over the limit of {limits.max_bytes:,} "
            "(raise it with --max-file-size, or compare a sample)",
        )
    if path.lower().endswith(PARQUET_SUFFIXES):
        if not head.startswith(b"PAR1"):
            raise InputError(
                EXIT_UNREADABLE,
                "not_parquet",
                f"{where} is not a Parquet file (no PAR1 header); name CSV files *.csv",
            )
        delimiter = None
        header: list[str] | None = None
    else:
        delimiter, header = _csv_delimiter(where, head)
    types = _describe(where, path, delimiter)
    if delimiter is not None and header and list(types) != header:
        # DuckDB's sniffer can take a ragged line's shape for the header's (a longer last line
        # makes the header a data row): name the ragged line instead of a schema mismatch.
        ragged = _first_ragged_line(path, delimiter)
        if ragged:
            raise _read_error(where, path, delimiter, ValueError("ragged"))
    if len(types) > limits.max_columns:
        raise InputError(
            EXIT_UNREADABLE,
            "too_many_columns",
            f"{where} has {len(types):,} columns, over the limit of {limits.max_columns:,} "
            "(raise it with --max-columns, or pick columns with --features)",
        )
    return InputFile(path, label, types, delimiter)


def _source(delimiter: str | None, types: dict[str, str] | None = None) -> str:
    """``read_parquet``, or ``read_csv`` strictly (a ragged line is an error, not a shifted
    row) with the columns already known to hold text typed as text: DuckDB guesses types
    from a sample, and a text value after the sample would otherwise fail the read."""
    if delimiter is None:
        return "read_parquet(?)"
    text = [n for n, t in (types or {}).items() if t == "VARCHAR"]
    typed = ", types={" + ", ".join(f"{_literal(n)}: 'VARCHAR'" for n in text) + "}" if text else ""
    return f"read_csv(?, header=true, strict_mode=true, delim={_literal(delimiter)}{typed})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _csv_delimiter(where: str, head: bytes) -> tuple[str, list[str]]:
    """The delimiter of a CSV file and the names on its header line; refuses binary and
    non-UTF-8 files."""
    if b"\0" in head:
        raise InputError(
            EXIT_UNREADABLE, "not_csv", f"{where} is not a CSV file (it holds binary data, not text)"
        )
    try:
        # A full sniff buffer may end inside a character: only that tail may be cut.
        text = head[: len(head) - 3 if len(head) == SNIFF_BYTES else None].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            EXIT_UNREADABLE, "not_csv", f"{where} is not a CSV file (not UTF-8 text: byte {exc.start})"
        ) from exc
    header = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    counts = {d: header.count(d) for d in CSV_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    delimiter = best if counts[best] else ","
    names = next(csv.reader([header], delimiter=delimiter), [])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(
            EXIT_UNREADABLE,
            "malformed",
            f"{where}: the header names {', '.join(repr(n) for n in twice)} more than once; "
            "each column needs its own name",
        )
    return delimiter, names


def _describe(where: str, path: str, delimiter: str | None) -> dict[str, str]:
    import duckdb

    source = _source(delimiter)
    con = duckdb.connect()
    try:
        con.execute(f"SELECT * FROM {source} LIMIT 0", [path])
        return {str(d[0]): str(d[1]) for d in con.description or []}
    except UnicodeDecodeError as exc:
        raise InputError(EXIT_UNREADABLE, "not_csv", f"{where} is not UTF-8 text") from exc
    except duckdb.Error as exc:
        raise _read_error(where, path, delimiter, exc) from exc
    finally:
        con.close()


def read_rows(inp: InputFile, names: list[str], limits: Limits) -> None:
    """Read ``names`` of ``inp`` into ``inp.columns``, at most the row limit (checked, not cut)."""
    import duckdb

    cap = min(limits.max_rows, MAX_VALUES // max(len(names), 1))
    cols = ", ".join('"' + n.replace('"', '""') + '"' for n in names)
    con = duckdb.connect()
    try:
        # At most one retry per column: each turns one more column DuckDB mistyped into text.
        for _ in range(len(inp.types) + 1):
            try:
                sql = f"SELECT {cols} FROM {inp.source} LIMIT {cap + 1}"
                raw = con.execute(sql, [inp.path]).fetchnumpy()
                break
            except duckdb.ConversionException as exc:
                mistyped = _MISTYPED.search(str(exc))
                if inp.delimiter is None or not mistyped or inp.types.get(mistyped[1]) in (None, "VARCHAR"):
                    raise _read_error(inp.name, inp.path, inp.delimiter, exc) from exc
                inp.types[mistyped[1]] = "VARCHAR"
    except duckdb.Error as exc:
        raise _read_error(inp.name, inp.path, inp.delimiter, exc) from exc
    finally:
        con.close()
    inp.n_rows = len(next(iter(raw.values()))) if raw else 0
    if inp.n_rows > cap:
        limit = (
            f"--max-rows {limits.max_rows:,}"
            if cap == limits.max_rows
            else f"{MAX_VALUES:,} values per file, {cap:,} rows of {len(names)} columns"
        )
        raise InputError(
            EXIT_UNREADABLE,
            "too_many_rows",
            f"{inp.name} has more than {cap:,} rows, over the limit ({limit}); compare a sample, "
            "or fewer columns with --features",
        )
    inp.columns = numpy_columns(raw)


def _read_error(where: str, path: str, delimiter: str | None, exc: Exception) -> InputError:
    """DuckDB's refusal in one plain sentence; a ragged CSV names its first bad line."""
    if delimiter is not None:
        ragged = _first_ragged_line(path, delimiter)
        if ragged:
            line, found, expected = ragged
            return InputError(
                EXIT_UNREADABLE,
                "malformed",
                f"{where}: line {line} has {found} fields but the header has {expected}; "
                "every line needs one value per column",
                line=line,
            )
    if "Error when sniffing file" in str(exc):
        return InputError(
            EXIT_UNREADABLE,
            "malformed",
            f"{where} is not a well-formed CSV file: its dialect could not be detected "
            "(mixed line endings, an unclosed quote, or a delimiter other than , ; tab |?)",
        )
    reason = _duckdb_reason(exc)
    kind = "malformed" if "CSV" in reason or "Parquet" in reason or "parquet" in reason else "unreadable"
    return InputError(EXIT_UNREADABLE, kind, f"{where} cannot be read: {reason}")


def _first_ragged_line(path: str, delimiter: str) -> tuple[int, int, int] | None:
    """(line, fields, header fields) of the first line whose field count differs from the header's."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return None
            for i, row in enumerate(reader, start=2):
                if i > RAGGED_SCAN_LINES:
                    return None
                if row and len(row) != len(header):
                    return reader.line_num, len(row), len(header)
    except (OSError, csv.Error):
        return None
    return None


def _duckdb_reason(exc: Exception) -> str:
    """The first lines of a DuckDB error, without its class prefix, SQL echo and advice on
    DuckDB options the user cannot pass."""
    lines = []
    for line in str(exc).splitlines():
        if not line.strip() or line.startswith(("Possible", "LINE ", "*")):
            break
        lines.append(line.strip())
    text = "; ".join(lines) or type(exc).__name__
    return re.sub(r"^[A-Za-z ]*Error: ", "", text)


def kind_of(duck_type: str) -> str:
    """What a DuckDB column type holds, in a user's words."""
    t = duck_type.upper()
    if t in ("BOOLEAN", "BOOL"):
        return "true/false"
    if t.startswith(("DECIMAL", "NUMERIC")) or t in {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
        "FLOAT",
        "DOUBLE",
        "REAL",
    }:
        return "number"
    if t.startswith(("DATE", "TIME")):
        return "date/time"
    if t == "VARCHAR":
        return "text"
    return t.lower()


def _has_values(values: Any) -> bool:
    arr = np.asarray(values)
    if arr.dtype.kind == "f":
        return bool((~np.isnan(arr)).any())
    return any(v is not None for v in arr.tolist())


def _example(values: Any) -> str | None:
    """A value that shows the column's kind: the first that is not a number, else the first."""
    present = [v for v in np.asarray(values, dtype=object).tolist() if v is not None and v == v]
    for v in present:
        try:
            float(v)
        except (TypeError, ValueError):
            return str(v)[:40]
    return str(present[0])[:40] if present else None


def check_types(reference: InputFile, current: InputFile, names: list[str]) -> None:
    """Refuse a column whose kind differs between the files (say numbers became text).
    A column with no value at all in one file has no kind there; the missing-value test
    reports it instead."""
    changed = []
    for name in names:
        ref_kind, cur_kind = kind_of(reference.types[name]), kind_of(current.types[name])
        if ref_kind == cur_kind:
            continue
        if not _has_values(reference.columns[name]) or not _has_values(current.columns[name]):
            continue
        changed.append(
            {
                "column": name,
                "reference_type": ref_kind,
                "current_type": cur_kind,
                "current_example": _example(current.columns[name]),
            }
        )
    if changed:
        lines = [
            f"column {c['column']!r}: the type changed from {c['reference_type']} to "
            f"{c['current_type']} (e.g. {c['current_example']!r} in the current file)"
            for c in changed
        ]
        raise InputError(
            EXIT_SCHEMA,
            "type_changed",
            "\n".join(lines) + "\nFix the producer, or leave these columns out with --exclude.",
            changed_columns=changed,
        )


def id_like(inp: InputFile, names: list[str]) -> list[str]:
    """Columns that look like row ids or timestamps: whole numbers, text or times with a
    different value in every row. Their "drift" says only that the rows are new ones."""
    out = []
    for name in names:
        kind = kind_of(inp.types[name])
        values = np.asarray(inp.columns[name])
        if values.size < 2:
            continue
        if kind == "number":
            whole = not np.isnan(values).any() and bool((values == np.round(values)).all())
            if whole and np.unique(values).size == values.size:
                out.append(name)
        elif kind in ("text", "date/time") and len(set(values.tolist())) == values.size:
            out.append(name)
    return out


def shared_columns(
    reference: InputFile, current: InputFile, features: list[str] | None, excluded: set[str]
) -> list[str]:
    """The columns to compare; refuses when the files' columns differ (a renamed or dropped
    column would otherwise pass the gate unseen)."""
    ref_names = [c for c in reference.types if c not in excluded]
    cur_names = [c for c in current.types if c not in excluded]
    if features is not None:
        unknown = [f for f in features if f not in reference.types and f not in current.types]
        if unknown:
            raise InputError(
                EXIT_USAGE,
                "unknown_feature",
                f"--features {', '.join(unknown)}: no such column in either file "
                f"(columns: {', '.join(list(reference.types)[:20])})",
            )
        missing_ref = [f for f in features if f not in reference.types]
        missing_cur = [f for f in features if f not in current.types]
        if missing_ref or missing_cur:
            raise InputError(
                EXIT_SCHEMA,
                "schema_mismatch",
                "; ".join(
                    f"--features {', '.join(m)} not in the {inp.name}"
                    for m, inp in ((missing_ref, reference), (missing_cur, current))
                    if m
                ),
                missing_columns=missing_cur,
                extra_columns=[],
                missing_from_reference=missing_ref,
            )
        return features
    missing = [c for c in ref_names if c not in current.types]
    extra = [c for c in cur_names if c not in reference.types]
    if missing or extra:
        lines = ["the two files have different columns"]
        if missing:
            lines.append(f"  in the reference only (missing from current): {', '.join(missing)}")
        if extra:
            lines.append(f"  in the current file only (not in reference): {', '.join(extra)}")
        lines.append("Fix the producer, or compare the shared columns with --features or --exclude.")
        raise InputError(
            EXIT_SCHEMA, "schema_mismatch", "\n".join(lines), missing_columns=missing, extra_columns=extra
        )
    return ref_names


def check_rows(inp: InputFile, limits: Limits) -> None:
    if inp.n_rows < limits.min_rows:
        raise InputError(
            EXIT_TOO_FEW_ROWS,
            "too_few_rows",
            f"{inp.name} has {inp.n_rows} rows; the drift tests need at least {limits.min_rows} "
            "in each file (--min-rows). Compare a larger sample.",
            rows=inp.n_rows,
            min_rows=limits.min_rows,
        )


def read_inputs(
    reference_path: str,
    current_path: str,
    limits: Limits,
    features: list[str] | None = None,
    excluded: set[str] | None = None,
) -> tuple[InputFile, InputFile, list[str]]:
    """Both files checked and read: the columns to compare, in the reference's order."""
    reference = open_input(reference_path, "reference", limits)
    current = open_input(current_path, "current", limits)
    names = shared_columns(reference, current, features, excluded or set())
    if not names:
        raise InputError(EXIT_SCHEMA, "schema_mismatch", "no columns left to compare after --exclude")
    for inp in (reference, current):
        read_rows(inp, names, limits)
    for inp in (reference, current):
        check_rows(inp, limits)
    check_types(reference, current, names)
    return reference, current, names


#: Bounds for a monitor's reference file named in the config: the gate's defaults, with one row
#: enough (the monitor's own window minimum applies to live windows, not to the reference).
REFERENCE_LIMITS = Limits(min_rows=1)


def read_reference_file(path: str) -> Columns:
    """A monitor's reference file (CSV or Parquet), checked and bounded like the gate's inputs;
    InputError with a plain reason when it cannot serve."""
    inp = open_input(path, "reference", REFERENCE_LIMITS)
    read_rows(inp, list(inp.types), REFERENCE_LIMITS)
    check_rows(inp, REFERENCE_LIMITS)
    return inp.columns
