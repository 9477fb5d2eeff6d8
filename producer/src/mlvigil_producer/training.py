"""Step spans for a training loop, following the ``mlvigil.train.*`` conventions.

A few lines in a PyTorch (or any) loop::

    from mlvigil_producer.training import TrainingTelemetry, configure_otlp

    configure_otlp("http://mlvigil:4318", service_name="trainer")   # once per process
    telemetry = TrainingTelemetry(run_id="llama-ft-42")              # rank/world size from env

    for step, batch in enumerate(loader_iter):
        with telemetry.step(step) as s:
            with s.phase("data_wait"):
                batch = next(loader_iter)
            with s.phase("forward"):
                loss = model(batch)
            with s.phase("backward"):
                loss.backward()
            with s.phase("optimizer"):
                opt.step(); opt.zero_grad()
            s.set(loss=loss, samples=len(batch), learning_rate=sched.get_last_lr()[0])

Each step becomes one span named ``train.step`` whose attributes carry the run id, step,
rank, world size, phase times and whatever ``set`` received. Only the OpenTelemetry API is
needed here; ``configure_otlp`` also uses the SDK and its OTLP/HTTP exporter.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace

PHASES = {
    "data_wait": "mlvigil.train.data_wait_seconds",
    "data": "mlvigil.train.data_wait_seconds",
    "forward": "mlvigil.train.forward_seconds",
    "backward": "mlvigil.train.backward_seconds",
    "optimizer": "mlvigil.train.optimizer_seconds",
    "comm": "mlvigil.train.comm_seconds",
    "checkpoint": "mlvigil.train.checkpoint_seconds",
}
VALUES = {
    "loss": "mlvigil.train.loss",
    "grad_norm": "mlvigil.train.grad_norm",
    "learning_rate": "mlvigil.train.learning_rate",
    "samples": "mlvigil.train.samples",
    "tokens": "mlvigil.train.tokens",
}


def _float(value: Any) -> float:
    # float() of a 0-d torch tensor calls .item(): a device sync, so set the loss when it is
    # already on the host (or only every N steps).
    return float(value)


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return None


class StepSpan:
    """The span of one step; ``phase`` times a part of it, ``set`` records its numbers."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.times: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (data_wait, forward, backward, optimizer, comm, checkpoint); repeats add up."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; known: {sorted(PHASES)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(name, time.perf_counter() - start)

    def add_time(self, name: str, seconds: float) -> None:
        """Add seconds measured elsewhere (e.g. CUDA events) to a phase."""
        key = PHASES[name]
        self.times[key] = self.times.get(key, 0.0) + seconds

    def set(self, **values: Any) -> None:
        """Record loss, grad_norm, learning_rate, samples, tokens (None is skipped)."""
        for name, value in values.items():
            if name not in VALUES:
                raise ValueError(f"unknown value {name!r}; known: {sorted(VALUES)}")
            if value is not None:
                self.span.set_attribute(VALUES[name], _float(value))


class TrainingTelemetry:
    """Emits one ``train.step`` span per step for one rank of one run.

    Parameters
    ----------
    run_id
        Identifies the run across ranks and restarts.
    rank, world_size
        Default to the ``RANK``/``WORLD_SIZE`` variables torchrun sets (else 0 and 1).
    gpu_uuid
        The NVML UUID of this rank's GPU (``nvidia-smi -L``), joining the run to GPU health.
    tracer_provider
        Default: the global provider (see ``configure_otlp``).
    """

    def __init__(
        self,
        run_id: str,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        gpu_uuid: str | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        span_name: str = "train.step",
    ) -> None:
        self.run_id = run_id
        self.rank = rank if rank is not None else (_env_int("RANK") or 0)
        self.world_size = world_size if world_size is not None else (_env_int("WORLD_SIZE") or 1)
        self.gpu_uuid = gpu_uuid
        self.span_name = span_name
        self.tracer = trace.get_tracer("mlvigil_producer.training", tracer_provider=tracer_provider)

    @contextmanager
    def step(self, step: int, **values: Any) -> Iterator[StepSpan]:
        """Span of one step; ``values`` as for ``StepSpan.set``."""
        attrs: dict[str, Any] = {
            "mlvigil.train.run_id": self.run_id,
            "mlvigil.train.step": int(step),
            "mlvigil.train.rank": self.rank,
            "mlvigil.train.world_size": self.world_size,
        }
        if self.gpu_uuid:
            attrs["mlvigil.train.gpu_uuid"] = self.gpu_uuid
        with self.tracer.start_as_current_span(self.span_name, attributes=attrs) as span:
            s = StepSpan(span)
            start = time.perf_counter()
            try:
                s.set(**values)
                yield s
            finally:
                elapsed = time.perf_counter() - start
                for key, seconds in s.times.items():
                    span.set_attribute(key, seconds)
                if math.isfinite(elapsed):
                    span.set_attribute("mlvigil.train.step_time_seconds", elapsed)


def configure_otlp(
    endpoint: str,
    *,
    service_name: str = "trainer",
    headers: dict[str, str] | None = None,
    resource: dict[str, Any] | None = None,
    set_global: bool = True,
) -> Any:
    """A TracerProvider exporting in batches over OTLP/HTTP to ``endpoint`` (``http://host:4318``).

    The resource carries ``host.name`` and, on Kubernetes, ``k8s.pod.name`` (``POD_NAME``
    or ``HOSTNAME``) so that findings name the node and pod. Call ``shutdown()`` on the
    returned provider at the end of training to flush.
    """
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attrs: dict[str, Any] = {"service.name": service_name, "host.name": socket.gethostname()}
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        attrs["k8s.pod.name"] = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME", "")
    attrs.update(resource or {})
    provider = TracerProvider(resource=Resource.create(attrs))
    exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces", headers=headers)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider
