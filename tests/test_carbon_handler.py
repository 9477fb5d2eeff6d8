"""The codecarbon output handler with the real codecarbon (offline, country set), through the
real OTLP decoding and normalisation, into a DuckDBStore, and on to the budget detector."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from codecarbon import OfflineEmissionsTracker, track_emissions

from collector.normalize import NormaliseOptions, normalise_metrics
from collector.otlp_decode import decode
from detectors.carbon import CarbonBudgetDetector, CarbonConfig, carbon_intensity
from mlvigil.core.store.duckdb import DuckDBStore
from mlvigil_producer.codecarbon_output import MlvigilOutput

J_PER_KWH = 3.6e6


def carbon_config(**kw: Any) -> CarbonConfig:
    return CarbonConfig.model_validate(kw)


class Receiver:
    """OTLP/HTTP /v1/metrics on loopback, decoded and normalised by the collector's own code."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store = store
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = decode("metrics", body, self.headers["Content-Type"])
                out = normalise_metrics(req, NormaliseOptions())
                receiver.store.append(out.batch)
                receiver.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(store: DuckDBStore) -> Iterator[Receiver]:
    r = Receiver(store)
    yield r
    r.close()


def points(store: DuckDBStore, name: str) -> list[tuple[float, float, dict[str, Any]]]:
    cols = store.query("metric_points", columns=["ts", "value", "attributes"], where={"name": name})
    return [
        (t, v, json.loads(a)) for t, v, a in zip(cols["ts"], cols["value"], cols["attributes"], strict=True)
    ]


