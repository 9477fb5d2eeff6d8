"""The store contract, run against both backends: embedded DuckDB and PostgreSQL (a real
server that tests/pg.py starts). Whatever a detector, the outbox or the API relies on is
asserted here once for every backend."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlvigil.core.findings import Finding, Severity, State
from mlvigil.core.records import RecordBatch
from mlvigil.core.store import Store, StoreError

DAY = 86400.0


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "duckdb":
        from mlvigil.core.store.duckdb import DuckDBStore

        s: Store = DuckDBStore(tmp_path / "data")
    else:
        from mlvigil.core.store.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("postgres_dsn"))
    yield s
    s.close()


def _steps(n: int, t0: float, run: str = "r1") -> RecordBatch:
    b = RecordBatch()
    for i in range(n):
        b.add(
            "training_steps", ts=t0 + i, service="trainer", run_id=run, step=i, rank=i % 2, loss=1.0 / (i + 1)
        )
    return b


def test_append_query_last_where_distinct(store: Store) -> None:
    now = time.time()
    store.append(_steps(10, now - 100, "a"))
    store.append(_steps(5, now - 50, "b"))
    got = store.query("training_steps", columns=["run_id", "step"], where={"run_id": "a"})
    assert got["step"] == list(range(10))
    last = store.query("training_steps", columns=["ts", "step"], where={"run_id": "a"}, last=3)
    assert last["step"] == [7, 8, 9]
    inlist = store.query("training_steps", columns=["run_id"], where={"run_id": ["a", "b"]}, since=now - 96)
    assert len(inlist["run_id"]) == 6 + 5
    assert store.query("training_steps", where={"run_id": []})["ts"] == []
    assert store.distinct("training_steps", ["run_id", "rank"]) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert store.distinct("training_steps", ["run_id"], since=now - 60) == [("b",)]
    assert store.counts()["training_steps"] == 15
    window = store.query("training_steps", columns=["step"], since=now - 100, until=now - 95)
    assert window["step"] == [0, 1, 2, 3, 4]


def test_nan_null_bytes_and_bools_round_trip(store: Store) -> None:
    now = time.time()
    b = RecordBatch()
    b.add("training_steps", ts=now, run_id="x", step=1, loss=float("nan"))
    b.add("training_steps", ts=now + 1, run_id="x", step=2, loss=None)
    b.add("spans", ts=now, end_ts=now + 1, trace_id="t", span_id="s", name="n", span_proto=b"\x00\x01\xff")
    b.add("metric_points", ts=now, name="m", value=1.5, monotonic=True, count=2**62)
    store.append(b)
    loss = store.query("training_steps", columns=["loss"])["loss"]
    assert math.isnan(loss[0]) and loss[1] is None
    assert store.query("spans", columns=["span_proto"])["span_proto"] == [b"\x00\x01\xff"]
    mp = store.query("metric_points", columns=["monotonic", "count"])
    assert mp == {"monotonic": [True], "count": [2**62]}


def test_group_commit_isolates_a_bad_batch(store: Store) -> None:
    now = time.time()
    good = _steps(3, now)
    bad = RecordBatch(columns={"no_such_table": {"ts": [now]}})
    results = store.append_many([good, bad, _steps(2, now + 10, "r2")])
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreError)
    assert store.counts()["training_steps"] == 5


def test_inference_halves_merge_into_one_row(store: Store) -> None:
    now = time.time()
    req = RecordBatch(
        inference_merges=[{"ts": now, "request_id": "q1", "source": "kserve", "features": "[1]"}]
    )
    resp = RecordBatch(
        inference_merges=[{"ts": now + 0.1, "request_id": "q1", "source": "kserve", "prediction": "1"}]
    )
    store.append(req)
    store.append(resp)
    rows = store.query("inferences", columns=["request_id", "features", "prediction"])
    assert rows == {"request_id": ["q1"], "features": ["[1]"], "prediction": ["1"]}


def test_retention_deletes_exactly_what_is_older(store: Store) -> None:
    now = time.time()
    # Three days of rows (each on its own day partition in PostgreSQL) plus today.
    for d in (3, 2, 1, 0):
        store.append(_steps(4, now - d * DAY - 10, f"d{d}"))
    cutoff = now - 1.5 * DAY
    deleted = store.apply_retention({"training_steps": cutoff})
    assert deleted == {"training_steps": 8}
    assert sorted(r for (r,) in store.distinct("training_steps", ["run_id"])) == ["d0", "d1"]
    assert store.apply_retention({"training_steps": cutoff}) == {"training_steps": 0}


def test_findings_upsert_and_filters(store: Store) -> None:
    now = time.time()
    a = Finding(
        "straggler", Severity.WARNING, {"run_id": "r1", "k8s.pod": "p-0"}, "slow rank", updated_at=now
    )
    b = Finding("data_drift", Severity.CRITICAL, {"model": "m"}, "drift", updated_at=now + 1)
    store.upsert_findings([a, b])
    assert [f.id for f in store.findings()] == [b.id, a.id]
    assert [f.id for f in store.findings(subject={"k8s.pod": "p-0"})] == [a.id]
    assert store.findings(kind="straggler", severity="critical") == []
    a.state, a.resolved_at, a.updated_at = State.RESOLVED, now + 2, now + 2
    store.upsert_findings([a])
    assert [f.id for f in store.findings(state="firing")] == [b.id]
    assert store.findings(state="resolved")[0].resolved_at == now + 2
    assert [f.id for f in store.findings(since=now + 1.5)] == [a.id]


def test_grid_matches_the_reference_and_findings_page(store: Store) -> None:
    batch = RecordBatch()
    for step in range(250):
        for rank in range(3):
            loss = math.nan if step == 7 else 3.0 - step / 100
            batch.add(
                "training_steps",
                ts=time.time() - 300 + step,
                run_id="r",
                step=step,
                rank=rank,
                step_time_s=1.0 + rank,
                loss=loss,
            )
    store.append(batch)
    args: dict[str, Any] = {
        "x": "step",
        "group": "rank",
        "values": ["step_time_s", "loss"],
        "where": {"run_id": "r"},
    }
    fast = store.grid("training_steps", bins=100, integer_x=True, **args)
    slow = Store.grid(store, "training_steps", bins=100, integer_x=True, **args)
    assert (fast.lo, fast.hi, fast.bins) == (slow.lo, slow.hi, slow.bins) == (0.0, 250.0, 100)
    assert fast.cells.keys() == slow.cells.keys() and len(fast.cells) == 300
    for key, (n, means) in fast.cells.items():
        assert n == slow.cells[key][0] and means == pytest.approx(slow.cells[key][1])
    assert store.grid("training_steps", bins=10, x="step", group="rank", values=["loss"]).bins == 10
    assert (
        store.grid("training_steps", bins=10, x="step", group="rank", values=[], where={"run_id": "x"}).cells
        == {}
    )
    now = time.time()
    found = [
        Finding("straggler", Severity.WARNING, {"rank": str(i)}, "s", updated_at=now + i) for i in range(5)
    ]
    store.upsert_findings(found)
    assert [f.id for f in store.findings(limit=2, offset=1)] == [found[3].id, found[2].id]
    got = store.finding(found[0].id)
    assert got is not None and got.subject == {"rank": "0"}
    assert store.finding("nope") is None


def test_documents_and_their_states(store: Store) -> None:
    store.put_docs(
        "outbox", {"m1": {"state": "pending", "n": 1}, "m2": {"state": "delivered", "v": math.inf}}
    )
    store.put_doc("outbox", "m3", {"state": "pending"})
    assert store.get_doc("outbox", "m1") == {"state": "pending", "n": 1}
    assert store.get_doc("outbox", "m2")["v"] == math.inf  # type: ignore[index]
    assert sorted(store.list_docs("outbox")) == ["m1", "m2", "m3"]
    assert sorted(store.list_docs("outbox", states=["pending"])) == ["m1", "m3"]
    store.put_doc("outbox", "m1", {"state": "delivered"})
    assert sorted(store.list_docs("outbox", states=["pending"])) == ["m3"]
    assert store.delete_doc("outbox", "m3") is True
    assert store.delete_doc("outbox", "m3") is False
    assert store.get_doc("other", "m1") is None
    # One id in two collections: each lookup finds its own collection's document.
    store.put_doc("other", "m1", {"state": "x", "big": "y" * 100_000})
    assert store.get_doc("other", "m1") == {"state": "x", "big": "y" * 100_000}
    assert store.get_doc("outbox", "m1") == {"state": "delivered"}


def test_large_documents_replaced_listed_and_deleted(store: Store) -> None:
    """Documents of megabytes (a drift monitor's stored reference profile) behave as small
    ones: the embedded store keeps them in files, which must not show."""
    big = {"state": "ready", "values": [i / 7 for i in range(40_000)]}
    bigger = {"state": "ready", "values": [i / 3 for i in range(50_000)]}
    store.put_docs("profiles", {"a": big, "b": {"state": "small"}})
    assert store.get_doc("profiles", "a") == big
    store.put_doc("profiles", "a", bigger)  # large replaced by large
    store.put_doc("profiles", "b", big)  # small replaced by large
    assert store.list_docs("profiles") == {"a": bigger, "b": big}
    assert store.list_docs("profiles", states=["ready"]) == {"a": bigger, "b": big}
    store.put_doc("profiles", "a", {"state": "small"})  # large replaced by small
    assert store.get_doc("profiles", "a") == {"state": "small"}
    assert store.delete_doc("profiles", "b") is True
    assert store.get_doc("profiles", "b") is None
    assert store.list_docs("profiles") == {"a": {"state": "small"}}


def test_unknown_table_and_bad_identifiers_are_refused(store: Store) -> None:
    with pytest.raises(StoreError):
        store.query("nope")
    with pytest.raises(StoreError):
        store.query("spans", where={'x"; drop table spans; --': 1})


# -- PostgreSQL only: partitions -----------------------------------------------------------


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[Any]:
    from mlvigil.core.store.postgres import PostgresStore

    s = PostgresStore(postgres_dsn)
    yield s
    s.close()


def _partitions(pg: Any, table: str) -> list[str]:
    con = pg.connect()
    try:
        return [name for _, name in pg._day_partitions(con, table)]
    finally:
        con.close()


def test_postgres_partitions_by_day_and_drops_whole_days(pg: Any) -> None:
    now = time.time()
    for d in (5, 4, 0):
        pg.append(_steps(3, now - d * DAY, f"d{d}"))
    assert len(_partitions(pg, "training_steps")) == 3
    assert pg.apply_retention({"training_steps": now - 2 * DAY}) == {"training_steps": 6}
    assert len(_partitions(pg, "training_steps")) == 1
    assert pg.counts()["training_steps"] == 3


def test_postgres_far_times_use_the_default_partition_and_move_out_later(pg: Any) -> None:
    from mlvigil.core.store.postgres import FUTURE_DAYS

    now = time.time()
    far = now + (FUTURE_DAYS + 3) * DAY
    pg.append(_steps(2, far, "future"))
    assert _partitions(pg, "training_steps") == []  # a skewed clock does not create partitions
    assert pg.counts()["training_steps"] == 2
    # Days later the same day is within the window: its partition takes the rows over.
    pg._now = lambda: far
    pg.append(_steps(1, far + 5, "future"))
    assert len(_partitions(pg, "training_steps")) == 1
    assert pg.query("training_steps", columns=["step"], where={"run_id": "future"})["step"] == [0, 1, 0]
    con = pg.connect()
    try:
        row = con.execute("SELECT count(*) FROM training_steps_default").fetchone()
    finally:
        con.close()
    assert row == (0,)


def test_postgres_text_with_nul_is_stored_not_refused(pg: Any) -> None:
    b = RecordBatch()
    b.add("logs", ts=time.time(), service="s", body="a\x00b")
    assert pg.append_many([b]) == [None]
    assert pg.query("logs", columns=["body"])["body"] == ["a\ufffdb"]


def test_postgres_down_is_unavailable_not_an_error(tmp_path: Path, pg_server: Any) -> None:
    from mlvigil.core.store import StoreUnavailable
    from mlvigil.core.store.postgres import PostgresStore
    from tests.pg import _free_port

    with pytest.raises(StoreUnavailable):
        PostgresStore(f"postgresql://postgres@127.0.0.1:{_free_port()}/x", connect_timeout=1)


def test_postgres_a_batch_naming_a_thousand_days_creates_only_the_retained_ones(postgres_dsn: str) -> None:
    from mlvigil.core.store.postgres import PostgresStore

    pg = PostgresStore(postgres_dsn, past_days=3)
    try:
        now = time.time()
        b = RecordBatch()
        for k in range(1000):
            b.add("logs", ts=now - k * DAY, service="s", body="x")
        assert pg.append_many([b]) == [None]
        assert len(_partitions(pg, "logs")) == 4  # today and the 3 days retention keeps
        assert pg.counts()["logs"] == 1000
        assert pg.apply_retention({"logs": now - 3.5 * DAY}) == {"logs": 996}
    finally:
        pg.close()
