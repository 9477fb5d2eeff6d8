"""Which rows form a monitor's current window.

``window.duration``: the rows of the last ``duration`` seconds (``tumbling``: aligned to
multiples of it). ``window.size``: the last ``size`` rows (``sliding``) or the latest
complete block of ``size`` rows after the previous one (``tumbling``; the first block
starts where a traffic reference ends, so the two never overlap).
"""

from __future__ import annotations

import math

from detectors.drift.config import MonitorConfig
from detectors.drift.monitors.rows import RowSource
from detectors.drift.sources import Columns
from mlvigil.core.store import Store


class Windows:
    """The window state of one monitor: where the next tumbling block or sliding window
    may start."""

    def __init__(self, config: MonitorConfig, source: RowSource) -> None:
        assert config.window is not None, "resolve the monitor's defaults first"
        self.config, self.source = config, source
        #: Count-tumbling windows take rows after this time.
        self.tumble_after: float | None = None
        # A sliding-size window's last (until, first row's ts): where the next one may start.
        self._slide_floor: tuple[float, float] | None = None

    def current(self, store: Store, now: float) -> tuple[Columns, float | None, float | None]:
        """The window's rows and its start and end (empty rows: no new complete block)."""
        w = self.config.window
        assert w is not None
        rows_of = self.source.rows
        until = now - self.config.label_delay if self.source.waits_for_labels else now
        if w.duration is not None:
            if w.mode == "tumbling":
                until = math.floor(until / w.duration) * w.duration
            rows = rows_of(store, since=until - w.duration, until=until)
            return rows, until - w.duration, until
        assert w.size is not None
        if w.mode == "sliding":
            # The newest rows never start before the previous window did (a row arriving late
            # with an earlier time has size newer rows after it): bounding the search by that
            # start lets the store skip every older block of a large table.
            floor = self._slide_floor
            since = floor[1] if floor is not None and until >= floor[0] else None
            rows = rows_of(store, since=since, until=until, last=w.size)
            if since is not None and len(rows.get("ts", [])) < w.size:
                rows = rows_of(store, until=until, last=w.size)  # rows were deleted meanwhile
            ts = rows.get("ts") or []
            self._slide_floor = (until, ts[0]) if len(ts) == w.size else None
        else:
            fresh = rows_of(store, since=self.tumble_after, until=until)
            if self.tumble_after is not None:
                keep = [i for i, t in enumerate(fresh["ts"]) if t > self.tumble_after]
                fresh = {k: [v[i] for i in keep] for k, v in fresh.items()}
            blocks = len(fresh["ts"]) // w.size
            if blocks == 0:
                return {}, None, None
            lo = (blocks - 1) * w.size
            rows = {k: v[lo : lo + w.size] for k, v in fresh.items()}
            self.tumble_after = rows["ts"][-1]
        ts = rows.get("ts") or [None]
        return rows, ts[0], ts[-1]


__all__ = ["Windows"]
