"""Runs the real ``mlvigil serve`` in a subprocess on loopback ports, for end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from mlvigil.app.demo.supervise import ServiceProcess

REPO = Path(__file__).resolve().parents[1]
# This tree's sources for subprocesses: the server's packages and the producer distribution's,
# then a PYTHONPATH the caller set (a worktree's own build of mlvigil_native: NATIVE-BUILD).
SOURCE_PATH = os.pathsep.join(
    [str(REPO), str(REPO / "producer" / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)


class ServiceHandle(ServiceProcess):
    """``ServiceProcess`` started from the repository root (so ``python -m mlvigil`` is this tree)."""

    #: Every handle started and not yet killed: the autouse fixture ``no_leaked_services``
    #: (tests/conftest.py) kills those a test started, even when an assert failed first.
    live: ClassVar[set[ServiceHandle]] = set()

    def __init__(self, data_dir: Path, config: dict[str, Any] | None, env: dict[str, str] | None) -> None:
        env = dict(env or {})
        env.setdefault("PYTHONPATH", SOURCE_PATH)
        super().__init__(data_dir, config, env)

    def start(self, timeout: float = 60.0) -> ServiceHandle:
        ServiceHandle.live.add(self)
        super().start(timeout)
        return self

    def kill(self) -> None:
        super().kill()
        ServiceHandle.live.discard(self)
