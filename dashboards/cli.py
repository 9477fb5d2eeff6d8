"""Generate (or verify) the dashboard JSON: ``mlvigil dashboards`` and ``python -m dashboards``.

The definitions (and the Grafana SDK under them) are imported only when the command runs, so
``mlvigil --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GENERATED = Path(__file__).resolve().parent / "generated"

DESCRIPTION = (
    "Write the Grafana dashboards (fleet, drift, LLM traffic, training, GPU, carbon) as JSON,"
    " one file per dashboard uid, for Grafana's file provisioning (docs/dashboards.md)."
    " With --check nothing is written: exit code 1 when a file in --out differs from what"
    " the definitions generate (run it in CI after changing dashboards/definitions.py)."
)


def file_name(uid: str) -> str:
    return f"{uid}.json"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=GENERATED, help="output directory (default: %(default)s)")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a committed file differs from what the code generates"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dashboards.definitions import DASHBOARDS
    from dashboards.spec import render

    args.out.mkdir(parents=True, exist_ok=True)
    stale = []
    for spec in DASHBOARDS:
        path = args.out / file_name(spec.uid)
        text = render(spec)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print("out of date (run mlvigil dashboards): " + ", ".join(map(str, stale)), file=sys.stderr)
        return 1
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``mlvigil dashboards``."""
    from dashboards.plugin import DASHBOARDS

    _arguments(subparsers.add_parser(DASHBOARDS.name, help=DASHBOARDS.help, description=DESCRIPTION))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=DESCRIPTION)
    _arguments(parser)
    args = parser.parse_args(argv)
    return run(args)
