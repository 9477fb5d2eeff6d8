"""The harness kills every service a test leaves running (tests/conftest.py ``no_leaked_services``).

Two tests in order: the first starts a service the way a failing test would leave it (no
stop, no finally), the second checks that its process was gone before it began.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import ServiceHandle

_left_running: list[ServiceHandle] = []


def test_starts_a_service_and_leaves_it_running(tmp_path: Path) -> None:
    handle = ServiceHandle(tmp_path / "data", None, None).start()
    assert handle.proc is not None and handle.proc.poll() is None
    _left_running.append(handle)


def test_the_service_left_running_was_killed() -> None:
    assert len(_left_running) == 1, "run with the test above (same module, in order)"
    handle = _left_running[0]
    assert handle.proc is not None and handle.proc.poll() is not None, "the service outlived its test"
    assert handle not in ServiceHandle.live
