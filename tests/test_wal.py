"""The write-ahead log (collector/wal.py): group commit, checksums, torn tails, the bound,
and exactly-once loading into DuckDB, also across a SIGKILL of the writing process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from collector.loader import DuckDBLoader, load_once
from collector.wal import (
    HEADER,
    LogCorrupt,
    LogFull,
    Position,
    WriteAheadLog,
    decode,
    encode_parts,
    payload_of,
    read,
    segments,
)
from mlvigil.core.store import StoreUnavailable
from mlvigil.core.store.duckdb import DuckDBStore

ROOT = Path(__file__).parents[1]


def _spans(*ids: int) -> dict[str, pa.Table]:
    return {
        "spans": pa.table(
            {
                "ts": [float(i) for i in ids],
                "service": ["svc"] * len(ids),
                "trace_id": [f"{i:032x}" for i in ids],
            }
        )
    }


def _ids(store: DuckDBStore) -> list[int]:
    return sorted(int(ts) for ts in store.query("spans", columns=["ts"])["ts"])


def test_appends_are_durable_in_groups_and_read_back_in_order(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, segment_bytes=2048)
    futures = [wal.append(_spans(i)) for i in range(50)]
    positions = [f.result(timeout=10) for f in futures]
    wal.close()
    assert positions == sorted(positions) and len(set(positions)) == 50
    assert wal.syncs < 50, "group commit: fewer fdatasyncs than appends"
    assert len(segments(tmp_path)) > 1, "segments roll at segment_bytes"
    got = [int(t["spans"]["ts"][0].as_py()) for t in (r.tables for r in read(tmp_path))]
    assert got == list(range(50))


def test_a_torn_tail_is_cut_and_never_replayed(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(3):
        wal.append(_spans(i)).result(timeout=10)
    wal.close()
    seg = tmp_path / "seg-000000000000.wal"
    whole = seg.stat().st_size
    with seg.open("ab") as f:  # a crash in the middle of the fourth record
        f.write(HEADER.pack(b"MVW1", 1000, 0, 0) + b"x" * 10)
    assert [r.end.offset for r in read(tmp_path)][-1] == whole
    wal = WriteAheadLog(tmp_path)
    assert seg.stat().st_size == whole, "reopening truncates the cut record"
    wal.append(_spans(3)).result(timeout=10)
    wal.close()
    assert [int(r.tables["spans"]["ts"][0].as_py()) for r in read(tmp_path)] == [0, 1, 2, 3]


def test_a_corrupt_record_inside_the_log_is_an_error(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path)
    for i in range(3):
        wal.append(_spans(i)).result(timeout=10)
    wal.close()
    seg = tmp_path / "seg-000000000000.wal"
    data = bytearray(seg.read_bytes())
    data[HEADER.size + 5] ^= 0xFF  # inside the first record's payload
    seg.write_bytes(bytes(data))
    with pytest.raises(LogCorrupt):
        list(read(tmp_path))


def test_the_log_is_bounded_until_loaded(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, max_bytes=8192)
    with pytest.raises(LogFull, match="not yet loaded") as full:
        for i in range(1000):
            wal.append(_spans(i)).result(timeout=10)
    accepted = i
    # Answered by the receivers as a full store is: 503 / UNAVAILABLE with Retry-After.
    assert isinstance(full.value, StoreUnavailable) and full.value.retry_after > 0
    loader = DuckDBLoader(store)
    while load_once(wal, loader)[0]:
        pass
    assert wal.unloaded_bytes() <= 4096 + 2048
    wal.append(_spans(10_000)).result(timeout=10)  # accepted again
    while load_once(wal, loader)[0]:
        pass
    assert _ids(store) == [*range(accepted), 10_000]
    wal.close()
    store.close()


def test_loading_is_exactly_once_across_a_lost_loader(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=1024)
    for i in range(40):
        wal.append(_spans(i))
    wal.append(_spans(40)).result(timeout=10)
    n, lag = load_once(wal, DuckDBLoader(store), max_records=15)
    assert n == 15 and 0 <= lag < 60
    # A new loader (a restart) continues from the stored position, not from the start.
    while load_once(wal, DuckDBLoader(store))[0]:
        pass
    assert _ids(store) == list(range(41))
    wal.close()
    store.close()


def test_the_loader_remembers_its_position_and_asks_the_store_again_after_a_failed_load(
    tmp_path: Path,
) -> None:
    """The DuckDB loader reads a log's position once and then keeps it as it stores it; a
    load that fails (rolled back) must not move it: the next load starts where the store is."""
    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal")
    for i in range(3):
        wal.append(_spans(i))
    wal.append(_spans(3)).result(timeout=10)
    loader = DuckDBLoader(store)
    assert load_once(wal, loader, max_records=2)[0] == 2
    assert loader.log_position("ingest") == Position(*store.log_position("ingest") or (-1, -1))
    stored = loader.log_position("ingest")
    with pytest.raises(Exception, match="unknown record table"):
        loader.load("ingest", {"no_such_table": pa.table({"x": [1]})}, Position(99, 0))
    assert loader.log_position("ingest") == stored, "a failed load leaves the stored position"
    while load_once(wal, loader)[0]:
        pass
    assert _ids(store) == [0, 1, 2, 3]
    wal.close()
    store.close()


def test_sigkill_of_the_writer_loses_nothing_acknowledged_and_duplicates_nothing(tmp_path: Path) -> None:
    log_dir = tmp_path / "wal"
    acked: list[int] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_no in range(3):
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "producers" / "wal_writer.py"),
                str(log_dir),
                str(round_no * 10**6),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = 0
        while seen < 200 + 150 * round_no and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(int(line))
            seen += 1
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        acked += [int(x) for x in rest.split()]
        assert seen >= 200, "the writer acknowledged appends before it was killed"
    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(log_dir)  # reopening after the kills cuts any torn tail
    while load_once(wal, DuckDBLoader(store))[0]:
        pass
    stored = _ids(store)
    assert len(stored) == len(set(stored)), "no record loaded twice"
    assert set(acked) <= set(stored), "every acknowledged record is stored"
    wal.close()
    store.close()


CONTENT = ["one two three four", "alpha beta gamma", "secret prompt", "the answer is", "pong", "hi there"]


@pytest.mark.parametrize("keep", [False, True])
def test_prompt_and_completion_text_reach_disk_only_when_kept(tmp_path: Path, keep: bool) -> None:
    """The native path into the log: with keep_llm_content false, none of the prompts and
    completions the real producers sent is in any byte written (raw spans are not blobs)."""
    native = pytest.importorskip("mlvigil_native")
    fixtures = sorted((ROOT / "tests" / "fixtures" / "otlp" / "traces").glob("*.binpb"))
    sent = b"".join(p.read_bytes() for p in fixtures)
    assert all(text.encode() in sent for text in CONTENT), "the producers did send the text"
    wal = WriteAheadLog(tmp_path)
    for path in fixtures:
        _, _, _, (data, crc) = native.normalise_traces(path.read_bytes(), keep, log_record=True)
        if data:
            wal.append(payload_of(data, crc)).result(timeout=10)
    wal.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    found = [text for text in CONTENT if text.encode() in on_disk]
    assert found == (CONTENT if keep else []), found


def test_the_loader_thread_drains_the_log_in_bounded_groups_and_exports_its_lag(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from collector.loader import LoaderThread

    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096)
    for i in range(30):
        wal.append(_spans(i))
    wal.append(_spans(30)).result(timeout=10)
    registry = CollectorRegistry()
    # Nothing loads yet: the lag and the unloaded bytes show it.
    assert wal.unloaded_records() == 31 and wal.lag_seconds() > 0
    loader = LoaderThread(wal, DuckDBLoader(store), max_records=4, registry=registry)
    try:
        assert loader.drain(timeout=30), "the loader thread did not catch up"
        assert _ids(store) == list(range(31))
        assert all(n <= 4 for n, _ in loader.groups) and sum(n for n, _ in loader.groups) == 31
        assert registry.get_sample_value("mlvigil_wal_loader_lag_seconds") == 0
        assert registry.get_sample_value("mlvigil_wal_unloaded_bytes") == 0
        assert registry.get_sample_value("mlvigil_wal_loaded_records_total") == 31
        # Appends after it caught up are loaded too (woken by the group commit).
        wal.append(_spans(31)).result(timeout=10)
        assert loader.drain(timeout=30)
        assert _ids(store) == list(range(32))
    finally:
        loader.stop()
        wal.close()
        store.close()


def test_the_lag_after_a_restart_counts_from_the_oldest_record_found_in_the_log(tmp_path: Path) -> None:
    """A replay is lag: the records a restart finds unloaded keep their append times (the
    lag is not 0 until this process appends), and those loaded before it stop counting."""
    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096)
    for i in range(20):
        wal.append(_spans(i)).result(timeout=10)
    load_once(wal, DuckDBLoader(store), max_records=5)  # 5 loaded before the "crash"
    wal.close()
    appended = [r.appended_ns for r in read(tmp_path / "wal")]
    reopened = WriteAheadLog(tmp_path / "wal", segment_bytes=4096)
    try:
        assert reopened.unloaded_records() == 20  # until a load passes the 5 already stored
        now = time.time_ns()
        assert reopened.lag_seconds() >= (now - appended[0]) / 1e9 > 0
        load_once(reopened, DuckDBLoader(store), max_records=5)  # loads 5..9
        assert reopened.unloaded_records() == 10
        now = time.time_ns()
        assert reopened.lag_seconds() >= (now - appended[10]) / 1e9 > 0
        while load_once(reopened, DuckDBLoader(store), max_records=5)[0]:
            pass
        assert reopened.unloaded_records() == 0 and reopened.lag_seconds() == 0.0
        assert _ids(store) == list(range(20))
    finally:
        reopened.close()


def _calls_and_spans(*ids: int) -> dict[str, pa.Table]:
    calls = pa.table(
        {"ts": [float(i) for i in ids], "service": ["svc"] * len(ids), "trace_id": [f"{i:032x}" for i in ids]}
    )
    return {"llm_calls": calls, **_spans(*ids)}


def _call_ids(store: DuckDBStore) -> list[int]:
    return sorted(int(ts) for ts in store.query("llm_calls", columns=["ts"])["ts"])


def test_raw_spans_load_in_their_own_pass_exactly_once_and_hold_the_log_until_then(tmp_path: Path) -> None:
    """The service's loader loads every table but ``spans`` in its hot pass and the raw spans
    in a second one, each with its own position: a segment stays until both are past it,
    and a crash between the passes loads neither twice."""
    from collector.loader import LoaderThread
    from collector.wal import HOT, PASSES, RAW_SPANS

    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, consumers=tuple(PASSES))
    for i in range(20):
        wal.append(_calls_and_spans(i)).result(timeout=10)
    segs = segments(tmp_path / "wal")
    assert len(segs) > 2
    while load_once(wal, DuckDBLoader(store), HOT, wanted=PASSES[HOT])[0]:
        pass
    assert _call_ids(store) == list(range(20)) and _ids(store) == []
    assert segments(tmp_path / "wal") == segs, "the raw spans pass still needs every segment"
    assert wal.lag_seconds() == 0 and wal.lag_seconds(RAW_SPANS) > 0
    assert wal.unloaded_records() == 20 and not wal.all_loaded() and wal.all_loaded([HOT])
    load_once(wal, DuckDBLoader(store), RAW_SPANS, max_records=7, wanted=PASSES[RAW_SPANS])
    assert _ids(store) == list(range(7))
    wal.close()  # a crash between the passes: each resumes at its own stored position

    reopened = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, consumers=tuple(PASSES))
    reopened.append(_calls_and_spans(20)).result(timeout=10)
    loader = LoaderThread(reopened, DuckDBLoader(store), max_records=4)
    try:
        assert loader.drain(timeout=30), "the loader thread did not catch up"
        assert _call_ids(store) == list(range(21)) and _ids(store) == list(range(21))
        assert len(segments(tmp_path / "wal")) == 1, "segments both passes are past are deleted"
        assert reopened.pending_bytes() == 0 and reopened.all_loaded()
    finally:
        loader.stop()
        reopened.close()
        store.close()


def test_a_store_loaded_in_one_pass_continues_with_the_raw_spans_pass_without_duplicates(
    tmp_path: Path,
) -> None:
    """A store loaded before the passes were split (one pass, every table, position
    ``ingest``): the raw spans pass starts where that pass stopped."""
    from prometheus_client import CollectorRegistry

    from collector.loader import LoaderThread
    from collector.wal import PASSES, RAW_SPANS

    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", segment_bytes=4096)
    for i in range(12):
        wal.append(_calls_and_spans(i)).result(timeout=10)
    load_once(wal, DuckDBLoader(store), max_records=5)  # every table of 0..4
    wal.close()
    assert store.log_position(RAW_SPANS) is None

    reopened = WriteAheadLog(tmp_path / "wal", segment_bytes=4096, consumers=tuple(PASSES))
    registry = CollectorRegistry()
    loader = LoaderThread(reopened, DuckDBLoader(store), max_records=4, registry=registry)
    try:
        assert loader.drain(timeout=30), "the loader thread did not catch up"
        assert _call_ids(store) == list(range(12)) and _ids(store) == list(range(12))
        lag = registry.get_sample_value("mlvigil_wal_loader_pass_lag_seconds", {"pass": RAW_SPANS})
        assert lag == 0
    finally:
        loader.stop()
        reopened.close()
        store.close()


def test_the_store_checkpoints_between_loads_so_its_own_wal_and_memory_stay_bounded(tmp_path: Path) -> None:
    """Each load reads its position first; a read left open used to keep a transaction open
    and every CHECKPOINT refused, so DuckDB's WAL and in-memory tables grew without bound."""
    store = DuckDBStore(tmp_path / "db", checkpoint_bytes=1)
    wal = WriteAheadLog(tmp_path / "wal")
    try:
        for i in range(3):
            wal.append(_spans(*range(i * 100, i * 100 + 100))).result(timeout=10)
            assert load_once(wal, DuckDBLoader(store))[0] == 1
            DuckDBLoader(store).maintain("ingest")  # what the loader thread's last pass calls
            duckdb_wal = tmp_path / "db" / "mlvigil.duckdb.wal"
            assert not duckdb_wal.exists() or duckdb_wal.stat().st_size == 0, "the load was not checkpointed"
        assert _ids(store) == list(range(300))
    finally:
        wal.close()
        store.close()


