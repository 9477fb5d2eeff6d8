"""Carbon and energy budgets per run, model, namespace or team: overruns and forecast overruns.

For every budget and each subject it matches, the detector builds the subject's running
totals (``sources``: codecarbon handler series, or NVML GPU energy attributed to runs) and
reports two conditions:

- ``carbon_overrun`` (critical) while the actual total has reached the budget (kg CO2e, kWh);
- ``carbon_forecast_overrun`` (warning) while the projected final total (``forecast``:
  total / progress, Carbontracker's linear extrapolation done continuously) has reached it,
  once progress is at least ``min_progress``. The evidence carries the arithmetic: total,
  progress, projection, band, budget.

Parameters
----------
config
    ``CarbonConfig`` (section ``detectors.carbon``).
intensity
    gCO2e/kWh applied to NVML energy (``intensity.carbon_intensity``).
metrics
    ``CarbonMetrics`` to publish totals, budgets and forecasts to (optional).

Example
-------
>>> import tempfile
>>> from mlvigil.core.store.duckdb import DuckDBStore
>>> from mlvigil.core.records import RecordBatch
>>> from detectors.carbon.config import CarbonConfig
>>> from detectors.carbon.intensity import CarbonIntensity
>>> store = DuckDBStore(tempfile.mkdtemp())
>>> b = RecordBatch()
>>> for i in range(1, 11):   # a run reporting 50 g per 10% progress through the handler
...     attrs = '{"mlvigil.carbon.tracker_run":"t1","mlvigil.train.run_id":"r1"}'
...     b.add("metric_points", ts=float(i), name="mlvigil.carbon.emissions", value=50.0 * i, attributes=attrs)
...     b.add("metric_points", ts=float(i), name="mlvigil.carbon.energy", value=1e6 * i, attributes=attrs)
...     b.add("metric_points", ts=float(i), name="mlvigil.carbon.progress", value=i / 100, attributes=attrs)
>>> store.append(b)
>>> cfg = CarbonConfig(budgets=[{"name": "b", "run_id": "r1", "kg_co2e": 1.0}])
>>> det = CarbonBudgetDetector(cfg, CarbonIntensity(100.0, "FRA", None, "configured"))
>>> [(f.kind, f.evidence["projected_grams"]) for f in det.evaluate(store, 11.0)]
[('carbon_forecast_overrun', 5000.0)]
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Sequence
from typing import Any

from detectors.carbon import sources
from detectors.carbon.config import BudgetConfig, CarbonConfig
from detectors.carbon.forecast import Forecast, forecast
from detectors.carbon.intensity import JOULES_PER_KWH, CarbonIntensity
from detectors.carbon.metrics import CarbonMetrics
from detectors.carbon.sources import Attribution, HandlerSeries, Trajectory
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.shard import WHOLE, Shard, in_shard, shard_name
from mlvigil.core.store import Store


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """UTC calendar [start, end) of the day, ISO week or month containing ``now``.

    >>> period_bounds("day", 86400 * 3 + 5)
    (259200.0, 345600.0)
    """
    t = dt.datetime.fromtimestamp(now, dt.UTC)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        start, end = day, day + dt.timedelta(days=1)
    elif period == "week":
        start = day - dt.timedelta(days=day.weekday())
        end = start + dt.timedelta(days=7)
    elif period == "month":
        start = day.replace(day=1)
        end = start + dt.timedelta(days=calendar.monthrange(start.year, start.month)[1])
    else:
        raise ValueError(f"unknown period {period!r}")
    return start.timestamp(), end.timestamp()


class CarbonBudgetDetector(Detector):
    """``shard``: this instance judges the (budget, subject) pairs that hash to it
    (``mlvigil.core.shard``: ``carbon_budgets[i/N]``)."""

    def __init__(
        self,
        config: CarbonConfig,
        intensity: CarbonIntensity,
        metrics: CarbonMetrics | None = None,
        *,
        shard: Shard = WHOLE,
    ) -> None:
        self.name = shard_name("carbon_budgets", shard)
        self.shard = shard
        self.config = config
        self.intensity = intensity
        self.grams_per_joule = intensity.g_per_kwh * config.pue / JOULES_PER_KWH
        self.metrics = metrics
        if metrics is not None:
            metrics.intensity_g_per_kwh = intensity.g_per_kwh

    # -- data ------------------------------------------------------------------------------
    def _window_start(self, budget: BudgetConfig, now: float) -> float:
        if budget.period:
            return period_bounds(budget.period, now)[0] - self.config.lookback
        return now - self.config.lookback

    def evaluate(self, store: Store, now: float) -> Sequence[Finding]:
        budgets = self.config.budgets
        if not budgets:
            return []
        since = min(self._window_start(b, now) for b in budgets)
        handler = sources.read_handler_series(store, since, now + 1e-6)
        need_nvml = any(b.scope == "run_id" and b.source != "codecarbon" for b in budgets)
        attribution = (
            sources.attribute_gpu_energy(
                store,
                since,
                now + 1e-6,
                grams_per_joule=self.grams_per_joule,
                max_step_gap=self.config.max_step_gap,
            )
            if need_nvml
            else Attribution()
        )
        nvml_runs = attribution.runs()
        findings: list[Finding] = []
        energy: dict[tuple[str, str, str], float] = {}
        emissions: dict[tuple[str, str, str], float] = {}
        budget_g: dict[tuple[str, str, str], float] = {}
        budget_j: dict[tuple[str, str, str], float] = {}
        fc_out: dict[tuple[str, str, str, str], float] = {}
        progress_out: dict[tuple[str, str, str], float] = {}
        for budget in budgets:
            scope = budget.scope
            for subject, traj, progress in self._subjects(budget, handler, attribution, nvml_runs, now):
                skey = (scope, subject, traj.source)
                energy[skey] = traj.total_joules
                emissions[skey] = traj.total_grams
                bkey = (scope, subject, budget.name)
                if budget.kg_co2e is not None:
                    budget_g[bkey] = budget.kg_co2e * 1000.0
                if budget.kwh is not None:
                    budget_j[bkey] = budget.kwh * JOULES_PER_KWH
                fc_g = fc_j = None
                if progress is not None and progress and progress[-1] == progress[-1]:
                    pts = [
                        (p, g, j) for p, g, j in zip(progress, traj.grams, traj.joules, strict=True) if p == p
                    ]
                    z, recent = self.config.band_z, self.config.band_intervals
                    ps = [p for p, _, _ in pts]
                    fc_g = forecast(ps, [g for _, g, _ in pts], z=z, recent=recent)
                    fc_j = forecast(ps, [j for _, _, j in pts], z=z, recent=recent)
                    progress_out[bkey] = progress[-1]
                    if fc_g is not None:
                        fc_out[(*bkey, "projected")] = fc_g.projected
                        fc_out[(*bkey, "lower")] = fc_g.lower
                        fc_out[(*bkey, "upper")] = fc_g.upper
                findings.extend(self._judge(budget, subject, traj, fc_g, fc_j, now))
        if self.metrics is not None:
            self.metrics.publish_budgets(
                energy, emissions, budget_g, budget_j, fc_out, progress_out, part=self.shard
            )
        return findings

    def _subjects(
        self,
        budget: BudgetConfig,
        handler: list[HandlerSeries],
        attribution: Attribution,
        nvml_runs: dict[str, list[Trajectory]],
        now: float,
    ) -> list[tuple[str, Trajectory, list[float] | None]]:
        """(subject value, trajectory, progress at each trajectory time) for each match."""
        scope, match = budget.scope, budget.match
        groups: dict[str, list[HandlerSeries]] = {}
        if budget.source != "nvml":
            for s in handler:
                value = s.labels.get(scope)
                if value is not None and (match == "*" or value == match):
                    groups.setdefault(value, []).append(s)
        nvml: dict[str, list[Trajectory]] = {}
        if scope == "run_id" and budget.source != "codecarbon":
            nvml = {r: t for r, t in nvml_runs.items() if match == "*" or r == match}
        period = period_bounds(budget.period, now) if budget.period else None
        out: list[tuple[str, Trajectory, list[float] | None]] = []
        for value in sorted(set(groups) | set(nvml)):
            if not in_shard(f"{budget.name}/{value}", self.shard):
                continue  # another instance's subject
            progress: list[float] | None
            if value in groups and (budget.source == "codecarbon" or budget.source == "auto"):
                traj = sources.combine(groups[value])
                if period:
                    traj = traj.since(period[0])
                    progress = None
                else:
                    progress = sources.handler_progress(
                        groups[value],
                        traj.ts,
                        planned_steps=budget.planned_steps,
                        expected_duration=budget.expected_duration,
                    )
            else:
                traj = sources.sum_trajectories(nvml[value], "nvml")
                if period:
                    traj = traj.since(period[0])
                    progress = None
                else:
                    progress = sources.run_steps_progress(
                        attribution,
                        value,
                        traj.ts,
                        planned_steps=budget.planned_steps,
                        expected_duration=budget.expected_duration,
                    )
            if not traj.ts:
                continue
            if period:
                start, end = period
                progress = [min(1.0, max(0.0, (t - start) / (end - start))) for t in traj.ts]
                # The forecast divides by the share of the period gone *now*, not at the last point.
                traj.ts.append(now)
                traj.joules.append(traj.total_joules)
                traj.grams.append(traj.total_grams)
                progress.append(min(1.0, (now - start) / (end - start)))
            out.append((value, traj, progress))
        return out

    # -- judgement -------------------------------------------------------------------------
    def _judge(
        self,
        budget: BudgetConfig,
        subject_value: str,
        traj: Trajectory,
        fc_g: Forecast | None,
        fc_j: Forecast | None,
        now: float,
    ) -> list[Finding]:
        subject = {budget.scope: subject_value}
        out: list[Finding] = []
        limits: list[tuple[str, float, float, Forecast | None, str]] = []
        if budget.kg_co2e is not None:
            limits.append(("co2e", budget.kg_co2e * 1000.0, traj.total_grams, fc_g, "g"))
        if budget.kwh is not None:
            limits.append(("energy", budget.kwh * JOULES_PER_KWH, traj.total_joules, fc_j, "J"))
        base: dict[str, Any] = {
            "budget": budget.name,
            "source": traj.source,
            "period": budget.period,
            "carbon_intensity_g_per_kwh": self.intensity.g_per_kwh if traj.source == "nvml" else None,
        }
        window_start = traj.ts[0] if traj.ts else None
        for measure, limit, actual, fc, unit in limits:
            human = _human(limit, unit)
            # The cumulative use over the window, for the console's plot (bounded in size).
            curve = _curve(traj.ts, traj.grams if unit == "g" else traj.joules)
            if actual >= limit:
                out.append(
                    Finding(
                        kind="carbon_overrun",
                        severity=Severity.CRITICAL,
                        subject=subject,
                        summary=(
                            f"{budget.scope} {subject_value} used {_human(actual, unit)}, over its budget "
                            f"{budget.name!r} of {human} ({actual / limit:.0%})"
                        ),
                        evidence={
                            **base,
                            "measure": measure,
                            "unit": unit,
                            "actual": actual,
                            "limit": limit,
                            "ratio": actual / limit,
                            "curve": curve,
                        },
                        window_start=window_start,
                        window_end=now,
                        key=f"{budget.name}:{measure}",
                    )
                )
            if fc is not None and fc.progress >= self.config.min_progress and fc.projected >= limit:
                out.append(
                    Finding(
                        kind="carbon_forecast_overrun",
                        severity=Severity.WARNING,
                        subject=subject,
                        summary=(
                            f"{budget.scope} {subject_value} is projected to use "
                            f"{_human(fc.projected, unit)} (band {_human(fc.lower, unit)}.."
                            f"{_human(fc.upper, unit)}) at {fc.progress:.0%} "
                            f"progress, over its budget {budget.name!r} of {human}"
                        ),
                        evidence={
                            **base,
                            "measure": measure,
                            "unit": unit,
                            "actual": actual,
                            "limit": limit,
                            "progress": fc.progress,
                            "projected": fc.projected,
                            "lower": fc.lower,
                            "upper": fc.upper,
                            # the same in grams for dashboards that only read co2e
                            **({"projected_grams": fc.projected} if unit == "g" else {}),
                            "rate_mean": fc.rate_mean,
                            "rate_recent": fc.rate_recent,
                            "rate_std": fc.rate_std,
                            "intervals": fc.intervals,
                            "band_z": self.config.band_z,
                            "method": "actual / progress (Carbontracker); band: recent rate spread",
                            "curve": curve,
                        },
                        window_start=window_start,
                        window_end=now,
                        key=f"{budget.name}:{measure}",
                    )
                )
        return out


#: Most points of the cumulative curve a finding carries as evidence.
CURVE_POINTS = 120


def _curve(ts: Sequence[float], cumulative: Sequence[float]) -> dict[str, list[float]]:
    """At most ``CURVE_POINTS`` evenly spaced points of a cumulative series, its last included.

    >>> _curve([0.0, 1.0, 2.0], [0.0, 5.0, 7.5])
    {'ts': [0.0, 1.0, 2.0], 'value': [0.0, 5.0, 7.5]}
    >>> len(_curve([float(i) for i in range(1000)], [float(i) for i in range(1000)])["ts"])
    120
    """
    n = len(ts)
    if n <= CURVE_POINTS:
        picks = list(range(n))
    else:
        step = (n - 1) / (CURVE_POINTS - 1)
        picks = [round(i * step) for i in range(CURVE_POINTS)]
    return {"ts": [float(ts[i]) for i in picks], "value": [float(cumulative[i]) for i in picks]}


def _human(value: float, unit: str) -> str:
    if unit == "g":
        return f"{value / 1000:.3g} kg CO2e" if value >= 1000 else f"{value:.3g} g CO2e"
    return f"{value / JOULES_PER_KWH:.3g} kWh"
