"""The ``mlvigil`` command line.

The subcommands are the plugins' (``mlvigil.app.plugins.COMMANDS``). Only the chosen
subcommand's module is imported (numpy, scipy, aiohttp and the OTLP protos cost seconds), so
``mlvigil --help`` and ``mlvigil COMMAND --help`` answer at once.
``bench/cli/run.py`` measures it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from mlvigil import __version__
from mlvigil.app.plugins import COMMANDS


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os

    from mlvigil.app.plugins import load_config
    from mlvigil.app.service import serve
    from mlvigil.core.config import ConfigError

    env = dict(os.environ, MLVIGIL_DATA_DIR=args.data_dir) if args.data_dir else None
    try:
        config = load_config(args.config, env)
    except ConfigError as exc:
        print(f"mlvigil: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(serve(config))


def add_cli(subparsers: Any) -> None:
    """Register ``mlvigil serve``."""
    serve = subparsers.add_parser(
        "serve", help=COMMANDS["serve"].help, description=COMMANDS["serve"].description
    )
    serve.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--data-dir", help="directory of the embedded store (env MLVIGIL_DATA_DIR)")
    serve.set_defaults(func=_serve)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or (``command`` given) with only that one's module
    imported and a placeholder for each of the others (enough to list them in ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="mlvigil",
        description="Observability and drift monitoring for ML training, serving and GPUs.",
        epilog="Run 'mlvigil COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mlvigil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        if command is None or name == command:
            cmd.add_to(sub)
        else:
            sub.add_parser(name, help=cmd.help, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    # The first word is the command (the top level has no options that take a value).
    command = next((a for a in args_in[:1] if a in COMMANDS), "")
    parser = build_parser(command)
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
