"""Self-telemetry of the service, exported at ``/metrics`` (prefix ``mlvigil_``, base units).

Two ways to export a series, one for each kind of value:

- a value set in-process as things happen (a monitor's score, a run's step time): a
  ``Gauge`` (or ``Counter``), its series grouped by owner with ``OwnedSeries``, so a thing
  that goes away takes its series with it;
- a value recomputed as a whole from elsewhere (carbon running totals from the store, the
  GPU agent's last pass): a ``SnapshotCollector`` (Prometheus' custom-collector pattern),
  which renders the latest snapshot at scrape time, so a series missing from it is gone and
  a running total is a counter that a restart does not reset.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector


class Telemetry:
    """One registry per service, so tests can run several services in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.items_received = Counter(
            "mlvigil_receiver_items_received",
            "Spans, metric points and log records received.",
            ["signal", "transport"],
            registry=r,
        )
        self.items_accepted = Counter(
            "mlvigil_receiver_items_accepted", "Items durably stored.", ["signal", "transport"], registry=r
        )
        self.items_rejected = Counter(
            "mlvigil_receiver_items_rejected",
            "Items refused, by reason.",
            ["signal", "transport", "reason"],
            registry=r,
        )
        self.requests = Counter(
            "mlvigil_receiver_requests",
            "Export requests by outcome.",
            ["signal", "transport", "code"],
            registry=r,
        )
        self.request_duration = Histogram(
            "mlvigil_receiver_request_duration_seconds",
            "Export request latency, receipt to acknowledgement.",
            ["signal", "transport"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.queue_items = Gauge(
            "mlvigil_ingest_queue_items", "Items waiting for a durable commit.", registry=r
        )
        self.queue_capacity = Gauge(
            "mlvigil_ingest_queue_capacity_items", "Queue bound in items.", registry=r
        )
        self.commit_duration = Histogram(
            "mlvigil_store_commit_duration_seconds",
            "Duration of one group commit to the store.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
        )
        self.records_written = Counter(
            "mlvigil_store_records_written", "Rows written, by record table.", ["table"], registry=r
        )
        self.findings_firing = Gauge(
            "mlvigil_findings_firing", "Findings firing now.", ["kind", "severity"], registry=r
        )
        self.findings_transitions = Counter(
            "mlvigil_findings_transitions", "Findings fired or resolved.", ["kind", "transition"], registry=r
        )
        self.api_requests = Counter(
            "mlvigil_api_requests", "API requests by route and status.", ["route", "code"], registry=r
        )
        self.detector_seconds = Histogram(
            "mlvigil_detector_evaluation_seconds",
            "Duration of one detector evaluation.",
            ["detector"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.detector_lag = Gauge(
            "mlvigil_detector_lag_seconds",
            "How late the detector's last scheduled evaluation started after its due time.",
            ["detector"],
            registry=r,
        )
        self.detector_missed = Counter(
            "mlvigil_detector_missed_intervals",
            "Intervals a detector skipped because its previous evaluation was still running.",
            ["detector"],
            registry=r,
        )
        # A (kind, severity) seen once stays exported, at 0 when nothing fires.
        self._firing = OwnedSeries(zero_stale=True)

    def set_firing(self, counts: dict[tuple[str, str], int]) -> None:
        self._firing.sync("findings", {(self.findings_firing, key): n for key, n in counts.items()})

    def exposition(self, openmetrics: bool = False) -> bytes:
        return generate_openmetrics(self.registry) if openmetrics else generate_latest(self.registry)


class OwnedSeries:
    """Gauge series grouped by the thing that owns them (a monitor, a training run), so a
    thing that goes away takes all its series with it: the one way to forget stale series.

    With ``zero_stale`` a forgotten series stays exported at 0 instead of being removed (for
    counts such as "findings firing", where 0 is the answer, not "unknown").

    Examples
    --------
    >>> r = CollectorRegistry()
    >>> g = Gauge("demo_value", "A value.", ["owner", "part"], registry=r)
    >>> series = OwnedSeries()
    >>> series.set("m1", g, ("m1", "a"), 1.0)
    >>> series.sync("m1", {(g, ("m1", "b")): 2.0})  # a is gone, b is new
    >>> r.get_sample_value("demo_value", {"owner": "m1", "part": "a"}) is None
    True
    >>> series.forget("m1")
    >>> r.get_sample_value("demo_value", {"owner": "m1", "part": "b"}) is None
    True
    """

    def __init__(self, *, zero_stale: bool = False) -> None:
        self.zero_stale = zero_stale
        self._series: dict[str, dict[tuple[Gauge, tuple[str, ...]], None]] = {}

    def set(self, owner: str, gauge: Gauge, labels: tuple[str, ...], value: float) -> None:
        """Set one series and remember that ``owner`` has it."""
        gauge.labels(*labels).set(value)
        self.track(owner, gauge, labels)

    def track(self, owner: str, gauge: Gauge, labels: tuple[str, ...]) -> None:
        self._series.setdefault(owner, {})[(gauge, labels)] = None

    def sync(self, owner: str, values: dict[tuple[Gauge, tuple[str, ...]], float]) -> None:
        """Make ``values`` the owner's series: the others it had are forgotten."""
        old = self._series.get(owner, {})
        self._drop([s for s in old if s not in values])
        for (gauge, labels), value in values.items():
            gauge.labels(*labels).set(value)
        self._series[owner] = {**old, **dict.fromkeys(values)} if self.zero_stale else dict.fromkeys(values)

    def forget(self, owner: str) -> None:
        """Remove (or zero) every series ``owner`` has set."""
        self._drop(list(self._series.pop(owner, {})))

    def _drop(self, series: list[tuple[Gauge, tuple[str, ...]]]) -> None:
        for gauge, labels in series:
            if self.zero_stale:
                gauge.labels(*labels).set(0)
            else:
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)


#: A family's values: label-value tuple (in the family's label order) -> value. Keys are
#: typed loosely so fixed-width tuples (``tuple[str, str, str]``) fit without a cast.
SeriesValues = Mapping[tuple[Any, ...], float]


@dataclass(frozen=True)
class Family:
    """A metric family a ``SnapshotCollector`` exports: name (a counter's samples get
    ``_total``), help, label names and kind."""

    name: str
    help: str
    labels: tuple[str, ...] = ()
    kind: Literal["gauge", "counter"] = "gauge"

    def render(self, values: SeriesValues) -> Metric:
        """The family with one sample per label-value tuple of ``values``."""
        family = Metric(self.name, self.help, self.kind)
        sample = self.name + ("_total" if self.kind == "counter" else "")
        for key, value in values.items():
            family.add_sample(sample, dict(zip(self.labels, key, strict=True)), value)
        return family


class SnapshotCollector(Collector):
    """Series recomputed as a whole: ``snapshot()`` gives every family's values now, rendered
    at each scrape; what it no longer gives is no longer exported.

    Examples
    --------
    >>> class Depth(SnapshotCollector):
    ...     FAMILY = Family("demo_depth_items", "Items queued.", ("queue",))
    ...     def __init__(self, registry: CollectorRegistry) -> None:
    ...         self.depths = {("a",): 3.0}
    ...         super().__init__(registry)
    ...     def snapshot(self):
    ...         return [(self.FAMILY, self.depths)]
    >>> r = CollectorRegistry()
    >>> d = Depth(r)
    >>> r.get_sample_value("demo_depth_items", {"queue": "a"})
    3.0
    >>> d.depths = {}
    >>> r.get_sample_value("demo_depth_items", {"queue": "a"}) is None
    True
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Last in a subclass's __init__: a registry may collect once on registration.
        if registry is not None:
            registry.register(self)

    def snapshot(self) -> Iterable[tuple[Family, SeriesValues]]:
        """Every family with its values (label-value tuple -> value), as of now."""
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        for family, values in self.snapshot():
            yield family.render(values)
