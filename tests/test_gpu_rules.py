"""One test per GPU health rule, each driven by a fake scenario through the real path:
fake NVML -> sampler -> OTLP request -> collector normaliser -> DuckDB -> detector."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_health.config import GpuRules
from gpu_health.fake import Scenario, builtin_scenario
from gpu_health.health import GpuHealthDetector
from gpu_health.simulate import Simulation
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding
from mlvigil.core.store.duckdb import DuckDBStore


def _run(
    tmp_path: Path, scenario: str | Scenario, seconds: float, step: float = 2.0, rules: GpuRules | None = None
) -> tuple[list[Finding], Simulation, DuckDBStore]:
    store = DuckDBStore(tmp_path)
    sim = Simulation.start(builtin_scenario(scenario) if isinstance(scenario, str) else scenario, store)
    sim.run(seconds, step)
    return list(GpuHealthDetector(rules).evaluate(store, sim.now)), sim, store


def _keys(findings: list[Finding]) -> set[tuple[str, str, str, str]]:
    return {(f.kind, str(f.severity), f.subject["gpu_index"], f.key) for f in findings}


def test_healthy_gpus_raise_nothing(tmp_path: Path) -> None:
    findings, sim, _ = _run(tmp_path, "healthy", 120)
    assert findings == []
    assert sim.latest is not None and sim.latest[1].unsupported == ["nvlink", "remapped_rows"]


def test_xid_classified_by_severity_and_held(tmp_path: Path) -> None:
    findings, sim, store = _run(tmp_path, "xid_mixed", 40)
    keys = _keys(findings)
    assert ("gpu_degraded", "warning", "1", "xid:degraded") in keys  # 94 contained ECC
    assert ("gpu_fault", "critical", "2", "xid:fault") in keys  # 48 double-bit ECC
    assert not any(k[2] == "0" for k in keys)  # 13 is the application's fault
    fault = next(f for f in findings if f.key == "xid:fault")
    assert fault.evidence["xids"] == [48] and fault.evidence["rule"] == "xid"
    assert fault.subject == {"host": "node-a", "gpu_uuid": sim.latest[2].uuid, "gpu_index": "2"}  # type: ignore[index]
    # The finding stays firing for the hold period, then resolves.
    book = FindingBook(store)
    detector = GpuHealthDetector(GpuRules.model_validate({"xid": {"hold": "60s"}, "ecc": {"enabled": False}}))
    fired = book.record(detector.name, detector.evaluate(store, sim.now), sim.now)
    assert {f.key for f, what in fired if what == "fired"} == {"xid:fault", "xid:degraded"}
    sim.run(30, 5.0)
    assert {f.key for f in detector.evaluate(store, sim.now)} == {"xid:fault", "xid:degraded"}
    sim.run(40, 5.0)  # 48 was at 20 s; now at 110 s, past the 60 s hold
    resolved = book.record(detector.name, detector.evaluate(store, sim.now), sim.now)
    assert {f.key for f, what in resolved if what == "resolved"} == {"xid:fault", "xid:degraded"}


def test_fall_off_bus_is_xid_79_and_lost(tmp_path: Path) -> None:
    findings, sim, _ = _run(tmp_path, "fall_off_bus", 40)
    assert _keys(findings) == {
        ("gpu_fault", "critical", "1", "xid:fault"),
        ("gpu_fault", "critical", "1", "gpu_lost:lost"),
    }
    lost = next(f for f in findings if f.key == "gpu_lost:lost")
    assert lost.evidence["cause"] == "GpuIsLost" and lost.evidence["since"] == pytest.approx(
        sim.clock.epoch + 22
    )


def test_gpu_that_stops_reporting_is_lost(tmp_path: Path) -> None:
    # After an agent restart a GPU off the bus is no longer enumerated: it goes silent.
    store = DuckDBStore(tmp_path)
    sim = Simulation.start(builtin_scenario("healthy"), store)
    sim.run(30, 2.0)
    silent = sim.sampler.gpus.pop(1)
    sim.run(60, 2.0)
    detector = GpuHealthDetector(GpuRules.model_validate({"lost": {"stale_after": "45s"}}))
    (finding,) = detector.evaluate(store, sim.now)
    assert finding.kind == "gpu_fault" and finding.subject["gpu_uuid"] == silent.identity.uuid
    assert finding.evidence["cause"] == "stopped_reporting"


def test_uncorrected_ecc(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "ecc_uncorrected", 60)
    (f,) = findings
    assert (f.kind, f.subject["gpu_index"], f.evidence["uncorrected_volatile"]) == ("gpu_fault", "0", 1.0)
    # Before the uncorrected error, corrected errors alone raise nothing.
    early, _, _ = _run(tmp_path / "early", "ecc_uncorrected", 30)
    assert early == []


def test_row_remap_pending_failed_and_retired_pages(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "memory_repair", 20)
    assert _keys(findings) == {
        ("gpu_degraded", "warning", "0", "memory_repair:remap_pending"),
        ("gpu_fault", "critical", "1", "memory_repair:remap_failure"),
        ("gpu_degraded", "warning", "2", "memory_repair:retirement_pending"),
        ("gpu_fault", "critical", "2", "memory_repair:retired_pages_limit"),
    }


def test_pcie_replay_rate_over_window(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "pcie_replay", 120)
    (f,) = findings
    assert f.key == "pcie_replay" and f.subject["gpu_index"] == "0"
    assert f.evidence["per_minute"] == pytest.approx(60.0, rel=0.05)  # GPU 1's 3/min stays under 8/min


def test_pcie_link_below_max_while_busy(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "pcie_downtrained", 60)
    (f,) = findings  # GPU 1 at Gen1 while idle is power saving, not a fault
    assert f.subject["gpu_index"] == "0" and (f.evidence["width"], f.evidence["width_max"]) == (8.0, 16.0)


def test_nvlink_errors_recoveries_and_down_links(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "nvlink_errors", 90)
    assert _keys(findings) == {
        ("gpu_degraded", "warning", "0", "nvlink:errors:3"),
        ("gpu_degraded", "warning", "0", "nvlink:recovery:5"),
        ("gpu_degraded", "warning", "1", "nvlink:links_down"),
    }
    errors = next(f for f in findings if f.key == "nvlink:errors:3")
    assert errors.evidence["errors"] == pytest.approx(176, abs=4)  # 2/s over the 88 s after the first point


def test_sustained_slowdown_and_temperature(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "thermal_slowdown", 120)
    assert _keys(findings) == {
        ("gpu_degraded", "warning", "0", "slowdown:hw_thermal_slowdown"),
        ("gpu_degraded", "warning", "0", "slowdown:sw_thermal_slowdown"),
        ("gpu_degraded", "warning", "0", "temperature:gpu"),
    }  # GPU 1's 4 s power brake is a transient
    temp = next(f for f in findings if f.key == "temperature:gpu")
    assert temp.evidence["limit_c"] == 84.0 and temp.evidence["max_c"] == 93.0


def test_clocks_held_under_max_while_busy(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "clocks_low", 60)
    (f,) = findings  # GPU 1 is power-capped: explained
    assert f.subject["gpu_index"] == "0"
    assert f.evidence["active_reasons"] == {"applications_clocks_setting": 30}


def test_power_past_limit(tmp_path: Path) -> None:
    findings, _, _ = _run(tmp_path, "power_over_limit", 30)
    (f,) = findings
    assert (f.subject["gpu_index"], f.evidence["peak_w"], f.evidence["limit_w"]) == ("0", 780.0, 700.0)


def test_rules_can_be_switched_off(tmp_path: Path) -> None:
    rules = GpuRules.model_validate({"power": {"enabled": False}})
    findings, _, _ = _run(tmp_path, "power_over_limit", 30, rules=rules)
    assert findings == []


H200_RECORDING = Path(__file__).parent / "fixtures" / "gpu" / "nvml_h200_recorded.yaml"


def test_a_real_h200_recording_replays_and_its_power_capped_load_is_routine(tmp_path: Path) -> None:
    """``mlvigil agent --record`` on a real NVIDIA H200 (driver 580.159.04): 20 s idle, 35 s
    of bf16 matrix products (649 TFLOP/s), idle again. Under that load the GPU sat at its
    700 W limit and NVML reported ``sw_power_cap`` while the SM clock fell from 1980 to
    1170-1470 MHz: routine, so no rule may fire; read as unexplained, the same clocks are."""
    scenario = Scenario.load(H200_RECORDING)
    findings, sim, store = _run(tmp_path, scenario, 80, step=1.0)
    assert sim.latest is not None
    gpu = sim.latest[0]
    assert gpu.name == "NVIDIA H200" and gpu.uuid.startswith("GPU-")
    assert gpu.unsupported == ["nvlink", "retired_pages"]  # as NVML answered on that machine
    assert findings == []

    points = store.query("metric_points", columns=["name", "value", "attributes"])
    util = [
        v for name, v in zip(points["name"], points["value"], strict=True) if name == "hw.gpu.utilization"
    ]
    assert max(util) >= 0.99 and min(util) == 0.0  # the load and the idle on either side replayed
    capped = GpuRules.model_validate({"clocks": {"max_clock_ratio": 0.8, "min_samples": 10}})
    assert list(GpuHealthDetector(capped).evaluate(store, sim.now)) == []  # explained by the power cap
    unexplained = GpuRules.model_validate(
        {"clocks": {"max_clock_ratio": 0.8, "min_samples": 10, "explained_by": []}}
    )
    (held,) = GpuHealthDetector(unexplained).evaluate(store, sim.now)
    assert held.kind == "gpu_degraded" and held.evidence["rule"] == "clocks_low"
    assert 0.55 < held.evidence["median_clock_ratio"] < 0.8
    store.close()
