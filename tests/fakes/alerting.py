"""Helpers for alert and retrain tests: Findings and a real FindingBook over a DuckDBStore."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, TypeVar

from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.store.duckdb import DuckDBStore


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


class Startable(Protocol):
    def start(self) -> Awaitable[Any]: ...

    def stop(self) -> Awaitable[Any]: ...


S = TypeVar("S", bound=Startable)


class Scenario:
    """One test's parts: a real FindingBook, and the services and fakes it starts, each
    stopped (last started first) and the store closed on exit, even when an assert failed.

    ``async with Scenario(tmp_path) as s: svc = await s.use(AlertService(cfg, s.store, s.book))``
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.books = [Book(data_dir)]
        self._stack = contextlib.AsyncExitStack()

    @property
    def book(self) -> Book:
        return self.books[-1]

    @property
    def store(self) -> DuckDBStore:
        return self.book.store

    @property
    def findings(self) -> FindingBook:
        return self.book.book

    def report(self, *findings: Finding, detector: str = "drift", now: float | None = None) -> list[Any]:
        return self.book.report(*findings, detector=detector, now=now)

    async def use(self, part: S) -> S:
        """Start ``part`` (a service or a fake) and stop it when the scenario ends."""
        await part.start()
        self._stack.push_async_callback(part.stop)
        return part

    def reopen(self) -> Book:
        """Close the store (a crash or restart) and open the same data directory again."""
        self.book.close()
        self.books.append(Book(self.data_dir))
        return self.book

    async def __aenter__(self) -> Scenario:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self._stack.aclose()
        finally:
            self.book.close()
