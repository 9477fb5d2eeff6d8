"""The ``console`` section of the config: the web console under ``/ui/`` (docs/console.md)."""

from __future__ import annotations

from pydantic import Field

from mlvigil.core.config import Strict


class ConsoleConfig(Strict):
    # Serve the console under /ui/ on the API port (same listener, same auth).
    enabled: bool = True
    # Newest points of each drift monitor's statistic drawn by the "over time" plots (one per
    # evaluation, recorded in the store's monitor_stats table; at the default 15 s detector
    # interval, 720 points are 3 hours).
    statistic_history: int = Field(default=720, ge=10, le=100_000)
