"""Performance estimation's plugin: the ``mlvigil estimate`` command (the monitors that estimate
in the service are drift monitors of kind ``estimated_performance``, built by the drift plugin)."""

from __future__ import annotations

from typing import Any

from mlvigil.core.plugin import Command, Plugin

ESTIMATE = Command(
    "estimate",
    "estimate a model's performance on unlabelled data from a labelled reference (exit 1 on a drop)",
    "detectors.estimation.cli:add_cli",
)

PLUGIN: Plugin[Any] = Plugin(name="estimation", commands=(ESTIMATE,))
