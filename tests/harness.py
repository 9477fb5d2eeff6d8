"""Runs the real ``mlvigil serve`` in a subprocess on loopback ports, for end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlvigil.supervise import ServiceProcess

REPO = Path(__file__).resolve().parents[1]


class ServiceHandle(ServiceProcess):
    """``ServiceProcess`` started from the repository root (so ``python -m mlvigil`` is this tree)."""

    def __init__(self, data_dir: Path, config: dict[str, Any] | None, env: dict[str, str] | None) -> None:
        env = dict(env or {})
        env.setdefault("PYTHONPATH", str(REPO))
        super().__init__(data_dir, config, env)
