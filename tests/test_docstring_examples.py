"""Every detector and health rule module carries a runnable example (river's numpydoc style).

pytest runs every module's examples (``--doctest-modules`` over the packages, pyproject.toml);
this test only says which modules must have one, so an example cannot silently disappear.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import detectors.drift.streaming
import gpu_health.rules

MUST_HAVE_EXAMPLES = [
    "gpu_health.health",
    *(f"gpu_health.rules.{m.name}" for m in pkgutil.iter_modules(gpu_health.rules.__path__) if m.name != "base"),
    *(f"detectors.training.{m}" for m in
      ("robust", "changepoint", "regression", "straggler", "goodput", "dataloader", "loss", "feed", "episodes")),
    *(f"detectors.estimation.{m}" for m in ("cbpe", "pape", "dle")),
    *(f"detectors.drift.streaming.{m.name}" for m in pkgutil.iter_modules(detectors.drift.streaming.__path__)
      if not m.name.startswith("_")),
    "detectors.drift.monitor",
]  # fmt: skip


@pytest.mark.parametrize("name", MUST_HAVE_EXAMPLES)
def test_module_has_a_runnable_example(name: str) -> None:
    module = importlib.import_module(name)
    examples = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    assert examples > 0, f"{name} has no docstring example"
