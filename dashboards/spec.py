"""A small declarative layer over grafana-foundation-sdk: every mlvigil panel is a ``PanelSpec``.

The layer enforces the dashboards' conventions in one place rather than panel by panel:
the data source is the ``datasource`` template variable (file provisioning never resolves
``${DS_PROMETHEUS}``-style inputs), every panel has a unit, thresholds and a description,
and subject labels are multi-value template variables whose "All" value is ``.*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from grafana_foundation_sdk.builders import (
    bargauge,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import (
    common as common_b,
)
from grafana_foundation_sdk.builders import (
    dashboard as db,
)
from grafana_foundation_sdk.builders import (
    prometheus as prom,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

# Grafana release line the generated JSON targets; grafana-foundation-sdk is pinned to it
# (its PyPI versions carry epochs: an unpinned install resolves to the Grafana 10.1 types).
GRAFANA_VERSION = "11.6"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Template variables Grafana fills in; tests replace them to run the PromQL as-is.
RATE_INTERVAL = "$__rate_interval"
RANGE = "$__range"

PanelKind = Literal["timeseries", "stat", "statetimeline", "bargauge", "table"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Step:
    """A threshold step: from ``value`` (None = minus infinity) upwards the colour is ``color``."""

    value: float | None
    color: str


@dataclass(frozen=True)
class PanelSpec:
    id: int
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    thresholds: tuple[Step, ...]
    kind: PanelKind = "timeseries"
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    # Value -> (text, colour), e.g. verdicts 0/1/2.
    mappings: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Draw the thresholds on time series (scores against their limits).
    show_thresholds: bool = False


@dataclass(frozen=True)
class Variable:
    """A subject label as a template variable: values of ``label`` on ``metric``."""

    name: str
    label: str
    metric: str
    description: str

    @property
    def query(self) -> str:
        return f"label_values({self.metric}, {self.label})"


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    panels: tuple[PanelSpec, ...]
    tags: tuple[str, ...] = ()

    def panel(self, panel_id: int) -> PanelSpec:
        for p in self.panels:
            if p.id == panel_id:
                return p
        raise KeyError(f"{self.uid} has no panel {panel_id}")


def _thresholds(steps: tuple[Step, ...]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=s.value, color=s.color) for s in steps])
    )


def _panel(spec: PanelSpec, x: int, y: int) -> Any:
    builder: Any
    if spec.kind == "timeseries":
        builder = timeseries.Panel()
        if spec.show_thresholds:
            builder = builder.thresholds_style(
                common_b.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
            )
    elif spec.kind == "stat":
        builder = stat.Panel().color_mode(cm.BigValueColorMode.BACKGROUND)
    elif spec.kind == "statetimeline":
        builder = statetimeline.Panel()
    elif spec.kind == "bargauge":
        builder = bargauge.Panel()
    else:
        builder = table.Panel()
    builder = (
        builder.id(spec.id)
        .title(spec.title)
        .description(spec.description)
        .datasource(DATASOURCE)
        .unit(spec.unit)
        .thresholds(_thresholds(spec.thresholds))
        .grid_pos(dm.GridPos(h=spec.height, w=spec.width, x=x, y=y))
    )
    if spec.min is not None:
        builder = builder.min(spec.min)
    if spec.max is not None:
        builder = builder.max(spec.max)
    if spec.mappings:
        builder = builder.mappings(
            [
                dm.ValueMap(
                    options={
                        value: dm.ValueMappingResult(text=text, color=color, index=i)
                        for i, (value, (text, color)) in enumerate(spec.mappings.items())
                    }
                )
            ]
        )
    for i, q in enumerate(spec.queries):
        target = prom.Dataquery().expr(q.expr).ref_id(chr(ord("A") + i)).datasource(DATASOURCE)
        if q.legend:
            target = target.legend_format(q.legend)
        target = target.instant() if q.instant or spec.kind in ("table",) else target.range()
        builder = builder.with_target(target)
    return builder


def build(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard as Grafana JSON (a dict), panels laid out left to right, top to bottom."""
    dash = (
        db.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(["mlvigil", *spec.tags])
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    for v in spec.variables:
        dash = dash.with_variable(
            db.QueryVariable(v.name)
            .label(v.name.replace("_", " ").capitalize())
            .description(v.description)
            .datasource(DATASOURCE)
            .query(v.query)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dm.VariableOption(selected=True, text="All", value="$__all"))
        )
    x = y = row_h = 0
    for p in spec.panels:
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        dash = dash.with_panel(_panel(p, x, y))
        x += p.width
        row_h = max(row_h, p.height)
    out: dict[str, Any] = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    return out


def render(spec: DashboardSpec) -> str:
    """Stable JSON text of the dashboard, as committed in dashboards/generated/."""
    return json.dumps(build(spec), indent=2, sort_keys=True) + "\n"
