"""Prometheus export of carbon accounting (a custom collector over the last evaluation).

Totals are recomputed from the store on every evaluation (they are running totals there), so
they are exposed as counters through a collector holding the latest snapshot rather than as
``Counter`` objects incremented in-process: a restart of mlvigil does not reset them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

SubjectKey = tuple[str, str, str]  # scope, subject, source
BudgetKey = tuple[str, str, str]  # scope, subject, budget


class CarbonMetrics(Collector):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._lock = threading.Lock()
        self.energy_joules: dict[SubjectKey, float] = {}
        self.emissions_grams: dict[SubjectKey, float] = {}
        self.budget_grams: dict[BudgetKey, float] = {}
        self.budget_joules: dict[BudgetKey, float] = {}
        self.forecast_grams: dict[tuple[str, str, str, str], float] = {}  # + bound
        self.progress: dict[BudgetKey, float] = {}
        self.serving: dict[tuple[str, str, str, str], float] = {}  # scope, subject, budget, per
        self.intensity_g_per_kwh: float | None = None
        if registry is not None:
            registry.register(self)

    def publish_budgets(
        self,
        energy: dict[SubjectKey, float],
        emissions: dict[SubjectKey, float],
        budget_grams: dict[BudgetKey, float],
        budget_joules: dict[BudgetKey, float],
        forecast: dict[tuple[str, str, str, str], float],
        progress: dict[BudgetKey, float],
    ) -> None:
        with self._lock:
            self.energy_joules, self.emissions_grams = energy, emissions
            self.budget_grams, self.budget_joules = budget_grams, budget_joules
            self.forecast_grams, self.progress = forecast, progress

    def publish_serving(self, serving: dict[tuple[str, str, str, str], float]) -> None:
        with self._lock:
            self.serving = serving

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            energy = CounterMetricFamily(
                "mlvigil_carbon_energy_joules",
                "Energy used by a subject, running total.",
                labels=["scope", "subject", "source"],
            )
            for k, v in self.energy_joules.items():
                energy.add_metric(list(k), v)
            emissions = CounterMetricFamily(
                "mlvigil_carbon_emissions_grams",
                "CO2e emitted by a subject, running total.",
                labels=["scope", "subject", "source"],
            )
            for k, v in self.emissions_grams.items():
                emissions.add_metric(list(k), v)
            budget_g = GaugeMetricFamily(
                "mlvigil_carbon_budget_grams",
                "CO2e budget of a subject.",
                labels=["scope", "subject", "budget"],
            )
            for k, v in self.budget_grams.items():
                budget_g.add_metric(list(k), v)
            budget_j = GaugeMetricFamily(
                "mlvigil_carbon_budget_joules",
                "Energy budget of a subject.",
                labels=["scope", "subject", "budget"],
            )
            for k, v in self.budget_joules.items():
                budget_j.add_metric(list(k), v)
            fc = GaugeMetricFamily(
                "mlvigil_carbon_forecast_grams",
                "Projected final CO2e of a subject (bound: projected|lower|upper).",
                labels=["scope", "subject", "budget", "bound"],
            )
            for k4, v in self.forecast_grams.items():
                fc.add_metric(list(k4), v)
            prog = GaugeMetricFamily(
                "mlvigil_carbon_progress_ratio",
                "Progress the forecast divides by (0..1).",
                labels=["scope", "subject", "budget"],
            )
            for k, v in self.progress.items():
                prog.add_metric(list(k), v)
            serving = GaugeMetricFamily(
                "mlvigil_carbon_serving_grams",
                "Serving CO2e per unit of traffic (per: 1k_requests|1m_tokens).",
                labels=["scope", "subject", "budget", "per"],
            )
            for k4, v in self.serving.items():
                serving.add_metric(list(k4), v)
            families: list[Metric] = [energy, emissions, budget_g, budget_j, fc, prog, serving]
            if self.intensity_g_per_kwh is not None:
                ci = GaugeMetricFamily(
                    "mlvigil_carbon_intensity_grams_per_kwh", "Carbon intensity applied to NVML energy."
                )
                ci.add_metric([], self.intensity_g_per_kwh)
                families.append(ci)
        yield from families
