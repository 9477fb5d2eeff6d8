"""The ``mlvigil`` command line.

Only the chosen subcommand's module is imported (numpy, scipy, aiohttp and the OTLP protos
cost seconds), so ``mlvigil --help`` and ``mlvigil COMMAND --help`` answer at once.
``bench/cli/run.py`` measures it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

from mlvigil import __version__


class Command(NamedTuple):
    #: Module with ``add_cli(subparsers)``, which registers the subcommand's parser.
    module: str
    #: The line ``mlvigil --help`` lists; the module's own parser uses the same words.
    help: str
    #: Shown by ``mlvigil COMMAND --help`` when the module's parser gives no description.
    description: str


COMMANDS: dict[str, Command] = {
    "serve": Command(
        "mlvigil.app.cli",
        "run the service: receivers, store, detectors, alerts, API",
        "Run the mlvigil service in the foreground: the OTLP receivers (HTTP 4318, gRPC 4317), the"
        " embedded store, the detectors, alerts and the API on 9710. Configuration comes from the"
        " YAML file given with --config, then from MLVIGIL_* environment variables; see"
        " docs/configuration.md. Stop it with Ctrl-C (SIGINT) or SIGTERM. Exit code 2: the"
        " configuration is invalid (the error names the key and what to do).",
    ),
    "agent": Command(
        "gpu_health.cli",
        "per-node GPU agent: sample NVML, serve /metrics, ship OTLP metrics to a mlvigil server",
        "",
    ),
    "drift": Command(
        "detectors.drift.cli",
        "offline drift report for two CSV/Parquet files (exit 1 when drift is found)",
        "",
    ),
    "estimate": Command(
        "detectors.estimation.cli",
        "estimate a model's performance on unlabelled data from a labelled reference (exit 1 on a drop)",
        "",
    ),
    "migrate": Command(
        "mlvigil.core.store.migrate",
        "copy an embedded data dir into PostgreSQL (stop serve first)",
        "Copy the records, findings and documents of an embedded DuckDB data dir into an empty"
        " PostgreSQL database, for running N replicas on it (docs/scale-out.md). Stop mlvigil"
        " serve first. Exit code 1: the copy failed (the message says why); 2: no target given.",
    ),
    "demo": Command(
        "mlvigil.app.demo.run",
        "the whole story on this machine with simulated workloads and GPUs",
        "Start the real service on this machine with simulated producers (a model server whose"
        " inputs drift, an LLM app, a 4-rank training run on a scripted 8-GPU node) and print"
        " each finding and alert as it fires: data and LLM traffic drift, a straggler rank, a"
        " GPU fault and a carbon budget overrun. Takes about three minutes (--short: about one)."
        " Exit code 0 when every step produced its finding.",
    ),
}


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
            importlib.import_module(cmd.module).add_cli(sub)
            registered = sub.choices[name]
            if not registered.description:
                registered.description = cmd.description or cmd.help
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
