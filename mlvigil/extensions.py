"""The optional components the service assembles, each from its own config section.

Each entry names where its section lives in the config, its config model and its build
function ``build(section_model, ctx) -> list[Detector | Component]``. The core imports none
of them directly, so a component's insides stay its own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


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


def validate_all(config: Any) -> None:
    """Validate every extension section of a loaded config (raises ConfigError)."""
    for ext in EXTENSIONS:
        validate_section(ext, section_of(config, ext.section))


def validate_section(ext: Extension, raw: dict[str, Any]) -> BaseModel:
    """The section as its typed model; errors name the full key path."""
    model = load_symbol(ext.config_model)
    try:
        validated: BaseModel = model.model_validate(raw)
        return validated
    except ValidationError as exc:
        from mlvigil.config import ConfigIssues, describe_errors

        raise ConfigIssues(describe_errors(exc, model, ext.section)) from None
