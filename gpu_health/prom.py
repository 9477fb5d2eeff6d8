"""The agent's own ``/metrics``: the latest pass, rendered as Prometheus families.

Names and their dcgm-exporter counterparts are in ``gpu_health.names``; every series
carries ``gpu`` (index), ``uuid`` and ``host`` like dcgm-exporter's gpu/UUID/Hostname.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from gpu_health.names import METRICS, PROM_LABELS
from gpu_health.sampler import GpuSample


class GpuCollector(Collector):
    """Collects from ``latest()`` (the last pass) at scrape time; it never samples itself."""

    def __init__(self, latest: Callable[[], Sequence[GpuSample]], host: str) -> None:
        self._latest = latest
        self._host = host

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        rows: dict[str, list[tuple[dict[str, str], float]]] = {}
        for sample in self._latest():
            base = {"gpu": str(sample.index), "uuid": sample.uuid, "host": self._host}
            for name, value, attrs in sample.points:
                labels = dict(base)
                for key, val in attrs:
                    label = PROM_LABELS.get(key, key.replace(".", "_"))
                    if label:
                        labels[label] = val
                rows.setdefault(name, []).append((labels, value))
        for name, points in rows.items():
            spec = METRICS[name]
            kind = "counter" if spec.kind == "sum" else "gauge"
            family = Metric(spec.prom, f"{spec.help} OTLP {name}; DCGM {spec.dcgm}.", kind)
            suffix = "_total" if kind == "counter" else ""
            # Every series of a family has the same label names (missing ones are empty).
            label_names = sorted({k for labels, _ in points for k in labels})
            for labels, value in points:
                full = {k: labels.get(k, "") for k in label_names}
                family.add_sample(spec.prom + suffix, full, value * spec.scale)
            families[name] = family
        yield from families.values()
