"""Every columnar data monitor slides its window incrementally (issue 20): it reads only the
rows it does not hold yet, and what it keeps and reads must give exactly what a whole read
gives, also when a row arrives late (inside the kept window) or rows are deleted."""

from __future__ import annotations

import json

import numpy as np

from detectors.drift.config import MonitorConfig, MonitorDefaults
from detectors.drift.monitor import MonitorDetector
from detectors.drift.monitors import rows as rows_mod
from detectors.drift.monitors.rows import ColumnarDataRows
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore


def _append(store: DuckDBStore, ts: list[float], seed: int, shift: float = 0.0) -> None:
    rng = np.random.default_rng(seed)
    batch = RecordBatch()
    for t in ts:
        feats = {"x": float(rng.normal(shift)), "c": f"v{int(rng.integers(0, 4))}"}
        batch.add("inferences", ts=t, service="s", model="m", features=json.dumps(feats))
    store.append(batch)


def _detector() -> MonitorDetector:
    cfg = MonitorConfig.model_validate(
        {
            "name": "inc",
            "model": "m",
            "reference": {"start": 0.0, "end": 1000.0},
            "window": {"size": 400, "min_size": 50},
            "correction": "bonferroni",
        }
    )
    return MonitorDetector(cfg.resolved(MonitorDefaults()))


def _as_rows(window: dict[str, list]) -> list[tuple]:
    """A window as its rows, in order of time and then content: the store orders rows that
    share a timestamp arbitrarily, a window is the same rows whatever that order."""
    return sorted(zip(*window.values(), strict=True), key=repr)


def _window(det: MonitorDetector, store: DuckDBStore, now: float) -> dict[str, list]:
    det.evaluate(store, now)
    source = det.ctx.source
    assert isinstance(source, ColumnarDataRows)
    floor = det.windowed.windows._slide_floor
    assert floor is not None
    got = source.rows(store, since=floor[1], until=now, last=400)
    return {k: np.asarray(v).tolist() for k, v in got.items()}


def _whole(det: MonitorDetector, store: DuckDBStore, now: float) -> dict[str, list]:
    fresh = ColumnarDataRows(det.config, det.reference)
    got = fresh.rows(store, until=now, last=400)
    return {k: np.asarray(v).tolist() for k, v in got.items()}


def test_incremental_window_equals_a_whole_read(store: DuckDBStore, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _append(store, [i * 0.5 for i in range(2000)], seed=1)  # reference: ts 0..1000
    _append(store, [1000 + i * 0.5 for i in range(600)], seed=2, shift=0.5)  # window rows
    det = _detector()
    reads: list[tuple[float | None, float | None]] = []
    real = ColumnarDataRows.feature_rows

    def spy(self, store, *, since, until, last, discover):  # type: ignore[no-untyped-def]
        reads.append((since, until))
        return real(self, store, since=since, until=until, last=last, discover=discover)

    monkeypatch.setattr(ColumnarDataRows, "feature_rows", spy)
    now = 1300.0
    det.evaluate(store, now)
    for step in range(3):
        # New rows after the last evaluation: only they are read (the first at ``now``).
        _append(store, [now + i * 0.5 for i in range(20)], seed=10 + step)
        reads.clear()
        got = _window(det, store, now + 10.0)
        assert reads and reads[0][0] == now
        now += 10.0
        assert _as_rows(got) == _as_rows(_whole(det, store, now))
    # Rows sharing the last kept row's timestamp: read again with it, none kept twice.
    _append(store, [now - 0.5, now - 0.5], seed=96)
    now += 10.0
    got = _window(det, store, now)
    assert _as_rows(got) == _as_rows(_whole(det, store, now))
    # A row arriving late, inside the kept window: read from its time on.
    late = now - 100.25
    _append(store, [late], seed=99)
    _append(store, [now + 1.0], seed=98)
    now += 10.0
    reads.clear()
    got = _window(det, store, now)
    assert reads[0][0] == late
    assert late in got["ts"]
    assert _as_rows(got) == _as_rows(_whole(det, store, now))
    # Rows deleted inside the kept window: read from the first of them on.
    gone = (now - 150.0, now - 120.0)
    store._con.execute("DELETE FROM inferences WHERE ts > ? AND ts < ?", list(gone))
    _append(store, [now + 1.0], seed=97)
    now += 10.0
    reads.clear()
    got = _window(det, store, now)
    assert reads[0][0] is not None and reads[0][0] >= gone[0]
    assert _as_rows(got) == _as_rows(_whole(det, store, now))
    assert not any(gone[0] < t < gone[1] for t in got["ts"])


def test_kept_labels_share_one_object_per_label(store: DuckDBStore) -> None:
    _append(store, [i * 0.5 for i in range(2000)], seed=1)
    _append(store, [1000 + i * 0.5 for i in range(600)], seed=2)
    det = _detector()
    det.evaluate(store, 1300.0)
    kept = det.ctx.source._incremental  # type: ignore[attr-defined]
    assert kept is not None
    labels = kept[1][rows_mod.FEATURE_PREFIX + "c"]
    assert len({id(v) for v in labels.tolist()}) == len(set(labels.tolist())) <= 4
