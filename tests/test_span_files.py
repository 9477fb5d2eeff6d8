"""The embedded store's raw spans as Parquet files (mlvigil/core/store/duckdb/span_files.py):
loads, exactly once across a crash, merges, retention, an older store's table, refusals,
and readers during merges."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlvigil.core.store import StoreUnavailable
from mlvigil.core.store.duckdb import DuckDBStore
from mlvigil.core.store.duckdb.connection import SPAN_FILE_SCHEMA
from mlvigil.core.store.duckdb.span_files import MIGRATED_N, SpanFile, SpanFiles

pytestmark = pytest.mark.timeout(120)

RAW = "ingest-spans"


def spans(n: int, start: float = 1_000_000.0, service: str = "svc") -> pa.Table:
    """``n`` raw spans as a log load carries them (no span_proto)."""
    return pa.table(
        {
            "ts": [start + i for i in range(n)],
            "end_ts": [start + i + 0.5 for i in range(n)],
            "trace_id": [f"{i:032x}" for i in range(n)],
            "span_id": [f"{i:016x}" for i in range(n)],
            "parent_span_id": [None] * n,
            "name": ["chat"] * n,
            "kind": pa.array([3] * n, pa.int32()),
            "status_code": pa.array([0] * n, pa.int32()),
            "service": [service] * n,
            "record_kind": ["llm"] * n,
            "resource_attrs": ['{"service.name":"svc"}'] * n,
        }
    )


def data_files(store: DuckDBStore) -> list[SpanFile]:
    return [
        f
        for p in sorted(store.span_files.directory.iterdir())
        if (f := SpanFile.parse(p.name)) is not None and f.rows
    ]


def test_raw_spans_load_into_files_read_through_the_view(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    try:
        store.load_log(RAW, {"spans": spans(5)}, 0, 100)
        assert store.log_position(RAW) == (0, 100)
        assert store.counts()["spans"] == 5
        rows = store.query("spans", columns=["ts", "trace_id", "resource_attrs", "span_proto"])
        assert rows["ts"] == [1_000_000.0 + i for i in range(5)]
        assert rows["resource_attrs"] == ['{"service.name":"svc"}'] * 5
        assert rows["span_proto"] == [None] * 5
        assert store.distinct("spans", ["service"]) == [("svc",)]
        kind = store._read(
            lambda cur: cur.execute(
                "SELECT table_type FROM information_schema.tables WHERE table_name = 'spans'"
            ).fetchone()
        )
        assert kind == ("VIEW",), "no DuckDB table of raw spans"
        (f,) = data_files(store)
        assert (f.level, f.rows, f.log, f.segment, f.offset) == (0, 5, RAW, 0, 100)
        # the file is plain Parquet, readable without mlvigil
        assert pq.read_table(store.span_files.directory / f.name).num_rows == 5
    finally:
        store.close()


def test_a_file_of_a_load_that_never_committed_is_removed_at_open(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    store.load_log(RAW, {"spans": spans(3)}, 0, 100)
    # A crash after the next load's file and before its transaction: the file is there, the
    # position is not.
    store.span_files.write(spans(4, start=2_000_000.0), RAW, 0, 200)
    assert store.counts()["spans"] == 7
    store.close()

    store = DuckDBStore(tmp_path)
    try:
        assert store.counts()["spans"] == 3
        assert store.log_position(RAW) == (0, 100)
        # the replay of the log writes that group again: once
        store.load_log(RAW, {"spans": spans(4, start=2_000_000.0)}, 0, 200)
        assert store.counts()["spans"] == 7
        assert sorted(store.query("spans", columns=["ts"])["ts"]) == sorted(
            [1_000_000.0 + i for i in range(3)] + [2_000_000.0 + i for i in range(4)]
        )
    finally:
        store.close()


def test_a_failed_position_commit_removes_the_loads_file(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    try:
        with pytest.raises(Exception, match="unknown record table"):
            store.load_log(RAW, {"spans": spans(3), "nope": spans(1)}, 0, 100)
        assert data_files(store) == []
        store.load_log(RAW, {"spans": spans(3), "llm_calls": pa.table({"ts": [1.0]})}, 0, 100)
        assert store.counts()["spans"] == 3 and store.counts()["llm_calls"] == 1
    finally:
        store.close()


def test_the_reserve_refuses_a_spans_load_and_leaves_nothing(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path, min_free_bytes=1 << 60)
    try:
        with pytest.raises(StoreUnavailable, match="reserve"):
            store.load_log(RAW, {"spans": spans(3)}, 0, 100)
        assert data_files(store) == []
        assert not [p for p in store.span_files.directory.iterdir() if p.name.endswith(".tmp")]
    finally:
        store.close()


def test_merges_copy_files_into_one_with_the_same_rows(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    store.span_files.merge_files = 4
    try:
        for i in range(4):
            store.load_log(RAW, {"spans": spans(10, start=1_000_000.0 + 100 * i)}, 0, 100 * (i + 1))
        before = store.query("spans", columns=["ts", "trace_id", "name", "resource_attrs"])
        assert len(data_files(store)) == 4
        store.checkpoint_loads(RAW)  # the loader's housekeeping merges what is due
        (merged,) = data_files(store)
        assert (merged.level, merged.rows) == (1, 40)
        assert (merged.min_ts, merged.max_ts) == (1_000_000, 1_000_309)
        assert store.query("spans", columns=["ts", "trace_id", "name", "resource_attrs"]) == before
        # column chunks copied, not re-encoded: one row group per input file
        assert pq.ParquetFile(store.span_files.directory / merged.name).num_row_groups == 4
        assert store.log_position(RAW) == (0, 400)
    finally:
        store.close()
    # a merged file is committed data: the next open keeps it
    store = DuckDBStore(tmp_path)
    try:
        assert store.counts()["spans"] == 40
    finally:
        store.close()


def test_an_hour_that_has_ended_becomes_one_file(tmp_path: Path) -> None:
    now = [7200.0 * 10]
    files = SpanFiles(
        tmp_path / "spans", SPAN_FILE_SCHEMA, remove_lock=threading.Lock(), clock=lambda: now[0]
    )
    for i in range(3):
        files.write(spans(5, start=now[0] + i))
    assert files.merge() == 0, "fewer than merge_files in the current hour"
    now[0] += 3600
    files.write(spans(2, start=now[0]))
    assert files.merge() == 1
    levels = sorted(
        (f.level, f.rows) for p in (tmp_path / "spans").iterdir() if (f := SpanFile.parse(p.name)) and f.rows
    )
    assert levels == [(0, 2), (1, 15)]


def test_a_merge_a_crash_interrupted_is_finished_or_undone_at_open(tmp_path: Path) -> None:
    directory = tmp_path / "spans"
    lock = threading.Lock()
    files = SpanFiles(directory, SPAN_FILE_SCHEMA, remove_lock=lock)
    a, b = files.write(spans(2)), files.write(spans(3, start=2_000_000.0))
    assert a is not None and b is not None
    done = SpanFile(90, 1, 5, a.min_ts, b.max_ts, b.arrived, "-", -1, -1)
    undone = SpanFile(91, 1, 5, a.min_ts, b.max_ts, b.arrived, "-", -1, -1)
    # a merge whose output was renamed in before the crash: its inputs are removed
    (directory / done.name).write_bytes((directory / a.name).read_bytes())
    (directory / f"merge-{done.n:012d}.json").write_text(
        json.dumps({"output": done.name, "inputs": [a.name]})
    )
    # a merge that never got its output in: its temporary file goes, its inputs stay
    (directory / f"{undone.name}.tmp").write_bytes(b"partial")
    (directory / f"merge-{undone.n:012d}.json").write_text(
        json.dumps({"output": undone.name, "inputs": [b.name]})
    )
    SpanFiles(directory, SPAN_FILE_SCHEMA, remove_lock=lock)
    names = {p.name for p in directory.iterdir()}
    assert done.name in names and a.name not in names and b.name in names
    assert not [n for n in names if n.endswith((".tmp", ".json"))]


def test_retention_removes_whole_files_by_their_newest_span_or_their_arrival(tmp_path: Path) -> None:
    now = [1_000_000.0]
    files = SpanFiles(
        tmp_path / "spans", SPAN_FILE_SCHEMA, remove_lock=threading.Lock(), clock=lambda: now[0]
    )
    huge = files.write(spans(1, start=1e300))  # a name stays short whatever the stamp
    assert huge is not None and huge.max_ts == 10**13 and len(huge.name) < 100
    files.remove([huge])
    old = files.write(spans(3, start=1000.0))  # all older than the cutoff below
    straddling = files.write(spans(3, start=4999.0))  # 4999, 5000, 5001
    future = files.write(spans(2, start=9e12))  # stamped far in the future, arrived now
    assert old is not None and straddling is not None and future is not None
    assert files.expire(5000.0) == 3
    assert {f.n for f in files._snapshot() if f.rows} == {straddling.n, future.n}
    # later, after the data's arrival is past the cutoff too, the future one goes as well
    now[0] += 10**7
    assert files.expire(now[0] - 1) == 5
    assert files.rows() == 0


def test_an_older_stores_spans_table_becomes_one_file_once(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    store.close()
    # Made as an older store had it: a spans table with rows, no span files.
    con = duckdb.connect(str(tmp_path / "mlvigil.duckdb"))
    con.execute("DROP VIEW spans")
    con.execute(
        "CREATE TABLE spans (ts DOUBLE, end_ts DOUBLE, trace_id VARCHAR, span_id VARCHAR,"
        " parent_span_id VARCHAR, name VARCHAR, kind INTEGER, status_code INTEGER, service VARCHAR,"
        " record_kind VARCHAR, resource_attrs VARCHAR, span_proto BLOB)"
    )
    con.execute("INSERT INTO spans (ts, trace_id, name) SELECT i, 't' || i, 'old' FROM range(1000) t(i)")
    con.close()

    store = DuckDBStore(tmp_path)
    try:
        assert store.counts()["spans"] == 1000
        assert sorted(store.query("spans", columns=["ts"])["ts"]) == [float(i) for i in range(1000)]
        (f,) = data_files(store)
        assert f.n == MIGRATED_N and f.rows == 1000
    finally:
        store.close()

    # A crash after the migrated file's rename and before the table's drop: the next open
    # drops the table and copies nothing twice.
    con = duckdb.connect(str(tmp_path / "mlvigil.duckdb"))
    con.execute("DROP VIEW spans")
    con.execute("CREATE TABLE spans AS SELECT * FROM range(5) t(ts)")
    con.close()
    store = DuckDBStore(tmp_path)
    try:
        assert store.counts()["spans"] == 1000
        assert store._read(lambda cur: cur.execute("SELECT count(*) FROM spans").fetchone()) == (1000,)
    finally:
        store.close()


def test_readers_never_see_a_merge_half_done(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    store.span_files.merge_files = 3
    stop, enough = threading.Event(), threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                (n,) = store._read(lambda cur: cur.execute("SELECT count(*) FROM spans").fetchone())
                seen.append(int(n))
            except BaseException as exc:  # any error is the test's failure
                errors.append(exc)
                enough.set()
                return
            if len(seen) >= 50:
                enough.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        written = []
        for i in range(30):
            store.load_log(RAW, {"spans": spans(7, start=1_000_000.0 + 10 * i)}, 0, i + 1)
            written.append(7 * (i + 1))
            store.checkpoint_loads(RAW)
        enough.wait(30)  # the reader's progress (or its error)
    finally:
        stop.set()
        reader.join(30)
    try:
        assert not errors, errors[0]
        assert seen and all(n in {0, *written} for n in seen), "a count that no moment had"
        assert seen == sorted(seen), "rows went and came back"
        assert len(data_files(store)) < 30, "merged"
        assert store.counts()["spans"] == 210
    finally:
        store.close()


def test_the_view_follows_a_moved_data_dir(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "a")
    store.load_log(RAW, {"spans": spans(4)}, 0, 100)
    store.close()
    (tmp_path / "a").rename(tmp_path / "b")
    store = DuckDBStore(tmp_path / "b")
    try:
        assert store.query("spans", columns=["ts"])["ts"] == [1_000_000.0 + i for i in range(4)]
    finally:
        store.close()


def test_concat_parquet_says_which_input_failed_and_leaves_no_output(tmp_path: Path) -> None:
    from mlvigil_native import concat_parquet

    good = tmp_path / "good.parquet"
    pq.write_table(spans(3), good)
    with pytest.raises(FileNotFoundError):
        concat_parquet([str(good), str(tmp_path / "missing.parquet")], str(tmp_path / "out1.parquet"))
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ValueError):
        concat_parquet([str(good), str(tmp_path / "text.parquet")], str(tmp_path / "out2.parquet"))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"ts": [1.0]}), other)
    with pytest.raises(ValueError, match="another schema"):
        concat_parquet([str(good), str(other)], str(tmp_path / "out3.parquet"))
    assert not list(tmp_path.glob("out*")), "a failed concatenation leaves no file"
    assert concat_parquet([str(good), str(good)], str(tmp_path / "out4.parquet")) == 6
    assert pq.read_table(tmp_path / "out4.parquet").num_rows == 6
