"""The plugin model: one registry, each section typed and validated once, a kernel that knows no plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from alerts.plugin import PLUGIN as ALERTS
from mlvigil.app.plugins import COMMANDS, PLUGINS
from mlvigil.app.plugins import build_config as build_app_config
from mlvigil.core.config import Config, ConfigError, build_config
from mlvigil.core.plugin import Plugin, config_model

REPO = Path(__file__).resolve().parents[1]
CAPABILITIES = ("collector", "detectors", "gpu_health", "alerts", "retrain_hooks", "dashboards")


def test_every_plugin_section_is_its_typed_model() -> None:
    cfg = build_app_config({"alerts": {"receivers": []}, "detectors": {"drift": {"enabled": True}}}, env={})
    assert {p.section for p in PLUGINS if p.section} == {
        ("gpu",),
        ("detectors", "training"),
        ("detectors", "drift"),
        ("detectors", "carbon"),
        ("alerts",),
        ("retrain",),
        ("console",),
    }
    for plugin in PLUGINS:
        if plugin.section:
            assert isinstance(plugin.section_of(cfg), plugin.section_model())
    # Kernel keys next to plugin sections stay where they were.
    assert cfg.detectors.interval == 15.0 and cfg.ingest.max_request_bytes > 0


def test_the_kernel_config_knows_no_plugin() -> None:
    with pytest.raises(ConfigError, match="alerts: unknown key"):
        build_config({"alerts": {}}, env={})
    with pytest.raises(TypeError, match=r"mlvigil\.app\.plugins\.load_config"):
        ALERTS.section_of(build_config({}, env={}))


def test_two_plugins_cannot_claim_one_section() -> None:
    class Section(BaseModel):
        pass

    def build(section: Section, ctx: object) -> list[object]:
        return []

    twice = [Plugin("a", ("alerts",), Section, build), Plugin("b", ("alerts",), Section, build)]
    with pytest.raises(ValueError, match=r"alerts claimed by \['a', 'b'\]"):
        config_model(twice)
    with pytest.raises(ValueError, match=r"server\.x is not a section"):
        config_model([Plugin("c", ("server", "x", "y"), Section, build)])
    assert config_model([]) is Config


def test_kernel_modules_import_no_capability_package() -> None:
    """The kernel's config, plugin model, refusals, auth and HTTP body helpers stand alone."""
    code = (
        "import sys\n"
        "import mlvigil.core.config, mlvigil.core.plugin, mlvigil.core.errors, mlvigil.core.auth, mlvigil.core.http_body\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({CAPABILITIES!r})))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_cli_commands_come_from_the_plugins() -> None:
    """``mlvigil``'s subcommands are the registry's: each plugin's, in registry order, named once."""
    from mlvigil.app import cli

    declared = [command.name for plugin in PLUGINS for command in plugin.commands]
    assert declared == list(COMMANDS) == list(cli.COMMANDS)
    assert set(declared) == {"serve", "agent", "drift", "estimate", "migrate", "demo"}
    assert {p.name for p in PLUGINS if any(c.name == "agent" for c in p.commands)} == {"gpu"}
