"""The harness kills every service and every raw ``subprocess.Popen`` a test leaves running
(tests/conftest.py ``no_leaked_services``, ``no_leaked_processes``).

Tests in pairs, in order: the first starts a process the way a failing test would leave it
(no stop, no finally), the second checks that it was gone before it began.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.harness import ServiceHandle

_left_running: list[ServiceHandle] = []
_raw_left_running: list[subprocess.Popen[Any]] = []


def test_starts_a_service_and_leaves_it_running(tmp_path: Path) -> None:
    handle = ServiceHandle(tmp_path / "data", None, None).start()
    assert handle.proc is not None and handle.proc.poll() is None
    _left_running.append(handle)


def test_the_service_left_running_was_killed() -> None:
    assert len(_left_running) == 1, "run with the test above (same module, in order)"
    handle = _left_running[0]
    assert handle.proc is not None and handle.proc.poll() is not None, "the service outlived its test"
    assert handle not in ServiceHandle.live


def test_starts_a_raw_process_and_leaves_it_running() -> None:
    # As tests/producers/ddp_job.launch does for each rank: a plain Popen, no handle.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    assert proc.poll() is None
    _raw_left_running.append(proc)


def test_the_raw_process_left_running_was_killed() -> None:
    assert len(_raw_left_running) == 1, "run with the test above (same module, in order)"
    proc = _raw_left_running[0]
    assert proc.poll() is not None, "the process outlived its test"
