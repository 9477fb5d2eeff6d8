"""The dashboards' plugin: ``mlvigil dashboards`` writes (or checks) the Grafana JSON.

It builds nothing into the service and has no config section: the dashboards are files
Grafana provisions, and links from findings to their panels take ``server.grafana_url``.
"""

from __future__ import annotations

from typing import Any

from mlvigil.core.plugin import Command, Plugin

DASHBOARDS = Command(
    "dashboards",
    "write the Grafana dashboards as JSON (--check: verify the committed ones)",
    "dashboards.cli:add_cli",
)

PLUGIN: Plugin[Any] = Plugin(name="dashboards", commands=(DASHBOARDS,))
