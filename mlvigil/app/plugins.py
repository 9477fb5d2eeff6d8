"""The plugins ``mlvigil serve`` runs, and the config loaders that know their sections.

This is the one registry: the application lists the capability packages here; the kernel
(``mlvigil.core.config``, ``mlvigil.core.plugin``) knows none of them. Order is build and start order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from alerts.plugin import PLUGIN as ALERTS
from detectors.carbon.plugin import PLUGIN as CARBON
from detectors.drift.plugin import PLUGIN as DRIFT
from detectors.training.plugin import PLUGIN as TRAINING
from gpu_health.plugin import PLUGIN as GPU
from mlvigil.app.console.plugin import PLUGIN as CONSOLE
from mlvigil.core import config as kernel_config
from mlvigil.core.config import Config
from mlvigil.core.plugin import Plugin, config_model
from retrain_hooks.plugin import PLUGIN as RETRAIN

PLUGINS: tuple[Plugin[Any], ...] = (GPU, TRAINING, DRIFT, CARBON, ALERTS, RETRAIN, CONSOLE)

#: ``Config`` with every plugin's section typed by its own model: validated in one pass.
AppConfig = cast(type[Config], config_model(PLUGINS))


def build_config(
    raw: dict[str, Any] | None, env: dict[str, str] | None = None, source: str = "config"
) -> Config:
    """``mlvigil.core.config.build_config`` with every plugin's section (see there)."""
    return kernel_config.build_config(raw, env, source, AppConfig)


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> Config:
    """``mlvigil.core.config.load_config`` with every plugin's section (see there)."""
    return kernel_config.load_config(path, env, AppConfig)
