"""Budgets, forecasts, NVML attribution and serving intensity, with their arithmetic checked."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from detectors.carbon import (
    CarbonBudgetDetector,
    CarbonConfig,
    CarbonIntensity,
    ServingCarbonDetector,
    forecast,
)
from detectors.carbon.budget import period_bounds
from detectors.carbon.intensity import UnknownLocation
from detectors.carbon.plugin import build
from detectors.carbon.sources import attribute_gpu_energy
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.metrics import Telemetry
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.duckdb import DuckDBStore
from tests.harness import SOURCE_PATH

J_PER_KWH = 3.6e6
CI = CarbonIntensity(100.0, "FRA", None, "configured")  # 100 g/kWh: easy arithmetic


def carbon_config(**kw: Any) -> CarbonConfig:
    return CarbonConfig.model_validate(kw)


def handler_points(
    b: RecordBatch,
    tracker: str,
    ts: float,
    joules: float,
    grams: float,
    *,
    progress: float | None = None,
    duration: float | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    attrs = {"mlvigil.carbon.tracker_run": tracker, "mlvigil.carbon.project": "p", **(labels or {})}
    raw = json.dumps(attrs)
    b.add("metric_points", ts=ts, name="mlvigil.carbon.energy", value=joules, attributes=raw, kind="sum")
    b.add("metric_points", ts=ts, name="mlvigil.carbon.emissions", value=grams, attributes=raw, kind="sum")
    if progress is not None:
        b.add("metric_points", ts=ts, name="mlvigil.carbon.progress", value=progress, attributes=raw)
    if duration is not None:
        b.add("metric_points", ts=ts, name="mlvigil.carbon.duration", value=duration, attributes=raw)


# -- forecast ------------------------------------------------------------------------------
def test_forecast_arithmetic_and_band() -> None:
    # 4 intervals of 10% progress: 10, 10, 30, 30 g -> total 80 g at 40%
    p = [0.0, 0.1, 0.2, 0.3, 0.4]
    e = [0.0, 10.0, 20.0, 50.0, 80.0]
    f = forecast(p, e, z=2.0, recent=2)
    assert f is not None
    assert f.projected == pytest.approx(80.0 / 0.4)  # 200
    assert f.rate_recent == pytest.approx(60.0 / 0.2)  # last 2 intervals: 300 g per unit progress
    assert f.rate_std == pytest.approx(0.0)
    assert f.lower == pytest.approx(80.0 + 0.6 * 200.0)  # min(rate_mean, rate_recent)
    assert f.upper == pytest.approx(80.0 + 0.6 * 300.0)  # max(...)
    g = forecast(p, e, z=1.0, recent=4)
    assert g is not None
    mean = 80.0 / 0.4
    std = math.sqrt(sum(0.1 * (r - mean) ** 2 for r in (100.0, 100.0, 300.0, 300.0)) / 0.4)
    assert g.rate_std == pytest.approx(std)  # 100
    assert g.upper == pytest.approx(80.0 + 0.6 * (mean + std))
    assert g.lower == pytest.approx(80.0 + 0.6 * (mean - std))
    assert forecast([0.0], [5.0]) is None  # no progress yet


def test_forecast_folds_stalled_intervals() -> None:
    # energy spent while progress stood still counts toward the next interval's rate
    f = forecast([0.1, 0.1, 0.2], [10.0, 15.0, 20.0], recent=5)
    assert f is not None and f.intervals == 1 and f.rate_recent == pytest.approx(100.0)


# -- budgets on handler data ---------------------------------------------------------------
def test_overrun_fires_at_the_budget_and_names_the_numbers(store: DuckDBStore) -> None:
    b = RecordBatch()
    for i in range(1, 6):
        handler_points(
            b, "t1", float(i), joules=1.0e6 * i, grams=200.0 * i, labels={"mlvigil.train.run_id": "r1"}
        )
    store.append(b)
    cfg = carbon_config(
        budgets=[
            {"name": "g", "run_id": "r1", "kg_co2e": 1.0},  # 1000 g: reached exactly at i=5
            {"name": "e", "run_id": "r1", "kwh": 2.0},  # 7.2 MJ: not reached (5 MJ)
        ]
    )
    det = CarbonBudgetDetector(cfg, CI)
    found = det.evaluate(store, 10.0)
    assert [(f.kind, f.key) for f in found] == [("carbon_overrun", "g:co2e")]
    f = found[0]
    assert f.subject == {"run_id": "r1"} and str(f.severity) == "critical"
    assert f.evidence["actual"] == 1000.0 and f.evidence["limit"] == 1000.0 and f.evidence["ratio"] == 1.0
    # The cumulative curve behind it (the console draws it): each measurement, ending at the total.
    assert f.evidence["curve"] == {
        "ts": [1.0, 2.0, 3.0, 4.0, 5.0],
        "value": [200.0, 400.0, 600.0, 800.0, 1000.0],
    }
    # one step earlier it was under budget
    assert det.evaluate(store, 4.5) == []


def test_forecast_warning_from_progress_and_the_engine_lifecycle(store: DuckDBStore) -> None:
    b = RecordBatch()
    for i in range(1, 11):  # 10 g per 1% progress, 10% done: 100 g, projection 1000 g
        handler_points(
            b, "t", float(i), joules=0.0, grams=10.0 * i, progress=i / 100, labels={"mlvigil.model.name": "m"}
        )
    store.append(b)
    cfg = carbon_config(budgets=[{"name": "m", "model": "m", "kg_co2e": 0.9}], min_progress=0.05)
    det = CarbonBudgetDetector(cfg, CI)
    book = FindingBook(store)
    found = det.evaluate(store, 11.0)
    assert [f.kind for f in found] == ["carbon_forecast_overrun"]
    ev = found[0].evidence
    assert ev["projected"] == pytest.approx(100.0 / 0.10) and ev["limit"] == 900.0
    assert ev["lower"] == pytest.approx(1000.0) and ev["upper"] == pytest.approx(1000.0)  # steady rate
    assert [t for _, t in book.record(det.name, found, 11.0)] == ["fired"]
    # below min_progress: no judgement yet
    assert CarbonBudgetDetector(cfg.model_copy(update={"min_progress": 0.2}), CI).evaluate(store, 11.0) == []
    # the job slows its power: 10 more points at 2 g per 1% -> projection falls under the budget
    b = RecordBatch()
    for i in range(11, 41):
        handler_points(
            b,
            "t",
            float(i),
            joules=0.0,
            grams=100.0 + 2.0 * (i - 10),
            progress=i / 100,
            labels={"mlvigil.model.name": "m"},
        )
    store.append(b)
    found = det.evaluate(store, 41.0)
    assert found == []  # 160 g at 40% -> 400 g projected
    assert [t for _, t in book.record(det.name, found, 41.0)] == ["resolved"]


def test_star_budget_and_expected_duration(store: DuckDBStore) -> None:
    b = RecordBatch()
    for i in range(1, 5):  # run a: 100 g per 60 s of 600 s expected; run b: a tenth of it
        handler_points(
            b,
            "ta",
            60.0 * i,
            joules=0.0,
            grams=100.0 * i,
            duration=60.0 * i,
            labels={"mlvigil.train.run_id": "a"},
        )
        handler_points(
            b,
            "tb",
            60.0 * i,
            joules=0.0,
            grams=10.0 * i,
            duration=60.0 * i,
            labels={"mlvigil.train.run_id": "b"},
        )
    store.append(b)
    cfg = carbon_config(budgets=[{"name": "each", "run_id": "*", "kg_co2e": 0.5, "expected_duration": "10m"}])
    found = CarbonBudgetDetector(cfg, CI).evaluate(store, 300.0)
    assert [(f.kind, f.subject) for f in found] == [("carbon_forecast_overrun", {"run_id": "a"})]
    assert found[0].evidence["progress"] == pytest.approx(240.0 / 600.0)
    assert found[0].evidence["projected"] == pytest.approx(400.0 / 0.4)


def test_monthly_team_budget_counts_this_month_only(store: DuckDBStore) -> None:
    start, end = period_bounds("month", 1_700_000_000.0)  # November 2023
    now = start + (end - start) / 4  # a quarter of the month gone
    b = RecordBatch()
    team = {"mlvigil.team": "research"}
    handler_points(b, "t", start - 86400, joules=0.0, grams=5000.0, labels=team)  # last month: not counted
    handler_points(b, "t", start + 3600, joules=0.0, grams=5300.0, labels=team)
    handler_points(b, "t", now - 60, joules=0.0, grams=5600.0, labels=team)
    store.append(b)
    cfg = carbon_config(budgets=[{"name": "monthly", "team": "research", "kg_co2e": 2.0, "period": "month"}])
    det = CarbonBudgetDetector(cfg, CI)
    found = det.evaluate(store, now)
    assert [f.kind for f in found] == ["carbon_forecast_overrun"]
    ev = found[0].evidence
    assert ev["actual"] == pytest.approx(600.0)
    assert ev["progress"] == pytest.approx(0.25)
    assert ev["projected"] == pytest.approx(2400.0)


# -- NVML energy with fake GPUs ------------------------------------------------------------
def gpu_fixture(store: DuckDBStore) -> None:
    b = RecordBatch()
    for t in range(0, 251, 10):  # GPU-A at 300 W; the counter does not start at 0
        b.add(
            "metric_points",
            ts=float(t),
            host="node1",
            hw_id="GPU-A",
            name="hw.energy",
            unit="J",
            kind="sum",
            monotonic=True,
            value=1.0e6 + 300.0 * t,
        )
    for t in range(0, 101, 10):  # GPU-B at 500 W, counter reset (driver reload) at t=60
        value = 500.0 * t if t <= 50 else 100.0 + 500.0 * (t - 60)
        b.add("metric_points", ts=float(t), host="node1", hw_id="GPU-B", name="hw.energy", value=value)
    for k in range(200):  # r1 on GPU-A over [0, 200]
        b.add(
            "training_steps",
            ts=float(k),
            run_id="r1",
            step=k + 1,
            k8s_pod="pod-1",
            host="node1",
            gpu_uuid="GPU-A",
            step_time_s=1.0,
        )
    for k in range(50):  # r2 shares GPU-A over [100, 150]
        b.add(
            "training_steps",
            ts=100.0 + k,
            run_id="r2",
            step=k + 1,
            k8s_pod="pod-2",
            host="node1",
            gpu_uuid="GPU-A",
            step_time_s=1.0,
        )
    for k in range(100):  # r3 alone on GPU-B over [0, 100]
        b.add(
            "training_steps",
            ts=float(k),
            run_id="r3",
            step=k + 1,
            k8s_pod="pod-3",
            host="node1",
            gpu_uuid="GPU-B",
            step_time_s=1.0,
        )
    store.append(b)


def test_nvml_energy_is_split_among_runs_active_on_each_gpu(store: DuckDBStore) -> None:
    gpu_fixture(store)
    att = attribute_gpu_energy(store, 0.0, 1000.0, grams_per_joule=100.0 / J_PER_KWH, max_step_gap=5.0)
    runs = {r: sum(t.total_joules for t in ts) for r, ts in att.runs().items()}
    # r1: alone 150 s + half of 50 s at 300 W; r2: half of 50 s; r3: 90 s at 500 W (reset interval dropped)
    assert runs["r1"] == pytest.approx(300.0 * 150 + 300.0 * 50 / 2)
    assert runs["r2"] == pytest.approx(300.0 * 50 / 2)
    assert runs["r3"] == pytest.approx(500.0 * 90)
    assert att.idle_joules["GPU-A"] == pytest.approx(300.0 * 50)  # 200..250: no run
    pods = {p: sum(t.total_joules for t in ts) for p, ts in att.pods().items()}
    assert pods["pod-2"] == pytest.approx(runs["r2"])
    r1 = att.runs()["r1"][0]
    assert r1.total_grams == pytest.approx(r1.total_joules / J_PER_KWH * 100.0)


def test_nvml_budgets_overrun_and_forecast_from_steps(store: DuckDBStore) -> None:
    gpu_fixture(store)
    cfg = carbon_config(
        max_step_gap=5.0,
        budgets=[
            {"name": "each", "run_id": "*", "kwh": 45000.0 / J_PER_KWH},  # r3 reaches it exactly, r1 exceeds
            {"name": "r1-plan", "run_id": "r1", "kwh": 90000.0 / J_PER_KWH, "planned_steps": 400},
        ],
    )
    found = CarbonBudgetDetector(cfg, CI).evaluate(store, 300.0)
    got = {(f.kind, f.key, f.subject["run_id"]) for f in found}
    assert got == {
        ("carbon_overrun", "each:energy", "r1"),
        ("carbon_overrun", "each:energy", "r3"),
        ("carbon_forecast_overrun", "r1-plan:energy", "r1"),
    }
    fc = next(f for f in found if f.kind == "carbon_forecast_overrun").evidence
    assert fc["source"] == "nvml" and fc["carbon_intensity_g_per_kwh"] == 100.0
    assert fc["progress"] == pytest.approx(200 / 400)  # step 200 done by t=200
    assert fc["projected"] == pytest.approx(52500.0 / 0.5)


def test_pue_and_intensity_apply_to_nvml_grams(store: DuckDBStore) -> None:
    gpu_fixture(store)
    cfg = carbon_config(pue=1.5, budgets=[{"name": "r2", "run_id": "r2", "kg_co2e": 1e-3}])
    found = CarbonBudgetDetector(cfg, CI).evaluate(store, 300.0)
    grams = 7500.0 / J_PER_KWH * 100.0 * 1.5  # 0.3125 g
    assert found == []
    cfg = carbon_config(pue=1.5, budgets=[{"name": "r2", "run_id": "r2", "kg_co2e": grams / 1000.0}])
    (f,) = CarbonBudgetDetector(cfg, CI).evaluate(store, 300.0)
    assert f.evidence["actual"] == pytest.approx(grams)


# -- serving -------------------------------------------------------------------------------
def test_serving_intensity_per_requests_and_tokens(store: DuckDBStore) -> None:
    b = RecordBatch()
    for i in range(400):
        b.add(
            "llm_calls",
            ts=1000.0 + i,
            service="chat",
            request_model="llama",
            input_tokens=300,
            output_tokens=200,
        )
    for t in (0.0, 1000.0, 1400.0):  # GPU-S at 250 W; 400 s in the window -> 100 kJ
        b.add("metric_points", ts=t, hw_id="GPU-S", name="hw.energy", value=5e5 + 250.0 * t)
    store.append(b)
    cfg = carbon_config(
        serving=[
            {
                "name": "chat",
                "service": "chat",
                "g_per_1k_requests": 7.0,
                "g_per_1m_tokens": 10.0,
                "window": 400,
                "gpu_uuids": ["GPU-S"],
            }
        ]
    )
    det = ServingCarbonDetector(cfg, CI)
    found = {f.key: f for f in det.evaluate(store, 1400.0)}
    grams = 100_000.0 / J_PER_KWH * 100.0  # 2.78 g over the window
    # 6.94 g per 1k requests (under 7) and 13.9 g per 1M tokens (over 10)
    assert set(found) == {"chat:g_per_1m_tokens"}
    ev = found["chat:g_per_1m_tokens"].evidence
    assert ev["grams"] == pytest.approx(grams) and ev["requests"] == 400 and ev["tokens"] == 400 * 500
    assert ev["value"] == pytest.approx(grams / 200_000 * 1e6)
    strict = cfg.model_copy(
        update={"serving": [cfg.serving[0].model_copy(update={"g_per_1k_requests": 6.9})]}
    )
    keys = {f.key for f in ServingCarbonDetector(strict, CI).evaluate(store, 1400.0)}
    assert keys == {"chat:g_per_1k_requests", "chat:g_per_1m_tokens"}
    too_few = cfg.model_copy(update={"serving": [cfg.serving[0].model_copy(update={"min_requests": 401})]})
    assert ServingCarbonDetector(too_few, CI).evaluate(store, 1400.0) == []


def test_serving_from_handler_series_of_the_model(store: DuckDBStore) -> None:
    b = RecordBatch()
    for i in range(200):
        b.add("inferences", ts=100.0 + i, service="api", model="clf")
    handler_points(
        b, "t", 10.0, joules=0.0, grams=3.0, labels={"mlvigil.model.name": "clf"}
    )  # before the window
    handler_points(b, "t", 299.0, joules=0.0, grams=4.0, labels={"mlvigil.model.name": "clf"})
    handler_points(b, "u", 299.0, joules=0.0, grams=50.0, labels={"mlvigil.model.name": "other"})
    store.append(b)
    cfg = carbon_config(serving=[{"name": "clf", "model": "clf", "g_per_1k_requests": 4.0, "window": 250}])
    (f,) = ServingCarbonDetector(cfg, CI).evaluate(store, 300.0)
    assert f.evidence["grams"] == pytest.approx(1.0) and f.evidence["value"] == pytest.approx(5.0)
    assert f.subject == {"model": "clf"} and f.evidence["source"] == "codecarbon"


# -- config, build and metrics -------------------------------------------------------------
def test_config_rejects_ambiguous_budgets() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        carbon_config(budgets=[{"name": "x", "run_id": "a", "team": "t", "kwh": 1}])
    with pytest.raises(ValidationError, match="unique"):
        carbon_config(budgets=[{"name": "x", "run_id": "a"}, {"name": "x", "team": "t"}])
    with pytest.raises(ValidationError):
        carbon_config(budgets=[{"name": "x", "run_id": "a", "kg": 1}])  # unknown key
    with pytest.raises(ValidationError, match="alpha-3"):
        carbon_config(country_iso_code="FR")


def test_build_exports_prometheus_metrics(store: DuckDBStore) -> None:
    ctx: Any = SimpleNamespace(telemetry=Telemetry())
    assert build(carbon_config(), ctx) == []
    with pytest.raises(UnknownLocation):
        build(carbon_config(country_iso_code="XYZ", budgets=[{"name": "b", "run_id": "*"}]), ctx)
    gpu_fixture(store)
    detectors = build(
        carbon_config(
            country_iso_code="FRA",
            max_step_gap=5,
            budgets=[{"name": "b", "run_id": "r1", "kg_co2e": 1.0, "planned_steps": 400}],
        ),
        ctx,
    )
    assert [d.name for d in detectors] == ["carbon_budgets"]
    detectors[0].evaluate(store, 300.0)
    text = ctx.telemetry.exposition().decode()
    assert 'mlvigil_carbon_energy_joules_total{scope="run_id",source="nvml",subject="r1"} 52500.0' in text
    fra = 56.039  # codecarbon's bundled figure for France
    line = next(x for x in text.splitlines() if x.startswith("mlvigil_carbon_emissions_grams_total{"))
    assert float(line.split()[-1]) == pytest.approx(52500.0 / J_PER_KWH * fra, rel=1e-4)
    assert 'mlvigil_carbon_budget_grams{budget="b",scope="run_id",subject="r1"} 1000.0' in text
    assert 'mlvigil_carbon_forecast_grams{bound="projected",budget="b",scope="run_id",subject="r1"}' in text


def test_serve_reports_an_unknown_country_in_one_line(tmp_path: Path) -> None:
    """A setting the carbon builder cannot use stops the service with exit 2 and one plain
    line naming the section, not a traceback."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "detectors:\n  carbon:\n    country_iso_code: XYZ\n"
        "    budgets: [{name: b, run_id: r, kg_co2e: 1.0}]\n"
    )
    env = dict(
        os.environ,
        PYTHONPATH=SOURCE_PATH,
        MLVIGIL_DATA_DIR=str(tmp_path / "data"),
        MLVIGIL_API_ADDR="127.0.0.1:0",
        MLVIGIL_OTLP_HTTP_ADDR="127.0.0.1:0",
        MLVIGIL_OTLP_GRPC_ADDR="127.0.0.1:0",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mlvigil", "serve", "-c", str(cfg)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "config: detectors.carbon: country_iso_code 'XYZ'" in proc.stderr