def burn_until(pred: Callable[[], bool], timeout: float = 20.0) -> None:
    """CPU work (something for codecarbon to measure) until ``pred`` holds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        sum(i * i for i in range(20_000))


def test_tracker_totals_arrive_as_running_totals_in_base_units(
    store: DuckDBStore, receiver: Receiver
) -> None:
    out = MlvigilOutput(receiver.url, run_id="run-cc", model="tiny", team="research")
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",
        project_name="proj",
        measure_power_secs=0.2,
        api_call_interval=1,
        output_methods=[],
        output_handlers=[out],
        log_level="error",
        allow_multiple_runs=True,
    )
    tracker.start()
    burn_until(lambda: out.sent_exports >= 3)
    out.set_progress(steps_done=30, steps_planned=100)
    tracker.stop()
    final = tracker.final_emissions_data
    assert out.failed_exports == 0
    energy = points(store, "mlvigil.carbon.energy")
    grams = points(store, "mlvigil.carbon.emissions")
    assert len(energy) >= 3
    # running totals: non-decreasing, the last equal to codecarbon's final total in J and g
    assert [v for _, v, _ in energy] == sorted(v for _, v, _ in energy)
    assert energy[-1][1] == pytest.approx(final.energy_consumed * J_PER_KWH, rel=1e-9)
    assert grams[-1][1] == pytest.approx(final.emissions * 1000.0, rel=1e-9)
    assert grams[-1][1] > 0
    # France's intensity from codecarbon's bundled data links the two
    fra = carbon_intensity("FRA").g_per_kwh
    assert grams[-1][1] == pytest.approx(energy[-1][1] / J_PER_KWH * fra, rel=1e-6)
    attrs = energy[-1][2]
    assert attrs["mlvigil.carbon.project"] == "proj"
    assert attrs["mlvigil.train.run_id"] == "run-cc"
    assert attrs["mlvigil.model.name"] == "tiny"
    assert attrs["mlvigil.team"] == "research"
    assert attrs["mlvigil.carbon.tracker_run"] == str(final.run_id)
    assert points(store, "mlvigil.carbon.steps.done")[-1][1] == 30
    kinds = store.query(
        "metric_points", columns=["kind", "monotonic", "unit"], where={"name": "mlvigil.carbon.energy"}
    )
    assert set(kinds["kind"]) == {"sum"} and set(kinds["monotonic"]) == {True} and set(kinds["unit"]) == {"J"}

    # The budget detector reads the same total; 30% progress projects total / 0.3.
    budget_g = grams[-1][1] * 2.0  # not reached, but the projection (x3.33) crosses it
    cfg = carbon_config(
        country_iso_code="FRA",
        budgets=[{"name": "b", "run_id": "run-cc", "kg_co2e": budget_g / 1000.0, "planned_steps": 100}],
    )
    det = CarbonBudgetDetector(cfg, carbon_intensity("FRA"))
    found = det.evaluate(store, time.time() + 1)
    assert [f.kind for f in found] == ["carbon_forecast_overrun"]
    ev = found[0].evidence
    assert ev["actual"] == pytest.approx(grams[-1][1])
    assert ev["progress"] == pytest.approx(0.30)
    assert ev["projected"] == pytest.approx(grams[-1][1] / 0.30)


def test_tasks_are_sent_as_a_breakdown_not_added_to_the_total(store: DuckDBStore, receiver: Receiver) -> None:
    out = MlvigilOutput(receiver.url, run_id="run-tasks")
    tracker = OfflineEmissionsTracker(
        country_iso_code="DEU",
        project_name="tasks",
        output_methods=[],
        output_handlers=[out],
        log_level="error",
        allow_multiple_runs=True,
    )
    tracker.start_task("load")
    sum(i * i for i in range(300_000))
    load = tracker.stop_task()
    tracker.start_task("train")
    sum(i * i for i in range(600_000))
    train = tracker.stop_task()
    tracker.stop()
    by_task = {a.get("mlvigil.carbon.task"): v for _, v, a in points(store, "mlvigil.carbon.energy")}
    assert by_task["load"] == pytest.approx(load.energy_consumed * J_PER_KWH, rel=1e-9)
    assert by_task["train"] == pytest.approx(train.energy_consumed * J_PER_KWH, rel=1e-9)
    total = tracker.final_emissions_data.energy_consumed * J_PER_KWH
    assert by_task[None] == pytest.approx(total, rel=1e-9)
    cfg = carbon_config(country_iso_code="DEU", budgets=[{"name": "t", "run_id": "run-tasks"}])
    det = CarbonBudgetDetector(cfg, carbon_intensity("DEU"))
    assert det.evaluate(store, time.time() + 1) == []  # tracked only
    # the subject's total is the tracker total, tasks not counted twice
    from detectors.carbon import sources

    series = sources.read_handler_series(store, 0, time.time() + 1)
    assert sources.combine(series).total_joules == pytest.approx(total, rel=1e-9)


def test_decorator_and_restarted_trackers_add_up(store: DuckDBStore, receiver: Receiver) -> None:
    out = MlvigilOutput(receiver.url, run_id="run-dec")

    @track_emissions(
        offline=True,
        country_iso_code="FRA",
        project_name="dec",
        output_methods=[],
        output_handlers=[out],
        log_level="error",
        allow_multiple_runs=True,
    )
    def work(n: int) -> int:
        return sum(i * i for i in range(n))

    work(400_000)  # first "job attempt"
    work(400_000)  # restarted: a new tracker, a new series of the same run
    finals: dict[str, float] = {}
    for _, v, a in points(store, "mlvigil.carbon.energy"):
        finals[a["mlvigil.carbon.tracker_run"]] = max(v, finals.get(a["mlvigil.carbon.tracker_run"], 0.0))
    assert len(finals) == 2
    from detectors.carbon import sources

    series = sources.read_handler_series(store, 0, time.time() + 1)
    assert sources.combine(series).total_joules == pytest.approx(sum(finals.values()))


def test_export_failure_is_counted_not_raised() -> None:
    out = MlvigilOutput("http://127.0.0.1:9", timeout=0.5)  # discard port: refused
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",
        output_methods=[],
        output_handlers=[out],
        log_level="error",
        allow_multiple_runs=True,
    )
    tracker.start()
    sum(range(100_000))
    assert tracker.stop() is not None
    assert out.failed_exports >= 1 and out.sent_exports == 0
