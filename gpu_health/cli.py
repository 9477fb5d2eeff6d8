"""``mlvigil agent``: its parser, kept apart from ``gpu_health.agent`` so that
``mlvigil agent --help`` does not import NVML, aiohttp and the OTLP protos."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from gpu_health.exit_codes import EXIT_UNAVAILABLE


def parse_duration(value: str) -> float:
    from mlvigil.core.config import parse_duration as parse

    return parse(value)


def run_cli(args: argparse.Namespace) -> int:
    from gpu_health.agent import run_cli as run

    return run(args)


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``mlvigil agent``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "agent",
        help="per-node GPU agent: sample NVML, serve /metrics, ship OTLP metrics to a mlvigil server",
        description=(
            "Samples every NVIDIA GPU on this node through NVML, serves the latest values on /metrics and"
            " ships them as OTLP metrics to a mlvigil server (OTEL_EXPORTER_OTLP_ENDPOINT, default"
            f" http://localhost:4318). Exit code {EXIT_UNAVAILABLE}: no driver or no GPU on this node."
        ),
    )
    env = os.environ
    p.add_argument(
        "--backend",
        choices=("nvml", "fake"),
        default=env.get("MLVIGIL_GPU_BACKEND", "nvml"),
        help="nvml (real GPUs) or fake (a scripted scenario) [MLVIGIL_GPU_BACKEND]",
    )
    p.add_argument(
        "--scenario",
        default=env.get("MLVIGIL_GPU_SCENARIO"),
        help="scenario file or built-in name for --backend fake [MLVIGIL_GPU_SCENARIO]",
    )
    p.add_argument(
        "--interval",
        type=parse_duration,
        default=env.get("MLVIGIL_GPU_INTERVAL", "1s"),
        help="time between passes, e.g. 1s, 500ms [MLVIGIL_GPU_INTERVAL]",
    )
    p.add_argument(
        "--listen",
        default=env.get("MLVIGIL_GPU_LISTEN", "0.0.0.0:9400"),
        help="host:port of /metrics and /healthz, or 'none' [MLVIGIL_GPU_LISTEN]",
    )
    p.add_argument(
        "--endpoint",
        default=None,
        help="OTLP/HTTP metrics URL; overrides OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT",
    )
    p.add_argument("--no-export", action="store_true", help="do not ship OTLP (serve /metrics only)")
    p.add_argument("--once", action="store_true", help="take one sample, print it as JSON and exit")
    p.add_argument(
        "--record",
        type=Path,
        metavar="FILE",
        help="write every pass to FILE as a scenario the fake backend replays",
    )
    p.add_argument(
        "--duration",
        type=parse_duration,
        default=None,
        help="stop after this long (e.g. 60s; useful with --record)",
    )
    p.add_argument("--node-name", default=None, help="node name (default: NODE_NAME, else the hostname)")
    p.set_defaults(func=run_cli)
    return p
