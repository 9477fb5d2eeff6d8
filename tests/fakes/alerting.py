"""Helpers for alert and retrain tests: Findings and a real FindingBook over a DuckDBStore."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlvigil.finding_book import FindingBook
from mlvigil.findings import Finding, Severity
from mlvigil.store.duckdb import DuckDBStore


def finding(
    kind: str = "data_drift", model: str = "churn", severity: str = "warning", **subject: str
) -> Finding:
    return Finding(
        kind=kind,
        severity=Severity(severity),
        subject={"model": model, **subject},
        summary=f"{kind} on {model}: PSI 0.31 above 0.2",
        evidence={"statistic": "psi", "score": 0.31, "threshold": 0.2, "reference_size": 5000},
    )


class Book:
    """A real FindingBook on a real store; ``report`` is one detector evaluation."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store = DuckDBStore(data_dir)
        self.book = FindingBook(self.store)

    def report(self, *findings: Finding, detector: str = "drift", now: float | None = None) -> list[Any]:
        import time

        return self.book.record(detector, list(findings), time.time() if now is None else now)

    def close(self) -> None:
        self.store.close()


async def until(fn: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``fn`` on the loop until truthy, failing at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := fn()):
        if loop.time() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        await asyncio.sleep(0.02)
    return value
