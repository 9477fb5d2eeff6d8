"""Prometheus export of carbon accounting (a snapshot collector over the last evaluation).

Totals are recomputed from the store on every evaluation (they are running totals there), so
they are exposed as counters through ``SnapshotCollector`` (mlvigil.core.metrics) holding the
latest snapshot rather than as ``Counter`` objects incremented in-process: a restart of
mlvigil does not reset them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client.registry import CollectorRegistry

from mlvigil.core.metrics import Family, SeriesValues, SnapshotCollector
from mlvigil.core.shard import WHOLE, Shard

SubjectKey = tuple[str, str, str]  # scope, subject, source
BudgetKey = tuple[str, str, str]  # scope, subject, budget

_SUBJECT = ("scope", "subject", "source")
_BUDGET = ("scope", "subject", "budget")
ENERGY = Family(
    "mlvigil_carbon_energy_joules", "Energy used by a subject, running total.", _SUBJECT, "counter"
)
EMISSIONS = Family(
    "mlvigil_carbon_emissions_grams", "CO2e emitted by a subject, running total.", _SUBJECT, "counter"
)
BUDGET_GRAMS = Family("mlvigil_carbon_budget_grams", "CO2e budget of a subject.", _BUDGET)
BUDGET_JOULES = Family("mlvigil_carbon_budget_joules", "Energy budget of a subject.", _BUDGET)
FORECAST = Family(
    "mlvigil_carbon_forecast_grams",
    "Projected final CO2e of a subject (bound: projected|lower|upper).",
    (*_BUDGET, "bound"),
)
PROGRESS = Family("mlvigil_carbon_progress_ratio", "Progress the forecast divides by (0..1).", _BUDGET)
SERVING = Family(
    "mlvigil_carbon_serving_grams",
    "Serving CO2e per unit of traffic (per: 1k_requests|1m_tokens).",
    (*_BUDGET, "per"),
)
INTENSITY = Family("mlvigil_carbon_intensity_grams_per_kwh", "Carbon intensity applied to NVML energy.")


class CarbonMetrics(SnapshotCollector):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        # family -> detector shard -> its latest values: each shard instance (mlvigil.core.shard)
        # replaces only its own part, and the parts' keys are disjoint.
        self._values: dict[Family, dict[Shard, SeriesValues]] = {
            family: {}
            for family in (ENERGY, EMISSIONS, BUDGET_GRAMS, BUDGET_JOULES, FORECAST, PROGRESS, SERVING)
        }
        self.intensity_g_per_kwh: float | None = None
        super().__init__(registry)

    def publish_budgets(
        self,
        energy: Mapping[SubjectKey, float],
        emissions: Mapping[SubjectKey, float],
        budget_grams: Mapping[BudgetKey, float],
        budget_joules: Mapping[BudgetKey, float],
        forecast: Mapping[tuple[str, str, str, str], float],
        progress: Mapping[BudgetKey, float],
        *,
        part: Shard = WHOLE,
    ) -> None:
        with self._lock:
            for family, values in (
                (ENERGY, energy),
                (EMISSIONS, emissions),
                (BUDGET_GRAMS, budget_grams),
                (BUDGET_JOULES, budget_joules),
                (FORECAST, forecast),
                (PROGRESS, progress),
            ):
                self._values[family][part] = values

    def publish_serving(
        self, serving: Mapping[tuple[str, str, str, str], float], *, part: Shard = WHOLE
    ) -> None:
        with self._lock:
            self._values[SERVING][part] = serving

    def snapshot(self) -> Iterable[tuple[Family, SeriesValues]]:
        with self._lock:
            families: list[tuple[Family, SeriesValues]] = [
                (family, {k: v for values in parts.values() for k, v in values.items()})
                for family, parts in self._values.items()
            ]
        if self.intensity_g_per_kwh is not None:
            families.append((INTENSITY, {(): self.intensity_g_per_kwh}))
        return families
