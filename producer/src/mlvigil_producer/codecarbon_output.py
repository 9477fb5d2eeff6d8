"""codecarbon output handler that sends each measurement to mlvigil as OTLP metrics.

Producers install it in their job; it needs only codecarbon and the OpenTelemetry protobufs
(no mlvigil server code)::

    from codecarbon import OfflineEmissionsTracker
    from mlvigil_producer.codecarbon_output import MlvigilOutput

    out = MlvigilOutput("http://mlvigil:4318", run_id="run-42", model="bert-base")
    with OfflineEmissionsTracker(country_iso_code="FRA", output_handlers=[out],
                                 measure_power_secs=15, api_call_interval=4):
        for step in range(planned):
            train_step()
            out.set_progress(steps_done=step + 1, steps_planned=planned)

Every call sends the tracker's *running totals* in base units, as cumulative monotonic sums:
``mlvigil.carbon.energy`` (J) and ``mlvigil.carbon.emissions`` (g CO2e), plus the gauges
``mlvigil.carbon.duration`` (s), and ``mlvigil.carbon.progress`` (0..1) or
``mlvigil.carbon.steps.done``/``.planned`` once the job reports progress. Totals, not deltas:
a lost or repeated export does not change the total mlvigil holds, and a new tracker (a
restarted job) is a new series (``mlvigil.carbon.tracker_run``) that adds to its run's total.

- ``live_out`` (every ``api_call_interval`` measurements) and ``out`` (flush/stop) send the
  tracker totals;
- ``task_out`` sends each task's own totals with ``mlvigil.carbon.task`` (a breakdown: the
  tracker totals already include the tasks' energy).

Export failures are logged and counted (``failed_exports``), never raised into the job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from codecarbon.output_methods.base_output import BaseOutput
from codecarbon.output_methods.emissions_data import EmissionsData, TaskEmissionsData
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from mlvigil_producer.carbon_names import (
    DURATION,
    EMISSIONS,
    ENERGY,
    JOULES_PER_KWH,
    PROGRESS,
    STEPS_DONE,
    STEPS_PLANNED,
)

log = logging.getLogger(__name__)


# Point attributes (the server keeps point attributes of metrics, not resource ones).
ATTR_PROJECT = "mlvigil.carbon.project"
ATTR_TRACKER_RUN = "mlvigil.carbon.tracker_run"
ATTR_TASK = "mlvigil.carbon.task"
ATTR_COUNTRY = "mlvigil.carbon.country_iso_code"
ATTR_RUN_ID = "mlvigil.train.run_id"
ATTR_MODEL = "mlvigil.model.name"
ATTR_NAMESPACE = "k8s.namespace.name"
ATTR_TEAM = "mlvigil.team"


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _default_endpoint() -> str:
    metrics = os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    if metrics:
        return metrics
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return base.rstrip("/") + "/v1/metrics"


class MlvigilOutput(BaseOutput):
    """A codecarbon ``BaseOutput`` posting running totals to mlvigil's OTLP/HTTP receiver.

    Parameters
    ----------
    endpoint
        mlvigil's OTLP/HTTP address, with or without ``/v1/metrics``; default from
        ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``, else
        ``http://localhost:4318``.
    run_id, model, namespace, team
        Labels the budgets match on (``MLVIGIL_RUN_ID`` is read when ``run_id`` is None).
    service_name
        ``service.name`` of the resource; default ``OTEL_SERVICE_NAME``, else the project name.
    headers
        Extra HTTP headers, e.g. ``{"Authorization": "Bearer ..."}``.
    attributes
        More point attributes, sent with every point.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        run_id: str | None = None,
        model: str | None = None,
        namespace: str | None = None,
        team: str | None = None,
        service_name: str | None = None,
        headers: Mapping[str, str] | None = None,
        attributes: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> None:
        url = endpoint or _default_endpoint()
        self.url = url if url.rstrip("/").endswith("/v1/metrics") else url.rstrip("/") + "/v1/metrics"
        self.timeout = timeout
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.service_name = service_name or os.environ.get("OTEL_SERVICE_NAME")
        labels = {
            ATTR_RUN_ID: run_id or os.environ.get("MLVIGIL_RUN_ID"),
            ATTR_MODEL: model,
            ATTR_NAMESPACE: namespace,
            ATTR_TEAM: team,
            **(attributes or {}),
        }
        self._labels = [_kv(k, str(v)) for k, v in labels.items() if v is not None]
        self._host = socket.gethostname()
        self._lock = threading.Lock()
        self._progress: float | None = None
        self._steps_done: float | None = None
        self._steps_planned: float | None = None
        self.sent_exports = 0
        self.failed_exports = 0

    # -- progress, for the forecast ----------------------------------------------------------
    def set_progress(
        self,
        fraction: float | None = None,
        *,
        steps_done: float | None = None,
        steps_planned: float | None = None,
    ) -> None:
        """Record how far the job is; sent with the next measurement."""
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError("progress fraction must be within [0, 1]")
        with self._lock:
            if fraction is not None:
                self._progress = float(fraction)
            if steps_done is not None:
                self._steps_done = float(steps_done)
            if steps_planned is not None:
                self._steps_planned = float(steps_planned)

    # -- codecarbon's BaseOutput -----------------------------------------------------------
    def live_out(self, total: EmissionsData, delta: EmissionsData) -> None:
        self._send([(total, None)])

    def out(self, total: EmissionsData, delta: EmissionsData) -> None:
        self._send([(total, None)])

    def task_out(self, data: Sequence[TaskEmissionsData], experiment_name: str) -> None:
        self._send([(task, task.task_name) for task in data])

    # -- encoding and export ---------------------------------------------------------------
    def build_request(
        self, items: Sequence[tuple[EmissionsData | TaskEmissionsData, str | None]], now_ns: int | None = None
    ) -> ExportMetricsServiceRequest:
        """The OTLP request for these totals (public so tests and benchmarks can inspect it)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        energy = Metric(name=ENERGY, unit="J", description="codecarbon energy consumed, running total")
        emissions = Metric(name=EMISSIONS, unit="g", description="codecarbon CO2e emissions, running total")
        duration = Metric(name=DURATION, unit="s", description="codecarbon tracked duration")
        for m in (energy, emissions):
            m.sum.aggregation_temporality = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
            m.sum.is_monotonic = True
        metrics = [energy, emissions, duration]
        project = ""
        with self._lock:
            progress, done, planned = self._progress, self._steps_done, self._steps_planned
        gauges: list[Metric] = []
        for data, task in items:
            project = data.project_name or project
            attrs = [
                _kv(ATTR_PROJECT, data.project_name or ""),
                _kv(ATTR_TRACKER_RUN, str(data.run_id)),
                _kv(ATTR_COUNTRY, data.country_iso_code or ""),
                *self._labels,
            ]
            if task is not None:
                attrs.append(_kv(ATTR_TASK, task))
            start_ns = now_ns - int(max(0.0, float(data.duration)) * 1e9)
            self._point(energy.sum, attrs, start_ns, now_ns, float(data.energy_consumed) * JOULES_PER_KWH)
            self._point(emissions.sum, attrs, start_ns, now_ns, float(data.emissions) * 1000.0)
            self._point(duration.gauge, attrs, start_ns, now_ns, float(data.duration))
            if task is None:
                for name, value in ((PROGRESS, progress), (STEPS_DONE, done), (STEPS_PLANNED, planned)):
                    if value is not None:
                        g = Metric(name=name, unit="1")
                        self._point(g.gauge, attrs, start_ns, now_ns, value)
                        gauges.append(g)
        resource = Resource(
            attributes=[
                _kv("service.name", self.service_name or project or "codecarbon"),
                _kv("host.name", self._host),
            ]
        )
        scope = InstrumentationScope(name="mlvigil_producer.codecarbon_output")
        return ExportMetricsServiceRequest(
            resource_metrics=[
                ResourceMetrics(
                    resource=resource, scope_metrics=[ScopeMetrics(scope=scope, metrics=metrics + gauges)]
                )
            ]
        )

    @staticmethod
    def _point(body: Sum | Gauge, attrs: list[KeyValue], start_ns: int, now_ns: int, value: float) -> None:
        body.data_points.append(
            NumberDataPoint(
                attributes=attrs, start_time_unix_nano=start_ns, time_unix_nano=now_ns, as_double=value
            )
        )

    def _send(self, items: Sequence[tuple[EmissionsData | TaskEmissionsData, str | None]]) -> None:
        if not items:
            return
        try:
            body = self.build_request(items).SerializeToString()
            req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self.sent_exports += 1
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # The next export carries the same running totals, so nothing is lost for good.
            self.failed_exports += 1
            log.warning("mlvigil carbon export to %s failed: %s", self.url, exc)

    def exit(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {"sent_exports": self.sent_exports, "failed_exports": self.failed_exports}
