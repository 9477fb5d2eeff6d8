"""The optional components the service assembles, each from its own config section.

Each entry names where its section lives in the config, its config model and its build
function ``build(section_model, ctx) -> list[Detector | Component]``. The core imports none
of them directly, so a component's insides stay its own. ``mlvigil.config`` validates each
section against its model (``validate_section``); this module imports nothing of mlvigil's.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Extension:
    section: tuple[str, ...]
    config_model: str  # "module:Class"
    builder: str  # "module:function"


EXTENSIONS: tuple[Extension, ...] = (
    Extension(("gpu",), "gpu_health.config:GpuConfig", "gpu_health:build"),
    Extension(
        ("detectors", "training"), "detectors.training.config:TrainingConfig", "detectors.training:build"
    ),
    Extension(("detectors", "drift"), "detectors.drift.config:DriftConfig", "detectors.drift:build"),
    Extension(("detectors", "carbon"), "detectors.carbon.config:CarbonConfig", "detectors.carbon:build"),
    Extension(("alerts",), "alerts.config:AlertsConfig", "alerts:build"),
    Extension(("retrain",), "retrain_hooks.config:RetrainConfig", "retrain_hooks:build"),
    Extension(("console",), "mlvigil.console.config:ConsoleConfig", "mlvigil.console:build"),
)


def load_symbol(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def section_of(tree: Any, path: tuple[str, ...]) -> dict[str, Any]:
    node = tree
    for part in path:
        node = getattr(node, part) if not isinstance(node, dict) else node.get(part, {})
    return node if isinstance(node, dict) else {}
