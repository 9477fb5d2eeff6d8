"""End to end: a real codecarbon tracker -> MlvigilOutput -> the real mlvigil service over OTLP/HTTP
-> carbon budget Findings on the API and counters on /metrics."""

from __future__ import annotations

from collections.abc import Callable

from codecarbon import OfflineEmissionsTracker

from mlvigil_producer.codecarbon_output import MlvigilOutput
from tests.harness import ServiceHandle


def test_codecarbon_run_over_budget_through_the_service(
    service_factory: Callable[..., ServiceHandle],
) -> None:
    h = service_factory(
        {
            "detectors": {
                "carbon": {
                    "country_iso_code": "FRA",
                    # a microgram budget: any measured run overruns it
                    "budgets": [{"name": "tiny", "run_id": "e2e-run", "kg_co2e": 1e-12}],
                }
            }
        }
    )
    out = MlvigilOutput(h.otlp_http, run_id="e2e-run")
    tracker = OfflineEmissionsTracker(
        country_iso_code="FRA",
        project_name="e2e",
        output_methods=[],
        output_handlers=[out],
        log_level="error",
        allow_multiple_runs=True,
    )
    tracker.start()
    sum(i * i for i in range(300_000))
    tracker.stop()
    assert out.failed_exports == 0 and out.sent_exports >= 1
    grams = tracker.final_emissions_data.emissions * 1000.0
    h.wait_for(lambda: h.stats().get("metric_points", 0) >= 3)
    transitions = h.evaluate()
    findings = h.findings(kind="carbon_overrun")
    assert len(findings) == 1, (transitions, findings)
    f = findings[0]
    assert f["subject"] == {"run_id": "e2e-run"}
    assert abs(f["evidence"]["actual"] - grams) <= 1e-9 * max(1.0, grams)
    status, _, body = h.request("GET", "/metrics")
    assert status == 200
    text = body.decode()
    assert (
        'mlvigil_carbon_emissions_grams_total{scope="run_id",source="codecarbon",subject="e2e-run"}' in text
    )
