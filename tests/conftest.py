from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.harness import ServiceHandle

if TYPE_CHECKING:
    from mlvigil.core.store.duckdb import DuckDBStore

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def no_leaked_services() -> Iterator[None]:
    """Kill every service a test started and left running, however the test ended.

    Services of wider-scoped fixtures (started before this test) are theirs to stop.
    """
    before = set(ServiceHandle.live)
    yield
    for handle in ServiceHandle.live - before:
        handle.kill()


@pytest.fixture(autouse=True)
def no_leaked_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Kill every process a test (or its function-scoped fixtures) started with a raw
    ``subprocess.Popen`` and left running: the rank processes of tests/producers/ddp_job.launch
    when one fails to start, an agent or a writer behind a failed assert.

    Processes of wider-scoped fixtures (started before this test) are theirs to stop.
    """
    started: list[subprocess.Popen[Any]] = []
    popen_init = subprocess.Popen.__init__

    def tracked_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        popen_init(self, *args, **kwargs)
        started.append(self)

    monkeypatch.setattr(subprocess.Popen, "__init__", tracked_init)
    yield
    monkeypatch.undo()
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    """An embedded DuckDB store in the test's own directory, closed at the end."""
    from mlvigil.core.store.duckdb import DuckDBStore

    s = DuckDBStore(tmp_path / "data")
    yield s
    s.close()


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ServiceHandle]]:
    """Start real ``mlvigil serve`` processes; all are killed at the end of the test."""
    handles: list[ServiceHandle] = []

    def make(config: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> ServiceHandle:
        handle = ServiceHandle(tmp_path / f"data{len(handles)}", config, env)
        handles.append(handle)
        return handle.start()

    yield make
    for h in handles:
        h.kill()


@pytest.fixture
def service(service_factory: Callable[..., ServiceHandle]) -> ServiceHandle:
    return service_factory()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """One real PostgreSQL server for the session (tests/pg.py); each test takes its own database."""
    from tests.pg import PostgresServer

    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_dsn(pg_server: Any) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return str(pg_server.create_database())
