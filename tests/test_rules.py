"""Prometheus alerting rules: promtool accepts them, their unit tests pass, and every metric they
read is one mlvigil (server or GPU agent) actually exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gpu_health.agent import AgentTelemetry
from gpu_health.names import METRICS
from mlvigil.core.metrics import Telemetry

RULES = Path(__file__).resolve().parents[1] / "alerts" / "rules"


def _promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed (apt-get install prometheus; scripts/test.sh does)")
    return binary


def test_promtool_check_rules() -> None:
    files = sorted(str(p) for p in RULES.glob("*.yml") if not p.name.endswith("_test.yml"))
    assert files
    out = subprocess.run([_promtool(), "check", "rules", *files], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    tests = sorted(str(p) for p in RULES.glob("*_test.yml"))
    assert tests
    out = subprocess.run(
        [_promtool(), "test", "rules", *tests], capture_output=True, text=True, timeout=120, cwd=RULES
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _exported_families() -> set[str]:
    names = set()
    for registry in (Telemetry().registry,):
        names |= {m.name for m in registry.collect()}
    agent = CollectorRegistry()
    AgentTelemetry(agent)
    names |= {m.name for m in agent.collect()}
    names |= {spec.prom for spec in METRICS.values()}
    # The alerts engine's delivery counter (alerts/metrics.py).
    names.add("mlvigil_alerts_delivery_attempts")
    return names


def test_rules_read_only_exported_metrics() -> None:
    families = _exported_families()
    for path in RULES.glob("*.yml"):
        if path.name.endswith("_test.yml"):
            continue
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for name in re.findall(r"\b(mlvigil_\w+|up)\b(?=\s*[{\[)])", rule["expr"]):
                    if name == "up":
                        continue
                    family = re.sub(r"_(total|bucket|count|sum)$", "", name)
                    assert family in families, (rule["alert"], name)
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert rule["annotations"]["summary"] and rule["annotations"]["description"]
