"""The plugins ``mlvigil`` ships: the sections ``mlvigil serve`` runs, the subcommands of the
``mlvigil`` command line (``mlvigil.app.cli``), and the config loaders that know the sections.

This is the one registry: the application lists the capability packages here; the kernel
(``mlvigil.core.config``, ``mlvigil.core.plugin``) knows none of them. Order is build and start
order, and the order of ``mlvigil --help``. Importing it is light (descriptors import their
models and builders when used), so ``mlvigil --help`` answers at once.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from alerts.plugin import PLUGIN as ALERTS
from collector.plugin import PLUGIN as COLLECTOR
from dashboards.plugin import PLUGIN as DASHBOARDS
from detectors.carbon.plugin import PLUGIN as CARBON
from detectors.drift.plugin import PLUGIN as DRIFT
from detectors.estimation.plugin import PLUGIN as ESTIMATION
from detectors.training.plugin import PLUGIN as TRAINING
from gpu_health.plugin import PLUGIN as GPU
from mlvigil.app.console.plugin import PLUGIN as CONSOLE
from mlvigil.core.plugin import Command, Plugin, config_model
from retrain_hooks.plugin import PLUGIN as RETRAIN

if TYPE_CHECKING:
    from mlvigil.core.config import Config

SERVE = Command(
    "serve",
    "run the service: receivers, store, detectors, alerts, API",
    "mlvigil.app.cli:add_cli",
    "Run the mlvigil service in the foreground: the OTLP receivers (HTTP 4318, gRPC 4317), the"
    " embedded store, the detectors, alerts and the API on 9710. Configuration comes from the"
    " YAML file given with --config, then from MLVIGIL_* environment variables; see"
    " docs/configuration.md. Stop it with Ctrl-C (SIGINT) or SIGTERM. Exit code 2: the"
    " configuration is invalid (the error names the key and what to do).",
)
MIGRATE = Command(
    "migrate",
    "copy an embedded data dir into PostgreSQL (stop serve first)",
    "mlvigil.core.store.migrate:add_cli",
    "Copy the records, findings and documents of an embedded DuckDB data dir into an empty"
    " PostgreSQL database, for running N replicas on it (docs/scale-out.md). Stop mlvigil"
    " serve first. Exit code 1: the copy failed (the message says why); 2: no target given.",
)
DEMO = Command(
    "demo",
    "the whole story on this machine with simulated workloads and GPUs",
    "mlvigil.app.demo.run:add_cli",
    "Start the real service on this machine with simulated producers (a model server whose"
    " inputs drift, an LLM app, a 4-rank training run on a scripted 8-GPU node) and print"
    " each finding and alert as it fires: data and LLM traffic drift, a straggler rank, a"
    " GPU fault and a carbon budget overrun. Takes about three minutes (--short: about one)."
    " Exit code 0 when every step produced its finding.",
)
#: The application's own commands; it has no config section of its own.
SERVICE: Plugin[Any] = Plugin(name="service", commands=(SERVE,))
OPERATIONS: Plugin[Any] = Plugin(name="operations", commands=(MIGRATE, DEMO))

PLUGINS: tuple[Plugin[Any], ...] = (
    SERVICE,
    COLLECTOR,
    GPU,
    TRAINING,
    DRIFT,
    ESTIMATION,
    CARBON,
    ALERTS,
    RETRAIN,
    CONSOLE,
    DASHBOARDS,
    OPERATIONS,
)

#: Every plugin's subcommand by name, in registry order.
COMMANDS: dict[str, Command] = {command.name: command for plugin in PLUGINS for command in plugin.commands}


@functools.cache
def app_config() -> type[Config]:
    """``Config`` with every plugin's section typed by its own model: validated in one pass."""
    return cast("type[Config]", config_model(PLUGINS))


def build_config(
    raw: dict[str, Any] | None, env: dict[str, str] | None = None, source: str = "config"
) -> Config:
    """``mlvigil.core.config.build_config`` with every plugin's section (see there)."""
    from mlvigil.core import config as kernel_config

    return kernel_config.build_config(raw, env, source, app_config())


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> Config:
    """``mlvigil.core.config.load_config`` with every plugin's section (see there)."""
    from mlvigil.core import config as kernel_config

    return kernel_config.load_config(path, env, app_config())
