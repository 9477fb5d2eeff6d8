"""Retention deletes in small transactions, so ingest appends keep being acknowledged while
it runs (one DELETE of every expired row held the write path for its whole duration)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore

OLD_ROWS = 400_000
BATCH_ROWS = 10_000


def _old_points(n: int, now: float) -> RecordBatch:
    start = now - 20 * 86400
    return RecordBatch(
        columns={
            "metric_points": {
                "ts": [start + i * 0.01 for i in range(n)],
                "host": ["node-0"] * n,
                "hw_id": [f"GPU-{i % 8}" for i in range(n)],
                "name": ["hw.gpu.utilization"] * n,
                "value": [0.5] * n,
                **dict.fromkeys(("service", "unit", "kind", "count", "monotonic", "attributes"), [None] * n),
            }
        }
    )


def _poll(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_retention_deletes_in_batches_while_appends_are_acknowledged(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path, min_free_bytes=0)
    store.retention_batch_rows = BATCH_ROWS
    now = time.time()
    try:
        store.append(_old_points(OLD_ROWS, now))
        # (acknowledged at, seconds the append took, old rows left then)
        acks: list[tuple[float, float, int]] = []
        done = threading.Event()

        def ingest() -> None:
            i = 0
            while not done.is_set():
                batch = RecordBatch()
                batch.add("metric_points", ts=time.time(), hw_id="GPU-new", name="fresh", value=float(i))
                t0 = time.monotonic()
                store.append(batch)
                t1 = time.monotonic()
                i += 1
                acks.append((t1, t1 - t0, store.counts()["metric_points"] - i))

        writer = threading.Thread(target=ingest, daemon=True)
        writer.start()
        _poll(lambda: len(acks) >= 3)
        began = time.monotonic()
        deleted = store.apply_retention({"metric_points": now - 7 * 86400})
        ended = time.monotonic()
        done.set()
        writer.join(timeout=30)
        assert not writer.is_alive()

        assert deleted == {"metric_points": OLD_ROWS}
        fresh = store.query("metric_points", columns=["value"], where={"name": "fresh"})["value"]
        assert fresh == [float(i) for i in range(len(acks))]  # every acknowledged append kept
        assert store.counts()["metric_points"] == len(acks)

        # Appends were acknowledged while the deletion was partway done (one DELETE of every
        # expired row goes from all of them to none at once)...
        partway = [took for _at, took, left in acks if 0 < left < OLD_ROWS]
        assert len(partway) >= 5, f"{len(partway)} appends acknowledged while retention was partway"
        assert len({left for *_, left in acks if 0 < left < OLD_ROWS}) >= 3
        # ...and none waited for more than a small part of it.
        during = [took for at, took, _left in acks if began < at < ended]
        assert max(during) < (ended - began) / 4, (max(during), ended - began)
        assert store.retention_batches >= OLD_ROWS // BATCH_ROWS
    finally:
        store.close()


class _Holds:
    """The store's write lock, noting what each hold did: ``holds[i]`` lists its deletes
    (``("delete", rows)``) and checkpoints (``("checkpoint", wal_bytes_before)``)."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.holds: list[list[tuple[str, int]]] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        taken = self._lock.acquire(blocking, timeout)
        if taken:
            self.holds.append([])
        return taken

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class _RecordingStore(DuckDBStore):
    def _note(self, step: tuple[str, int]) -> None:
        if isinstance(self._write_lock, _Holds):  # once the test has put it in place
            self._write_lock.holds[-1].append(step)

    def _count_written(self, sql: str, params: list[Any], *rest: Any) -> int:
        rows = super()._count_written(sql, params, *rest)
        self._note(("delete", rows))
        return rows

    def _checkpoint_locked(self, checkpoint_bytes: int | None = None) -> None:
        wal = Path(f"{self.path}.wal")
        before = wal.stat().st_size if wal.exists() else 0
        super()._checkpoint_locked(checkpoint_bytes)
        if before and (not wal.exists() or wal.stat().st_size < before):
            self._note(("checkpoint", before))


def test_each_retention_hold_of_the_write_lock_does_one_bounded_step(tmp_path: Path) -> None:
    """A hold deletes one batch or checkpoints a small WAL, never both and never a large WAL:
    what an ingest append may wait for stays bounded however many rows expire (a checkpoint of
    the whole pass's deletes, 16 MiB on 2.5M rows, held appends for 25-95 ms)."""
    bound = 256 * 1024
    store = _RecordingStore(tmp_path, min_free_bytes=0)
    store.retention_batch_rows = BATCH_ROWS // 2
    store.retention_checkpoint_bytes = bound
    now = time.time()
    try:
        store.append(_old_points(OLD_ROWS, now))
        store._con.execute("CHECKPOINT")  # the pass starts from an empty WAL
        holds = _Holds(store._write_lock)
        store._write_lock = holds  # type: ignore[assignment]

        deleted = store.apply_retention({"metric_points": now - 7 * 86400})

        assert deleted == {"metric_points": OLD_ROWS}
        steps = [hold for hold in holds.holds if hold]
        deletes = [rows for hold in steps for what, rows in hold if what == "delete"]
        checkpoints = [wal for hold in steps for what, wal in hold if what == "checkpoint"]
        assert sum(deletes) == OLD_ROWS and max(deletes) <= store.retention_batch_rows
        assert all(len(hold) == 1 for hold in steps), [hold for hold in steps if len(hold) > 1]
        # The WAL is checkpointed as it passes the bound (one batch's deletes over it at most),
        # not once at the end with every delete of the pass in it.
        assert len(checkpoints) >= 2, checkpoints
        assert max(checkpoints) < 2 * bound, checkpoints
    finally:
        store.close()
