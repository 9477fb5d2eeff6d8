"""The ``mlvigil`` command line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Sequence

from mlvigil import __version__
from mlvigil.config import ConfigError, load_config

# Subcommands contributed by components: module with add_cli(subparsers).
CLI_EXTENSIONS = ("gpu_health.cli", "detectors.drift.cli", "mlvigil.demo")


def _serve(args: argparse.Namespace) -> int:
    from mlvigil.service import serve

    env = None
    if args.data_dir:
        import os

        env = dict(os.environ, MLVIGIL_DATA_DIR=args.data_dir)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlvigil", description="Observability and drift monitoring for ML training, serving and GPUs."
    )
    parser.add_argument("--version", action="version", version=f"mlvigil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser("serve", help="run the service: receivers, store, detectors, alerts, API")
    serve.add_argument("-c", "--config", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--data-dir", help="directory of the embedded store (env MLVIGIL_DATA_DIR)")
    serve.set_defaults(func=_serve)
    for module in CLI_EXTENSIONS:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
