"""Retention deletes in small transactions, so ingest appends keep being acknowledged while
it runs (one DELETE of every expired row held the write path for its whole duration)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

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
