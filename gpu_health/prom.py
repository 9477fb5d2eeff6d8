"""The agent's own ``/metrics``: the latest pass, rendered as Prometheus families.

Names and their dcgm-exporter counterparts are in ``gpu_health.names``; every series
carries ``gpu`` (index), ``uuid`` and ``host`` like dcgm-exporter's gpu/UUID/Hostname.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from gpu_health.names import METRICS, PROM_LABELS
from gpu_health.sampler import GpuSample
from mlvigil.core.metrics import Family, SeriesValues, SnapshotCollector


class GpuCollector(SnapshotCollector):
    """Collects from ``latest()`` (the last pass) at scrape time; it never samples itself."""

    def __init__(self, latest: Callable[[], Sequence[GpuSample]], host: str) -> None:
        self._latest = latest
        self._host = host
        super().__init__()

    def snapshot(self) -> Iterable[tuple[Family, SeriesValues]]:
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
            # Every series of a family has the same label names (missing ones are empty).
            label_names = tuple(sorted({k for labels, _ in points for k in labels}))
            family = Family(
                spec.prom,
                f"{spec.help} OTLP {name}; DCGM {spec.dcgm}.",
                label_names,
                "counter" if spec.kind == "sum" else "gauge",
            )
            values = {
                tuple(labels.get(k, "") for k in label_names): value * spec.scale for labels, value in points
            }
            yield family, values
