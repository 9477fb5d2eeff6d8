"""The console's parts without a browser: the store's binned aggregate, the SVG plots with hostile
text, the login redirect target, the alert links, and the list's bounds over HTTP."""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from alerts.payloads import alert_from_finding, slack_message, webhook_payload
from mlvigil.app.console.auth import safe_next, session_value
from mlvigil.core import svg
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.records import RecordBatch
from mlvigil.core.store import Store
from mlvigil.core.store.duckdb import DuckDBStore
from tests.harness import ServiceHandle

pytestmark = pytest.mark.timeout(120)


def test_the_stores_grid_matches_the_reference_implementation(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "data")
    batch = RecordBatch()
    for step in range(250):
        for rank in range(3):
            loss = math.nan if step == 7 else 3.0 - step / 100
            batch.add(
                "training_steps",
                ts=1000.0 + step,
                run_id="r",
                step=step,
                rank=rank,
                step_time_s=1.0 + rank,
                loss=loss,
            )
    batch.add("training_steps", ts=1.0, run_id="other", step=10_000, rank=0, step_time_s=9.0)
    store.append(batch)
    try:
        args = {"x": "step", "group": "rank", "values": ["step_time_s", "loss"], "where": {"run_id": "r"}}
        fast = store.grid("training_steps", bins=100, integer_x=True, **args)  # type: ignore[arg-type]
        slow = Store.grid(store, "training_steps", bins=100, integer_x=True, **args)  # type: ignore[arg-type]
        assert (fast.lo, fast.hi, fast.bins) == (slow.lo, slow.hi, slow.bins) == (0.0, 250.0, 100)
        assert fast.cells.keys() == slow.cells.keys() and len(fast.cells) == 300
        for key, (n, means) in fast.cells.items():
            assert n == slow.cells[key][0]
            assert means == pytest.approx(slow.cells[key][1])
        # Bin 2 holds steps 5..7; step 7's NaN loss is left out of the mean, not propagated.
        assert fast.cells[(0, 2)][1][1] == pytest.approx(3.0 - 5.5 / 100)
        # Fewer integer steps than bins: one bin per step.
        few = store.grid(
            "training_steps",
            bins=100,
            integer_x=True,
            where={"run_id": "r", "step": [0, 1, 2]},
            **{k: v for k, v in args.items() if k != "where"},
        )  # type: ignore[arg-type]
        assert few.bins == 3 and {b for _, b in few.cells} == {0, 1, 2}
        assert (
            store.grid(
                "training_steps",
                bins=10,
                where={"run_id": "none"},
                **{k: v for k, v in args.items() if k != "where"},
            ).cells
            == {}
        )  # type: ignore[arg-type]
    finally:
        store.close()


def test_plots_escape_text_and_survive_empty_or_flat_data() -> None:
    hostile = '<script>alert(1)</script>"'
    out = svg.bars([hostile], [0.5], [0.25])
    assert "<script>" not in out and "&lt;script&gt;" in out
    chart = svg.LineChart(
        series=[svg.Series(hostile, [0.0, 1.0], [None, 2.0])], markers=[svg.Marker(1.0, 2.0, hostile)]
    )
    out = svg.line_chart(chart)
    assert "<script>" not in out and out.count("<polyline") == 1
    assert "no data" in svg.line_chart(svg.LineChart())
    flat = svg.heatmap(["rank 0", "rank 1"], [0, 1, 2], [[1.0, 1.0], [1.0, None]])
    assert flat.count('class="cell"') == 2  # a row of equal cells merges into one rect
    assert "<script>" not in svg.heatmap([hostile], [0, 1], [[1.0]])


def test_login_only_returns_to_a_console_page() -> None:
    assert safe_next("/ui/findings?kind=straggler") == "/ui/findings?kind=straggler"
    for bad in ("https://evil.example/", "//evil.example/ui/", "/api/v1/findings", "/ui\\..\\", "", None):
        assert safe_next(bad) == "/ui/findings"
    token = "secret-token-xyz"
    assert session_value(token) != session_value(token + "2") and token not in session_value(token)


