"""Serving carbon intensity, SCI-style: grams CO2e per 1k requests and per 1M tokens.

The Green Software Foundation's Software Carbon Intensity (SCI, ISO/IEC 21031:2024) is
``((E x I) + M) / R``: energy times grid intensity, plus embodied emissions, per functional
unit R. Embodied emissions are out of scope here (M = 0), so over a sliding window

    g per 1k requests = (E x I) / requests x 1000,   g per 1M tokens = (E x I) / tokens x 1e6

E x I comes from the serving job's codecarbon handler series (their emissions increase over the
window: codecarbon already applied I), or, when ``gpu_uuids`` are configured, from those GPUs'
``hw.energy`` increase times the configured intensity. R is counted from ``inferences`` and
``llm_calls`` rows of the service or model (tokens: ``total_tokens``, else input + output).

A ``carbon_overrun`` (warning) is reported while an intensity is at or over its budget, once the
window holds at least ``min_requests`` requests.

Parameters
----------
config
    ``CarbonConfig``; its ``serving`` list holds the budgets.
intensity
    gCO2e/kWh for the NVML path.
metrics
    ``CarbonMetrics`` (optional): ``mlvigil_carbon_serving_grams{per=1k_requests|1m_tokens}``.

Example
-------
>>> import tempfile
>>> from mlvigil.core.store.duckdb import DuckDBStore
>>> from mlvigil.core.records import RecordBatch
>>> from detectors.carbon.config import CarbonConfig
>>> from detectors.carbon.intensity import CarbonIntensity
>>> store = DuckDBStore(tempfile.mkdtemp())
>>> b = RecordBatch()
>>> for i in range(200):
...     b.add("inferences", ts=100.0 + i, service="api", model="m")
>>> b.add("metric_points", ts=50.0, service="api", name="mlvigil.carbon.emissions", value=10.0,
...       attributes='{"mlvigil.carbon.tracker_run":"t"}')
>>> b.add("metric_points", ts=299.0, service="api", name="mlvigil.carbon.emissions", value=11.0,
...       attributes='{"mlvigil.carbon.tracker_run":"t"}')
>>> store.append(b)
>>> cfg = CarbonConfig(serving=[{"name": "s", "service": "api", "g_per_1k_requests": 4.0, "window": 200}])
>>> det = ServingCarbonDetector(cfg, CarbonIntensity(100.0, "FRA", None, "configured"))
>>> [(f.kind, f.evidence["value"]) for f in det.evaluate(store, 300.0)]
[('carbon_overrun', 5.0)]
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from detectors.carbon import sources
from detectors.carbon.config import CarbonConfig, ServingBudgetConfig
from detectors.carbon.intensity import JOULES_PER_KWH, CarbonIntensity
from detectors.carbon.metrics import CarbonMetrics
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.shard import WHOLE, Shard, in_shard, shard_name
from mlvigil.core.store import Store


class ServingCarbonDetector(Detector):
    """``shard``: this instance judges the serving budgets whose name hashes to it
    (``mlvigil.core.shard``: ``carbon_serving[i/N]``)."""

    def __init__(
        self,
        config: CarbonConfig,
        intensity: CarbonIntensity,
        metrics: CarbonMetrics | None = None,
        *,
        shard: Shard = WHOLE,
    ) -> None:
        self.name = shard_name("carbon_serving", shard)
        self.shard = shard
        self.config = config
        self.grams_per_joule = intensity.g_per_kwh * config.pue / JOULES_PER_KWH
        self.metrics = metrics

    def traffic(self, store: Store, budget: ServingBudgetConfig, t0: float, t1: float) -> tuple[int, float]:
        """(requests, tokens) of the service or model in [t0, t1)."""
        requests = 0
        tokens = 0.0
        if budget.service is not None:
            inf_where: dict[str, Any] = {"service": budget.service}
            llm_where: dict[str, Any] = {"service": budget.service}
        else:
            inf_where = {"model": budget.model}
            llm_where = {"request_model": budget.model}
        inf = store.query("inferences", columns=["ts"], since=t0, until=t1, where=inf_where)
        requests += len(inf["ts"])
        llm = store.query(
            "llm_calls",
            columns=["total_tokens", "input_tokens", "output_tokens"],
            since=t0,
            until=t1,
            where=llm_where,
        )
        requests += len(llm["total_tokens"])
        for total, inp, outp in zip(
            llm["total_tokens"], llm["input_tokens"], llm["output_tokens"], strict=True
        ):
            tokens += total if total is not None else (inp or 0) + (outp or 0)
        return requests, tokens

    def emissions(
        self, store: Store, budget: ServingBudgetConfig, t0: float, t1: float
    ) -> tuple[float, float, str]:
        """(grams, joules, source) used by the service or model in [t0, t1]."""
        # Points before the window are needed only for each series' baseline.
        since = t0 - max(budget.window, 3600.0)
        if budget.gpu_uuids:
            pts = store.query(
                "metric_points",
                columns=["ts", "hw_id", "value"],
                since=since,
                until=t1 + 1e-6,
                where={"name": sources.GPU_ENERGY, "hw_id": budget.gpu_uuids},
            )
            by_gpu: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
            for ts, hw, v in zip(pts["ts"], pts["hw_id"], pts["value"], strict=True):
                by_gpu[hw][0].append(ts)
                by_gpu[hw][1].append(v)
            joules = sum(sources.increase(t, v, t0, t1, starts_at_zero=False) for t, v in by_gpu.values())
            return joules * self.grams_per_joule, joules, "nvml"
        pts = store.query(
            "metric_points",
            columns=["ts", "service", "name", "value", "attributes"],
            since=since,
            until=t1 + 1e-6,
            where={"name": [sources.ENERGY, sources.EMISSIONS]},
        )
        series: dict[tuple[str, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for ts, service, name, v, raw in zip(
            pts["ts"], pts["service"], pts["name"], pts["value"], pts["attributes"], strict=True
        ):
            attrs = json.loads(raw) if raw else {}
            if attrs.get(sources.ATTR_TASK):
                continue
            if budget.service is not None and service != budget.service:
                continue
            if budget.model is not None and attrs.get(sources.SCOPE_ATTRS["model"]) != budget.model:
                continue
            run = str(attrs.get(sources.ATTR_TRACKER_RUN) or service)
            series[(run, name)][0].append(ts)
            series[(run, name)][1].append(v)
        grams = joules = 0.0
        for (_, name), (t, v) in series.items():
            inc = sources.increase(t, v, t0, t1, starts_at_zero=True)
            if name == sources.EMISSIONS:
                grams += inc
            else:
                joules += inc
        return grams, joules, "codecarbon"

    def evaluate(self, store: Store, now: float) -> Sequence[Finding]:
        findings: list[Finding] = []
        gauges: dict[tuple[str, str, str, str], float] = {}
        for budget in self.config.serving:
            if not in_shard(budget.name, self.shard):
                continue  # another instance's budget
            t0 = now - budget.window
            requests, tokens = self.traffic(store, budget, t0, now + 1e-6)
            grams, joules, source = self.emissions(store, budget, t0, now)
            scope = "service" if budget.service is not None else "model"
            value = budget.service if budget.service is not None else budget.model
            assert value is not None
            if requests < budget.min_requests:
                continue
            measures: list[tuple[str, float, float | None]] = [
                ("1k_requests", grams / requests * 1000.0, budget.g_per_1k_requests)
            ]
            if tokens > 0:
                measures.append(("1m_tokens", grams / tokens * 1e6, budget.g_per_1m_tokens))
            for per, intensity, limit in measures:
                gauges[(scope, value, budget.name, per)] = intensity
                if limit is None or intensity < limit:
                    continue
                findings.append(
                    Finding(
                        kind="carbon_overrun",
                        severity=Severity.WARNING,
                        subject={scope: value},
                        summary=(
                            f"{scope} {value} emits {intensity:.3g} g CO2e per {per.replace('_', ' ')} "
                            f"over the last {budget.window:.0f}s, over its budget {budget.name!r} "
                            f"of {limit:.3g}"
                        ),
                        evidence={
                            "budget": budget.name,
                            "measure": f"g_per_{per}",
                            "value": intensity,
                            "limit": limit,
                            "grams": grams,
                            "joules": joules,
                            "requests": requests,
                            "tokens": tokens,
                            "window_s": budget.window,
                            "source": source,
                            "method": "SCI (E x I) / R, embodied emissions not included",
                        },
                        window_start=t0,
                        window_end=now,
                        key=f"{budget.name}:g_per_{per}",
                    )
                )
        if self.metrics is not None:
            self.metrics.publish_serving(gauges, part=self.shard)
        return findings
