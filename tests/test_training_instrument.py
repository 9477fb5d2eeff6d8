"""The producer helper: real OTel SDK spans that the collector turns into training_steps rows."""

from __future__ import annotations

import math

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.normalize import NormaliseOptions, normalise_traces
from mlvigil_producer.training import TrainingTelemetry


def test_step_spans_follow_the_conventions_and_normalise_to_rows() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "trainer", "host.name": "node-7", "k8s.pod.name": "job-worker-3"}
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tel = TrainingTelemetry("run-42", rank=3, world_size=8, gpu_uuid="GPU-abc", tracer_provider=provider)
    for step in range(3):
        with tel.step(step) as s:
            with s.phase("data_wait"):
                pass
            with s.phase("forward"):
                sum(range(1000))
            s.add_time("comm", 0.25)
            s.add_time("comm", 0.25)
            s.set(loss=2.0 - step * 0.1, grad_norm=1.5, samples=32, tokens=None, learning_rate=1e-4)
    spans = exporter.get_finished_spans()
    assert [sp.name for sp in spans] == ["train.step"] * 3
    attrs = dict(spans[2].attributes or {})
    assert attrs["mlvigil.train.run_id"] == "run-42" and attrs["mlvigil.train.step"] == 2
    assert attrs["mlvigil.train.rank"] == 3 and attrs["mlvigil.train.world_size"] == 8
    assert attrs["mlvigil.train.comm_seconds"] == 0.5
    assert "mlvigil.train.tokens" not in attrs

    rows = normalise_traces(encode_spans(spans), NormaliseOptions()).batch.columns["training_steps"]
    assert rows["run_id"] == ["run-42"] * 3 and rows["step"] == [0, 1, 2]
    assert rows["host"] == ["node-7"] * 3 and rows["k8s_pod"] == ["job-worker-3"] * 3
    assert rows["gpu_uuid"] == ["GPU-abc"] * 3
    assert math.isclose(rows["loss"][2], 1.8) and rows["samples"][0] == 32.0 and rows["comm_s"][1] == 0.5
    assert all(t is not None and t >= rows["forward_s"][i] for i, t in enumerate(rows["step_time_s"]))
    provider.shutdown()


def test_unknown_phase_or_value_is_an_error() -> None:
    tel = TrainingTelemetry("r", rank=0, world_size=1, tracer_provider=TracerProvider())
    with tel.step(0) as s:
        with pytest.raises(ValueError, match="unknown phase"), s.phase("fwd"):
            pass
        with pytest.raises(ValueError, match="unknown value"):
            s.set(los=1.0)


def test_rank_and_world_size_default_to_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "16")
    tel = TrainingTelemetry("r", tracer_provider=TracerProvider())
    assert (tel.rank, tel.world_size) == (5, 16)