def test_alerts_link_the_findings_page_and_its_grafana_panel() -> None:
    f = Finding(
        kind="straggler",
        severity=Severity.WARNING,
        subject={"run_id": "job-1", "rank": "6"},
        summary="rank 6 is slow",
        started_at=1_700_000_000.0,
    )
    alert = alert_from_finding(f, "https://mlvigil.example/", None, "https://grafana.example")
    assert alert.generator_url == f"https://mlvigil.example/ui/findings/{f.id}"
    assert alert.annotations["console_url"] == alert.generator_url
    assert alert.annotations["dashboard_url"].startswith(
        "https://grafana.example/d/mlvigil-training/mlvigil-training-runs?orgId=1&viewPanel=panel-3"
        "&var-run_id=job-1&var-rank=6&from=1700000000000&to=now"
    )
    payload = webhook_payload("hook", "g", {}, [alert], "https://mlvigil.example")
    assert payload["alerts"][0]["generatorURL"] == alert.generator_url
    buttons = [
        e for b in slack_message(payload, [alert])["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert [b["text"]["text"] for b in buttons] == ["Open finding", "Dashboard", "Finding (API)"]


def test_list_filters_and_pages_are_bounded(service: ServiceHandle) -> None:
    def status(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(service.api + path, timeout=10) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    assert status("/ui/findings")[0] == 200
    for path, says in (
        ("/ui/findings?page=201", "page: from 1 to 200"),
        ("/ui/findings?page=x", "page: a whole number"),
        ("/ui/findings?since=forever", "since &#x27;forever&#x27;: a duration"),
        ("/ui/findings?severity=loud", "severity"),
        ("/ui/findings?" + "&".join(f"label=a{i}%3D1" for i in range(9)), "at most 8"),
        ("/ui/gpus/GPU-1?hours=0", "hours"),
    ):
        code, body = status(path)
        assert code == 400 and says in body, (path, code)
    assert status("/ui/findings/" + "x" * 300)[0] == 404
    assert status("/ui/findings/0123456789abcdef")[0] == 404
    assert status("/ui/static/../../etc/passwd")[0] == 404
    code, body = status("/ui/monitors")
    assert code == 200 and "No drift monitors" in body


def test_monitor_statistics_are_recorded_and_still_drawn_after_a_restart(
    service_factory: Callable[..., ServiceHandle],
) -> None:
    import re

    import numpy as np

    from tests import console_feed

    svc = service_factory({"detectors": {"interval": "1h"}})  # evaluated on demand
    svc.post(
        "/api/v1/monitors",
        {
            "name": "credit-features",
            "kind": "data",
            "service": "credit",
            "model": "credit",
            "reference": {"dataset": True},
            "window": {"size": 200, "min_size": 100},
        },
    )
    rng = np.random.default_rng(4)
    x, p, _ = console_feed._credit(rng, 600)
    svc.post(
        "/api/v1/monitors/credit-features/reference", {"rows": [{"f0": a, "f1": b} for a, b in x.tolist()]}
    )

    def recorded() -> list[dict[str, object]]:
        return list(svc.get("/api/v1/records/monitor_stats", monitor="credit-features")["rows"])

    for n in (1, 2):
        x, p, _ = console_feed._credit(rng, 200, hard=n == 2)
        console_feed._send_inferences(svc, x, p, first=200 * n)
        svc.wait_for(lambda n=n: svc.stats()["inferences"] >= 200 * n)
        svc.evaluate()
        svc.wait_for(lambda n=n: len(recorded()) == n)
    rows = recorded()
    assert [r["statistic"] for r in rows] == ["p-value", "p-value"]
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "drift" and rows[1]["value"] < 0.05

    def points_drawn() -> int:
        status, _, body = svc.request("GET", "/ui/monitors")
        assert status == 200
        section = body.decode().split('data-monitor="credit-features"', 1)[1].split("</section>", 1)[0]
        polyline = re.search(r'<polyline class="line"[^>]* points="([^"]*)"', section)
        return len(polyline.group(1).split()) if polyline else 0

    assert points_drawn() == 2
    svc.restart()  # no evaluation since: the plot comes from the store
    assert points_drawn() == 2
