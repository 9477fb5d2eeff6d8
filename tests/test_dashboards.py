"""The generated dashboards: up to date with the code, and following the conventions every panel must."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from dashboards.cli import main as generate
from dashboards.definitions import DASHBOARDS
from dashboards.links import FALLBACK, PANELS, panel_url, slug

GENERATED = Path(__file__).resolve().parents[1] / "dashboards" / "generated"
DESIGN_KINDS = {
    "data_drift",
    "prediction_drift",
    "performance_drift",
    "llm_drift",
    "training_slowdown",
    "straggler",
    "loss_anomaly",
    "gpu_fault",
    "gpu_degraded",
    "carbon_overrun",
    "carbon_forecast_overrun",
}
# Counters read as running totals on purpose: carbon totals are recomputed from the store on
# every evaluation (detectors/carbon/metrics.py), so they never reset, and a budget burn-down
# needs the total itself, not a rate.
RUNNING_TOTALS = {"mlvigil_carbon_emissions_grams_total"}
COUNTER = re.compile(r"\b(mlvigil_\w+_(?:total|bucket))\b")


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(GENERATED.glob("*.json"))]


def _enclosing_function(expr: str, pos: int) -> str:
    depth = 0
    for i in range(pos - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth == 0:
                return re.findall(r"(\w*)\s*$", expr[:i])[0]
            depth -= 1
    return ""


def test_committed_json_matches_the_code(tmp_path: Path) -> None:
    assert generate(["--check"]) == 0, "run: python -m dashboards"
    assert generate(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in GENERATED.glob("*.json"))
    assert {d["uid"] for d in _dashboards()} == {
        "mlvigil-fleet",
        "mlvigil-drift",
        "mlvigil-llm",
        "mlvigil-training",
        "mlvigil-gpu",
        "mlvigil-carbon",
    }


@pytest.mark.parametrize("dash", _dashboards(), ids=lambda d: d["uid"])
def test_datasource_is_a_template_variable(dash: dict[str, Any]) -> None:
    text = json.dumps(dash)
    assert "DS_PROMETHEUS" not in text and "__inputs" not in text
    ds = dash["templating"]["list"][0]
    assert (ds["name"], ds["type"], ds["query"]) == ("datasource", "datasource", "prometheus")
    for panel in dash["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    for var in dash["templating"]["list"][1:]:
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}"
        assert var["multi"] and var["includeAll"] and var["allValue"] == ".*"


@pytest.mark.parametrize("dash", _dashboards(), ids=lambda d: d["uid"])
def test_panels_have_units_thresholds_descriptions_and_known_variables(dash: dict[str, Any]) -> None:
    variables = {v["name"] for v in dash["templating"]["list"]}
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique (findings link to them)"
    for panel in dash["panels"]:
        where = f"{dash['uid']} panel {panel['id']} {panel['title']!r}"
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults.get("unit"), where
        assert defaults["thresholds"]["steps"] and defaults["thresholds"]["steps"][0]["value"] is None, where
        assert len(panel.get("description", "")) > 30, where
        assert panel["targets"], where
        for target in panel["targets"]:
            used = set(re.findall(r"\$(?!__)(\w+)", target["expr"]))
            assert used <= variables, (where, used - variables)
            # Subject variables are regex-matched (multi-value and All = .*).
            for name in used:
                assert re.search(rf'=~"\${name}"', target["expr"]), (where, name)


@pytest.mark.parametrize("dash", _dashboards(), ids=lambda d: d["uid"])
def test_counters_are_wrapped_in_rate_or_increase(dash: dict[str, Any]) -> None:
    for panel in dash["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for m in COUNTER.finditer(expr):
                if m.group(1) in RUNNING_TOTALS:
                    continue
                fn = _enclosing_function(expr, m.start())
                assert fn in ("rate", "increase", "irate"), (dash["uid"], panel["title"], m.group(1), fn)


def test_counter_check_catches_a_bare_counter() -> None:
    assert _enclosing_function("sum(mlvigil_x_total)", 4) == "sum"
    assert _enclosing_function('sum(rate(mlvigil_x_total{a="b"}[5m]))', 9) == "rate"


def test_every_finding_kind_links_to_an_existing_panel() -> None:
    assert set(PANELS) >= DESIGN_KINDS
    by_uid = {d.uid: d for d in DASHBOARDS}
    for kind, ref in [*PANELS.items(), ("other", FALLBACK)]:
        spec = by_uid[ref.uid]
        assert spec.title == ref.title, kind
        spec.panel(ref.panel_id)
        names = {v.name for v in spec.variables}
        assert {var for var, _ in ref.variables} <= names, kind


def test_panel_url_sets_subject_variables_and_time() -> None:
    url = panel_url(
        "gpu_fault",
        {"host": "node-1", "gpu_uuid": "GPU-abc", "gpu_index": "6"},
        "https://grafana.example.com/",
        start=1_700_000_000.0,
        end=1_700_000_600.0,
    )
    assert url == (
        "https://grafana.example.com/d/mlvigil-gpu/mlvigil-gpu-health?orgId=1&viewPanel=panel-1"
        "&var-host=node-1&var-gpu=6&from=1700000000000&to=1700000600000"
    )
    carbon = panel_url("carbon_overrun", {"team": "research team"}, "http://g")
    assert carbon.endswith("viewPanel=panel-5&var-scope=team&var-subject=research+team")
    drift = panel_url("data_drift", {"service": "s", "monitor": "fraud features"}, "http://g")
    assert "/d/mlvigil-drift/" in drift and "var-monitor=fraud+features" in drift
    unknown = panel_url("something_new", {}, "http://g")
    assert (
        unknown
        == "http://g/d/mlvigil-fleet/mlvigil-fleet-overview?orgId=1&viewPanel=panel-3&var-kind=something_new"
    )
    assert slug("mlvigil / Training runs") == "mlvigil-training-runs"
