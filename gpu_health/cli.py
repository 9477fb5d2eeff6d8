"""``mlvigil agent`` (registered by the core CLI through ``add_cli``)."""

from __future__ import annotations

from gpu_health.agent import add_cli, run_cli

__all__ = ["add_cli", "run_cli"]
