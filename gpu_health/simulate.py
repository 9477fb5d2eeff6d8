"""Play a scenario in simulated time straight into a store: tests, benchmarks and the demo.

Each pass goes the way real points go: sampler -> OTLP export request -> the collector's
normaliser -> ``metric_points`` rows, so what the rules read is what a real agent's
points become on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collector.normalize import NormaliseOptions, normalise_metrics
from gpu_health.fake import FakeBackend, FakeClock, Scenario
from gpu_health.otlp import build_request
from gpu_health.sampler import GpuSample, Sampler
from mlvigil.core.store import Store


@dataclass
class Simulation:
    scenario: Scenario
    clock: FakeClock
    backend: FakeBackend
    sampler: Sampler
    store: Store | None
    node: str = "node-a"
    latest: list[GpuSample] | None = None

    @classmethod
    def start(
        cls,
        scenario: Scenario | str | Path,
        store: Store | None = None,
        *,
        epoch: float = 1_700_000_000.0,
        node: str = "node-a",
    ) -> Simulation:
        sc = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        clock = FakeClock(epoch=epoch)
        backend = FakeBackend(sc, clock)
        sampler = Sampler(backend, clock=clock.wall, processes=True)
        sampler.open()
        return cls(sc, clock, backend, sampler, store, node)

    @property
    def now(self) -> float:
        """Wall time of the simulation (epoch seconds)."""
        return self.clock.wall()

    def run(self, seconds: float, step: float = 1.0) -> float:
        """Sample every ``step`` seconds for ``seconds``, storing each pass; returns the wall time."""
        end = self.clock.now + seconds
        while self.clock.now < end - 1e-9:
            self.clock.advance(step)
            self.pass_once()
        return self.now

    def pass_once(self) -> list[GpuSample]:
        samples = self.sampler.sample()
        self.latest = samples
        if self.store is not None:
            req = build_request(
                samples, {"host.name": self.node, "service.name": "mlvigil-agent"}, self.clock.epoch
            )
            self.store.append(normalise_metrics(req, NormaliseOptions()).batch)
        return samples