FIXTURES = ROOT / "tests" / "fixtures" / "otlp"


def _native_records() -> list[tuple[str, bytes]]:
    """(signal, request bytes) of every recorded producer request."""
    return [
        (signal, path.read_bytes())
        for signal in ("traces", "metrics", "logs")
        for path in sorted((FIXTURES / signal).glob("*.binpb"))
    ]


def _normalise(native: Any, signal: str, body: bytes | list[bytes], log_record: bool) -> Any:
    """The normaliser's tables of ``body`` (with ``log_record``: the log payload, its CRC)."""
    if signal == "traces":
        return native.normalise_traces(body, True, log_record=log_record)[3]
    fn = native.normalise_metrics if signal == "metrics" else native.normalise_logs
    return fn(body, log_record=log_record)[3]


def test_native_log_records_read_back_as_the_tables_the_normaliser_made(tmp_path: Path) -> None:
    """The payload made in Rust (IPC + CRC, native/wal-record) is the log's format: its CRC is
    zlib's, and ``read`` gives back, table for table, what the normaliser hands Python."""
    native = pytest.importorskip("mlvigil_native")
    requests = _native_records()
    assert len(requests) > 10
    wal = WriteAheadLog(tmp_path)
    expected = []
    for kind, body in requests:
        data, crc = _normalise(native, kind, body, True)
        tables = {n: t for n, t in _normalise(native, kind, body, False).items() if t.num_rows}
        assert crc == zlib.crc32(data)
        assert bool(data) == bool(tables)
        if data:
            wal.append(payload_of(data, crc)).result(timeout=10)
            expected.append(tables)
    wal.close()
    got = [r.tables for r in read(tmp_path)]
    assert len(got) == len(expected)
    for record, tables in zip(got, expected, strict=True):
        assert sorted(record) == sorted(tables)
        for name, batch in tables.items():
            want = pa.Table.from_batches([batch])
            # repr: NaN (a training step's grad_norm) equal to itself
            assert record[name].schema.equals(want.schema), name
            assert repr(record[name].to_pylist()) == repr(want.to_pylist()), name


