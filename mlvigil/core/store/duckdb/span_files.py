"""Raw spans of the embedded store: Parquet files in ``<data_dir>/spans/``, read by DuckDB
through the view ``spans``, not rows of a DuckDB table.

Why: loading the raw spans into a DuckDB table (its insert, its WAL, the checkpoint that
compresses them again) cost 3-3.5 ms of CPU per 1000-span request, about a third of the
server's CPU per span; a zstd Parquet file of the same group costs ~0.9 ms and takes ~2.5x
less disk (bench/ingest/RESULTS.txt). Every query of the store reads them as before: the
view ``spans`` is ``read_parquet`` over this directory.

A file's name says what a reader of the directory needs without opening it::

    <n>_<level>_<rows>_<min ts>_<max ts>_<arrived>_<log>_<segment>_<offset>.parquet

``n`` numbers files in order of writing; ``level`` 0 is a load's (or a direct append's)
file, higher levels are merged ones; the span timestamps are floored / ceiled to seconds;
``arrived`` is when its newest rows were written (s); ``log`` / ``segment`` / ``offset`` are
the write-ahead log pass and position whose load wrote it (``-`` / -1 / -1: not a log load).

- **Exactly once.** A load writes its file (fsynced, renamed into place, the directory
  fsynced), then commits the log's position in DuckDB. At open, a file of a log whose
  position is past the stored one belongs to a load that never committed and is removed;
  the log's replay writes it again.
- **Merges** keep the number of files a query opens small without re-encoding a row: when
  ``merge_files`` files of one level arrived in one hour, they become one file of the next
  level; an hour that has ended becomes one file. No merge writes more than
  ``max_merge_bytes`` (1 GiB), and a file of half that is left as it is. The column chunks
  are copied as written (``mlvigil_native.concat_parquet``). A merge is journalled (``merge-<n>.json``: its
  inputs) so that a crash between the new file's rename and its inputs' removal does not
  leave both.
- **Retention** removes a file once its newest span is older than the cutoff, or once it
  arrived before the cutoff (a span stamped in the future cannot keep its file forever).
  A file that straddles the cutoff is kept whole until then: spans may outlive the
  retention by up to an hour.
- Files are removed only under ``remove_lock`` (the store's read lock): a query on the read
  cursor never finds a file it listed gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

try:
    from mlvigil_native import concat_parquet
except ImportError:  # not built yet: merges wait for it (scripts/setup.sh builds it)
    concat_parquet = None

NOT_LOGGED = ("-", -1, -1)
_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_(-?\d+)_(-?\d+)_(\d+)_([a-z0-9-]+)_(-?\d+)_(-?\d+)\.parquet$")
#: the file that keeps the view's glob matching something (DuckDB refuses a glob that matches
#: nothing): no rows, never merged nor removed
_PLACEHOLDER_N = 0
#: the file an older store's ``spans`` table became (``DuckDBStore`` at its first open)
MIGRATED_N = 1
_HOUR = 3600
_TS_LIMIT = 1e13
_DICTIONARY_COLUMNS = ["name", "kind", "status_code", "service", "record_kind", "resource_attrs"]


@dataclass(frozen=True)
class SpanFile:
    n: int
    level: int
    rows: int
    min_ts: int
    max_ts: int
    arrived: int
    log: str
    segment: int
    offset: int
    #: bytes on disk (not part of the name)
    size: int = 0

    @property
    def name(self) -> str:
        return (
            f"{self.n:012d}_{self.level}_{self.rows}_{self.min_ts}_{self.max_ts}_{self.arrived}"
            f"_{self.log}_{self.segment}_{self.offset}.parquet"
        )

    @property
    def hour(self) -> int:
        return self.arrived // _HOUR

    @classmethod
    def parse(cls, name: str) -> SpanFile | None:
        m = _NAME.match(name)
        if m is None:
            return None
        n, level, rows, lo, hi, arrived, log, seg, off = m.groups()
        return cls(int(n), int(level), int(rows), int(lo), int(hi), int(arrived), log, int(seg), int(off))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ts_bounds(table: pa.Table) -> tuple[int, int]:
    lo, hi = pc.min_max(table.column("ts")).values()
    lo_s, hi_s = lo.as_py(), hi.as_py()
    if lo_s is None or hi_s is None or not (math.isfinite(lo_s) and math.isfinite(hi_s)):
        lo_s, hi_s = 0.0, 0.0  # no usable timestamp: such a file expires by arrival
    # bounded, so a name stays short whatever a producer stamped (OTLP's u64 nanoseconds
    # stay under 2e10 s)
    lo_s, hi_s = (min(max(t, -_TS_LIMIT), _TS_LIMIT) for t in (lo_s, hi_s))
    return math.floor(lo_s), math.ceil(hi_s)


class SpanFiles:
    """The directory of raw span files and what is known of them (from their names)."""

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema,
        *,
        remove_lock: threading.Lock,
        merge_files: int = 32,
        max_merge_bytes: int = 1 << 30,
        compression_level: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.schema = schema
        self.remove_lock = remove_lock
        self.merge_files = max(2, merge_files)
        self.max_merge_bytes = max_merge_bytes
        self.compression_level = compression_level
        self.clock = clock
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the file table and the numbering
        self._files: dict[int, SpanFile] = {}
        self._next = MIGRATED_N + 1
        self._open()

    # -- the directory at open ------------------------------------------------------------
    def _open(self) -> None:
        for journal in sorted(self.directory.glob("merge-*.json")):
            self._finish_merge(journal)
        for path in self.directory.iterdir():
            if path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write a crash interrupted (never renamed in)
                continue
            f = SpanFile.parse(path.name)
            if f is not None:
                self._files[f.n] = dataclasses.replace(f, size=path.stat().st_size)
        self._next = max([*self._files, MIGRATED_N]) + 1
        if _PLACEHOLDER_N not in self._files:
            placeholder = SpanFile(_PLACEHOLDER_N, 0, 0, 0, 0, 0, *NOT_LOGGED)
            self._files[_PLACEHOLDER_N] = self._write_file(self.schema.empty_table(), placeholder)

    def _finish_merge(self, journal: Path) -> None:
        """A merge a crash interrupted: done if its output was renamed in (its inputs go),
        else undone (its output's temporary file goes)."""
        try:
            plan = json.loads(journal.read_text())
            output, inputs = str(plan["output"]), [str(i) for i in plan["inputs"]]
        except (OSError, ValueError, KeyError, TypeError):
            journal.unlink(missing_ok=True)
            return
        if (self.directory / output).exists():
            for name in inputs:
                if SpanFile.parse(name) is not None:  # a span file's name, nothing else
                    (self.directory / name).unlink(missing_ok=True)
        else:
            (self.directory / f"{output}.tmp").unlink(missing_ok=True)
        _fsync_dir(self.directory)
        journal.unlink(missing_ok=True)

    def discard_uncommitted(self, positions: dict[str, tuple[int, int]]) -> int:
        """Removes the files of log loads past their log's stored position (``positions``:
        log -> (segment, offset)): their transaction never committed and the log replays
        them. Returns the files removed."""
        gone = [
            f
            for f in self._snapshot()
            if f.log != NOT_LOGGED[0] and (f.segment, f.offset) > positions.get(f.log, (-1, -1))
        ]
        self.remove(gone)
        return len(gone)

    # -- writing --------------------------------------------------------------------------
    def _snapshot(self) -> list[SpanFile]:
        with self._lock:
            return sorted(self._files.values(), key=lambda f: f.n)

    def _number(self) -> int:
        with self._lock:
            n = self._next
            self._next += 1
            return n

    def _write_file(self, table: pa.Table, f: SpanFile) -> SpanFile:
        """Writes ``f``'s file durably; ``f`` with its size."""
        tmp = self.directory / f"{f.name}.tmp"
        try:
            with open(tmp, "wb") as sink:
                pq.write_table(
                    table,
                    sink,
                    compression="zstd",
                    compression_level=self.compression_level,
                    # dictionaries where values repeat (not the ids: a dictionary of unique
                    # values is built, then dropped): 0.79 ms per 1000 spans and 40 B a span,
                    # against 1.0-1.2 ms and 32 B with one on every column
                    use_dictionary=_DICTIONARY_COLUMNS,
                    # min/max of ts let DuckDB skip row groups outside a time filter; the
                    # other columns' statistics cost CPU and serve no query here
                    write_statistics=["ts"],
                    row_group_size=122_880,
                )
                sink.flush()
                os.fsync(sink.fileno())
            size = tmp.stat().st_size
            os.replace(tmp, self.directory / f.name)
            _fsync_dir(self.directory)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dataclasses.replace(f, size=size)

    def write(
        self, table: pa.Table, log: str | None = None, segment: int = -1, offset: int = 0
    ) -> SpanFile | None:
        """``table`` (the spans schema's columns, in any order; missing ones NULL) as a new
        level-0 file, durably; ``log``'s load up to (segment, offset) when it comes from a
        write-ahead log. None for an empty table. OSError (e.g. a full disk) leaves nothing
        behind."""
        if not table.num_rows:
            return None
        if log is not None and not re.fullmatch(r"[a-z0-9-]+", log):
            raise ValueError(f"log name {log!r}: only a-z, 0-9 and - are allowed")
        for field in self.schema:  # e.g. span_proto, which log loads never carry
            if field.name not in table.column_names:
                table = table.append_column(field, pa.nulls(table.num_rows, field.type))
        table = table.select(self.schema.names).cast(self.schema)
        lo, hi = _ts_bounds(table)
        f = SpanFile(
            self._number(),
            0,
            table.num_rows,
            lo,
            hi,
            int(self.clock()),
            *((log, segment, offset) if log is not None else NOT_LOGGED),
        )
        f = self._write_file(table, f)
        with self._lock:
            self._files[f.n] = f
        return f

    def adopt(self, path: Path, rows: int, min_ts: float, max_ts: float) -> SpanFile:
        """A Parquet file written elsewhere (fsynced, the spans schema) renamed in as the
        migrated file (number ``MIGRATED_N``)."""
        lo, hi = math.floor(min_ts), math.ceil(max_ts)
        f = SpanFile(MIGRATED_N, 1, rows, lo, hi, int(self.clock()), *NOT_LOGGED, size=path.stat().st_size)
        os.replace(path, self.directory / f.name)
        _fsync_dir(self.directory)
        with self._lock:
            self._files[f.n] = f
        return f

    def has_migrated(self) -> bool:
        with self._lock:
            return MIGRATED_N in self._files

    # -- reading what the names say -------------------------------------------------------
    def rows(self) -> int:
        with self._lock:
            return sum(f.rows for f in self._files.values())

    def count(self) -> int:
        """Files holding rows (the placeholder not counted)."""
        with self._lock:
            return sum(1 for f in self._files.values() if f.n != _PLACEHOLDER_N)

    def glob(self) -> str:
        """What the view reads: every named file (temporary files and journals do not match)."""
        return str(self.directory / "*_*.parquet")

    # -- merging and retention ------------------------------------------------------------
    def merge(self) -> int:
        """Merges due (see the module's docstring); returns the merges done. Needs the native
        module (``concat_parquet``); without it, files are left as they are."""
        if concat_parquet is None:
            return 0
        done = 0
        while (group := self._due()) is not None:
            self._merge(group)
            done += 1
        return done

    def _due(self) -> list[SpanFile] | None:
        now_hour = int(self.clock()) // _HOUR
        by_hour: dict[int, list[SpanFile]] = {}
        for f in self._snapshot():
            # files of half the size cap or more are large enough as they are
            if f.n > MIGRATED_N and f.rows and f.size < self.max_merge_bytes // 2:
                by_hour.setdefault(f.hour, []).append(f)
        for hour, files in sorted(by_hour.items()):
            if hour < now_hour and len(files) > 1:
                return self._within_cap(files)  # an hour that has ended: one file (or a few)
            by_level: dict[int, list[SpanFile]] = {}
            for f in files:
                by_level.setdefault(f.level, []).append(f)
            for level_files in by_level.values():
                if len(level_files) >= self.merge_files:
                    return self._within_cap(level_files[: self.merge_files])
        return None

    def _within_cap(self, files: list[SpanFile]) -> list[SpanFile]:
        """The first of ``files`` whose bytes add up to ``max_merge_bytes`` at most (two at
        least): a merge's copy stays bounded, so the loader pass doing it never stalls long."""
        chosen: list[SpanFile] = []
        total = 0
        for f in files:
            if len(chosen) >= 2 and total + f.size > self.max_merge_bytes:
                break
            chosen.append(f)
            total += f.size
        return chosen

    def _merge(self, inputs: list[SpanFile]) -> None:
        assert concat_parquet is not None
        out = SpanFile(
            self._number(),
            max(f.level for f in inputs) + 1,
            sum(f.rows for f in inputs),
            min(f.min_ts for f in inputs),
            max(f.max_ts for f in inputs),
            max(f.arrived for f in inputs),
            *NOT_LOGGED,
        )
        tmp = self.directory / f"{out.name}.tmp"
        journal = self.directory / f"merge-{out.n:012d}.json"
        try:
            concat_parquet([str(self.directory / f.name) for f in inputs], str(tmp))
            journal.write_text(json.dumps({"output": out.name, "inputs": [f.name for f in inputs]}))
            with open(journal, "rb+") as j:
                os.fsync(j.fileno())
            out = dataclasses.replace(out, size=tmp.stat().st_size)
        except BaseException:
            tmp.unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
            raise
        with self.remove_lock:  # the new file and its inputs' removal, seen together
            os.replace(tmp, self.directory / out.name)
            with self._lock:
                self._files[out.n] = out
            # From here the journal stays until the inputs are gone: if removing them fails,
            # the next open finishes the merge (never both the output and its inputs).
            self.remove(inputs, locked=True)
        journal.unlink(missing_ok=True)

    def expire(self, cutoff: float) -> int:
        """Removes the files whose spans are all older than ``cutoff`` or that arrived before
        it; returns the rows removed."""
        gone = [
            f for f in self._snapshot() if f.n != _PLACEHOLDER_N and (f.max_ts < cutoff or f.arrived < cutoff)
        ]
        self.remove(gone)
        return sum(f.rows for f in gone)

    def remove(self, files: Iterable[SpanFile], *, locked: bool = False) -> None:
        """Removes ``files`` (under ``remove_lock`` unless the caller holds it)."""
        files = list(files)
        if not files:
            return
        with contextlib.nullcontext() if locked else self.remove_lock:
            for f in files:
                (self.directory / f.name).unlink(missing_ok=True)
                with self._lock:
                    self._files.pop(f.n, None)
            _fsync_dir(self.directory)
