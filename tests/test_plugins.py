"""The plugin model: one registry, each section typed and validated once, a kernel that knows no plugin."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

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
        ("ingest",),
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
    assert set(declared) == {"serve", "agent", "drift", "estimate", "dashboards", "migrate", "demo"}
    assert {p.name for p in PLUGINS if any(c.name == "agent" for c in p.commands)} == {"gpu"}


def _capability_modules() -> list[str]:
    """Each capability package, and each detector family under ``detectors/``, as a module name."""
    names: list[str] = []
    for top in CAPABILITIES:
        if top == "detectors":
            names.extend(
                f"detectors.{d.name}" for d in sorted((REPO / top).iterdir()) if (d / "__init__.py").exists()
            )
        else:
            names.append(top)
    return names


def test_every_capability_package_exports_exactly_one_registered_plugin() -> None:
    """One descriptor per package, in ``plugin.py``, and the registry lists each of them."""
    found: dict[str, Plugin[Any]] = {}
    for name in _capability_modules():
        assert (REPO / name.replace(".", "/") / "plugin.py").exists(), f"{name} has no plugin.py"
        module = importlib.import_module(f"{name}.plugin")
        plugins = [v for v in vars(module).values() if isinstance(v, Plugin)]
        assert len(plugins) == 1, f"{name}.plugin exports {len(plugins)} Plugins"
        assert module.PLUGIN is plugins[0]
        found[name] = plugins[0]
    assert set(_capability_modules()) >= {"collector", "dashboards", "detectors.drift", "alerts"}
    registered = {id(p) for p in PLUGINS}
    assert [n for n, p in found.items() if id(p) not in registered] == []


def test_the_collector_builds_the_ingest_path_and_listens_last(tmp_path: Path) -> None:
    """The collector's build returns the writers (pipeline, write-ahead log) as components and
    puts the receivers on ``ctx.listeners``, the last to start and the first to stop."""
    from collector.grpc_receiver import OtlpGrpcReceiver
    from collector.http_receiver import OtlpHttpReceiver
    from collector.loader import IngestLog
    from collector.pipeline import IngestPipeline
    from collector.plugin import PLUGIN as COLLECTOR
    from mlvigil.core.context import ServiceContext
    from mlvigil.core.detector_loop import DetectorLoop
    from mlvigil.core.finding_book import FindingBook
    from mlvigil.core.metrics import Telemetry
    from mlvigil.core.store.duckdb import DuckDBStore

    cfg = build_app_config(
        {
            "storage": {"data_dir": str(tmp_path)},
            "ingest": {"queue_max_items": 7},
            "server": {"otlp_http_addr": "127.0.0.1:0"},
        },
        env={},
    )
    section = COLLECTOR.section_of(cfg)
    assert section.queue_max_items == 7  # the existing ``ingest`` keys are the plugin's section
    store = DuckDBStore(tmp_path)
    try:
        telemetry = Telemetry()
        book = FindingBook(store, telemetry)
        ctx = ServiceContext(cfg, store, telemetry, book, DetectorLoop(store, book, [], 60.0))
        assert COLLECTOR.build is not None
        parts = COLLECTOR.build(section, ctx)
        assert [type(p) for p in parts] == [IngestPipeline, IngestLog]
        assert [type(p) for p in ctx.listeners] == [OtlpGrpcReceiver, OtlpHttpReceiver]
        assert ctx.services["pipeline"] is parts[0] and ctx.services["pipeline"].max_items == 7
        assert ctx.services["otlp_http"] is ctx.listeners[1]
        # The CloudEvents receiver and label feedback are the collector's routes on the API.
        paths = {route.path for route in ctx.routes}
        assert paths == {"/api/v1/ingest/cloudevents", "/api/v1/labels"}
    finally:
        store.close()