def test_a_native_record_failing_its_checksum_is_refused_as_corrupt(tmp_path: Path) -> None:
    native = pytest.importorskip("mlvigil_native")
    body = (FIXTURES / "traces").glob("*.binpb").__next__().read_bytes()
    data, crc = native.normalise_traces(body, log_record=True)[3]
    wal = WriteAheadLog(tmp_path)
    for _ in range(3):
        wal.append(payload_of(data, crc)).result(timeout=10)
    wal.close()
    assert len(list(read(tmp_path))) == 3
    seg = tmp_path / "seg-000000000000.wal"
    damaged = bytearray(seg.read_bytes())
    damaged[HEADER.size + len(data) // 2] ^= 0x01  # one bit inside the first record's IPC
    seg.write_bytes(bytes(damaged))
    with pytest.raises(LogCorrupt, match="fails its checksum"):
        list(read(tmp_path))


def test_records_encoded_by_pyarrow_and_natively_replay_from_one_log(tmp_path: Path) -> None:
    """A log written by the previous version (payloads encoded with pyarrow in Python) and
    continued by this one (payloads from Rust) replays whole, in order, exactly once."""
    native = pytest.importorskip("mlvigil_native")
    bodies = [p.read_bytes() for p in sorted((FIXTURES / "traces").glob("*.binpb"))][:6]
    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", consumers=("ingest",))
    old = [native.normalise_traces(b)[3] for b in bodies[:3]]
    for tables in old:  # what the previous version wrote
        wal.append(encode_parts({n: t for n, t in tables.items() if t.num_rows})).result(timeout=10)
    wal.close()
    wal = WriteAheadLog(tmp_path / "wal", consumers=("ingest",))  # upgraded and restarted
    for body in bodies[3:]:
        wal.append(payload_of(*native.normalise_traces(body, log_record=True)[3])).result(timeout=10)
    records = list(read(tmp_path / "wal"))
    assert len(records) == 6
    while load_once(wal, DuckDBLoader(store))[0]:
        pass
    span_ids = sorted(store.query("spans", columns=["span_id"])["span_id"])
    want = sorted(
        sid
        for b in bodies
        for sid in (native.normalise_traces(b)[3].get("spans") or pa.table({"span_id": []}))[
            "span_id"
        ].to_pylist()
    )
    assert span_ids == want and len(want) > 0
    wal.close()
    store.close()


def test_the_native_crc32_is_zlibs() -> None:
    native = pytest.importorskip("mlvigil_native")
    for size in (0, 1, 63, 64 * 1024 - 1, 64 * 1024, 1 << 20):
        data = os.urandom(size)
        assert native.crc32(data) == zlib.crc32(data), size
        assert native.crc32(memoryview(data)) == zlib.crc32(data), size
    assert decode(b"") == {}


def test_a_body_in_chunks_is_normalised_as_the_joined_bytes() -> None:
    """The HTTP receiver hands the chunks a body arrived in to the native normaliser, which
    joins them without the GIL: same counts, same log payload, same refusals."""
    native = pytest.importorskip("mlvigil_native")
    for kind, body in _native_records()[::4]:
        whole = _normalise(native, kind, body, True)
        for size in (1, 7, 4096, len(body) + 1):
            chunks = [body[i : i + size] for i in range(0, len(body), size)]
            assert _normalise(native, kind, chunks, True) == whole, (kind, size)
    assert native.normalise_traces([], log_record=True)[:2] == (0, 0)
    body = next(iter(sorted((FIXTURES / "traces").glob("*.binpb")))).read_bytes()
    with pytest.raises(native.InvalidRequest):
        native.normalise_traces([body[:10], b"\xff" * 3], log_record=True)
    with pytest.raises(native.TooLarge):
        native.normalise_traces([body[:100], body[100:]], max_items=0, log_record=True)


class _GatedRawPass:
    """The real DuckDB loader, with each raw spans load held at a gate until the test opens
    it: a raw spans pass as slow as the test wants, without a sleep."""

    def __init__(self, store: DuckDBStore) -> None:
        import threading

        self.inner = DuckDBLoader(store)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def log_position(self, log: str) -> Position | None:
        return self.inner.log_position(log)

    def load(self, log: str, tables: Mapping[str, pa.Table], upto: Position) -> None:
        if "spans" in tables:
            self.entered.set()
            assert self.gate.wait(60), "the test never opened the gate"
        self.inner.load(log, tables, upto)

    def maintain(self, log: str) -> None:
        self.inner.maintain(log)


def test_a_slow_raw_spans_pass_does_not_hold_back_the_hot_pass(tmp_path: Path) -> None:
    """Each pass loads on its own thread: while a raw spans group is stuck in the store, the
    hot pass keeps loading what is appended (its position and rows move), and once the raw
    pass moves again both end with every record exactly once."""
    from collector.loader import LoaderThread
    from collector.wal import HOT, PASSES, RAW_SPANS

    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", consumers=tuple(PASSES))
    target = _GatedRawPass(store)
    loader = LoaderThread(wal, target, max_records=4)
    try:
        wal.append(_calls_and_spans(0)).result(timeout=10)
        assert target.entered.wait(30), "the raw spans pass never started a load"
        # The raw spans pass is inside a load now; the hot pass must not wait for it.
        last = None
        for i in range(1, 10):
            last = wal.append(_calls_and_spans(i)).result(timeout=10)
        assert last is not None
        assert wal.wait_loaded(30, [HOT]), "the hot pass waited for the raw spans pass"
        assert wal.position(HOT) == last
        assert _call_ids(store) == list(range(10)) and _ids(store) == []
        assert store.log_position(RAW_SPANS) != (last.segment, last.offset)
        target.gate.set()
        assert loader.drain(timeout=30), "the loader did not catch up once the gate opened"
        assert _call_ids(store) == list(range(10)) and _ids(store) == list(range(10))
        assert store.log_position(RAW_SPANS) == store.log_position(HOT) == (last.segment, last.offset)
    finally:
        target.gate.set()
        loader.stop()
        wal.close()
        store.close()


def test_the_raw_spans_pass_lingers_for_a_group_unless_a_reader_waits(tmp_path: Path) -> None:
    """The raw spans pass waits for ``secondary_linger_records`` requests (one span file, one
    load's fixed cost, for the group), at most ``secondary_linger_seconds`` after the oldest;
    a reader waiting for the raw spans ends the wait at once. The hot pass never lingers."""
    from collector.loader import LoaderThread
    from collector.wal import HOT, PASSES, RAW_SPANS

    store = DuckDBStore(tmp_path / "db")
    wal = WriteAheadLog(tmp_path / "wal", consumers=tuple(PASSES))
    loader = LoaderThread(wal, DuckDBLoader(store), secondary_linger_records=4, secondary_linger_seconds=60.0)
    try:
        assert loader.drain(timeout=30)
        for i in range(3):
            wal.append(_calls_and_spans(i)).result(timeout=10)
        assert wal.wait_loaded(30, [HOT]) and _call_ids(store) == [0, 1, 2]
        assert wal.unloaded_records(RAW_SPANS) == 3, "the raw pass waits for a fourth"
        wal.append(_calls_and_spans(3)).result(timeout=10)
        assert wal.wait_loaded(30) and _ids(store) == [0, 1, 2, 3]
        assert store.span_files.count() == 1, "the four requests' raw spans in one load's file"
        # one request and a reader of raw spans: loaded long before the 60 s linger
        wal.append(_calls_and_spans(4)).result(timeout=10)
        started = time.monotonic()
        assert wal.wait_loaded(30) and _ids(store) == [0, 1, 2, 3, 4]
        assert time.monotonic() - started < 30
    finally:
        loader.stop()
        wal.close()
        store.close()


def test_checkpoints_wait_for_the_hot_pass_only_once_duckdbs_wal_is_past_four_thresholds(
    tmp_path: Path,
) -> None:
    """The raw spans pass checkpoints DuckDB; DuckDB refuses while another load's transaction
    is open. Under its force bound the hot pass is never waited for (the checkpoint is left
    for later); past it, the checkpoint waits for the hot load in progress, then runs, so
    DuckDB's WAL (and what it holds in memory) stays bounded under constant loading."""
    import threading

    import duckdb

    from collector.wal import HOT, RAW_SPANS

    store = DuckDBStore(tmp_path / "db", checkpoint_bytes=64 * 1024)
    duckdb_wal = tmp_path / "db" / "mlvigil.duckdb.wal"
    calls = _calls_and_spans(*range(1000))["llm_calls"]
    in_load, release = threading.Event(), threading.Event()

    def slow_hot_load() -> None:
        def statements(con: duckdb.DuckDBPyConnection) -> None:
            # what a load does: DuckDB refuses a CHECKPOINT while an UPDATE is uncommitted
            con.execute("UPDATE log_positions SET byte_offset = byte_offset WHERE log = ?", [HOT])
            in_load.set()
            assert release.wait(60)

        store._channel_write(HOT, statements)

    try:
        store.load_log(HOT, {"llm_calls": calls}, 0, 1)
        assert duckdb_wal.stat().st_size > 64 * 1024
        hot = threading.Thread(target=slow_hot_load)
        hot.start()
        assert in_load.wait(30)
        # Over the threshold, under the force bound (4 x): refused, and no wait for the hot load.
        assert duckdb_wal.stat().st_size < 4 * 64 * 1024
        assert store.checkpoint_loads(RAW_SPANS) is False
        release.set()
        hot.join(30)
        # Past the force bound while a hot load is open: the checkpoint waits for it, then runs.
        store.load_log(HOT, {"llm_calls": pa.concat_tables([calls] * 4)}, 0, 2)
        assert duckdb_wal.stat().st_size > 4 * 64 * 1024
        in_load.clear()
        release.clear()
        hot = threading.Thread(target=slow_hot_load)
        hot.start()
        assert in_load.wait(30)
        done: list[bool] = []
        checkpoint = threading.Thread(target=lambda: done.append(store.checkpoint_loads(RAW_SPANS)))
        checkpoint.start()
        checkpoint.join(0.5)  # bounded: it must still be waiting for the hot load
        assert checkpoint.is_alive() and not done, "the forced checkpoint did not wait for the open load"
        release.set()
        checkpoint.join(30)
        hot.join(30)
        assert done == [True]
        assert not duckdb_wal.exists() or duckdb_wal.stat().st_size < 64 * 1024
        assert store.log_position(HOT) == (0, 2)
    finally:
        release.set()
        store.close()
