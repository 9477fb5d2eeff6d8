"""The scripted fake backend, the recorder and replay of recorded scenario files."""

from __future__ import annotations

from pathlib import Path

import pynvml
import pytest

from gpu_health import names as n
from gpu_health.fake import FakeBackend, FakeClock, Scenario, ScenarioError, builtin_scenario
from gpu_health.health import GpuHealthDetector
from gpu_health.record import Recorder
from gpu_health.sampler import Attrs, Point, Sampler, cgroup_attrs
from gpu_health.simulate import Simulation
from mlvigil.core.store.duckdb import DuckDBStore

FIXTURES = Path(__file__).parent / "fixtures" / "gpu"


Values = dict[tuple[str, Attrs], float]


def _values(points: list[Point]) -> Values:
    return {(name, attrs): value for name, value, attrs in points}


def test_fake_raises_the_real_nvml_exceptions() -> None:
    sc = Scenario(
        {
            "gpus": [{"count": 2, "unsupported": ["nvlink"]}],
            "timeline": [
                {"at": 5, "gpu": 0, "fail": {"processes": "NoPermission"}},
                {"at": 10, "gpu": 1, "lost": True},
            ],
        }
    )
    clock = FakeClock()
    backend = FakeBackend(sc, clock)
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        backend.device_count()
    backend.init()
    with pytest.raises(pynvml.NVMLError_NotSupported):
        backend.nvlink(0)
    clock.advance(5)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        backend.processes(0)
    clock.advance(5)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        backend.utilization(1)
    assert backend.utilization(0).gpu == pytest.approx(0.95)


def test_init_error_is_the_named_nvml_error() -> None:
    backend = FakeBackend(Scenario({"init_error": "DriverNotLoaded", "gpus": [{}]}))
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        backend.init()


def test_timeline_ramps_rates_and_energy() -> None:
    sc = Scenario(
        {
            "gpus": [{"state": {"power.usage_w": 400.0}}],
            "timeline": [
                {"at": "10s", "gpu": 0, "ramp": {"temperatures.gpu": {"to": 82, "over": "20s"}}},
                {"at": 0, "gpu": 0, "rate": {"pcie.replay": 2}},
                {"at": 30, "gpu": 0, "rate": {"pcie.replay": 0}},
            ],
        }
    )
    clock = FakeClock()
    backend = FakeBackend(sc, clock)
    backend.init()
    clock.advance(20)
    assert backend.temperatures(0).gpu == pytest.approx(72.0)  # halfway from 62 to 82
    assert backend.pcie(0).replay == 40
    clock.advance(20)
    assert backend.temperatures(0).gpu == pytest.approx(82.0)
    assert backend.pcie(0).replay == 60  # the rate stopped at 30 s
    assert backend.energy(0) == pytest.approx(400.0 * 40)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"gpus": [{}], "timeline": [{"gpu": 0, "xid": 79}]}, "needs 'at'"),
        ({"gpus": [{}], "timeline": [{"at": 1, "gpu": 3, "xid": 79}]}, "gpu 3 is not an index below 1"),
        ({"gpus": [{"state": {"bogus.key": 1}}]}, "unknown state key 'bogus.key'"),
        ({"gpus": [{}], "timeline": [{"at": 1, "fail": {"power": "NoSuchError"}}]}, "unknown NVML error"),
        ({"gpus": [{}], "timeline": [{"at": 1, "explode": True}]}, "unknown key(s) ['explode']"),
    ],
)
def test_bad_scenarios_say_where(raw: dict[str, object], message: str) -> None:
    with pytest.raises((ScenarioError, ValueError), match=None) as err:
        Scenario(raw, "s.yaml")
    assert message in str(err.value)


def test_every_builtin_scenario_loads() -> None:
    for path in sorted(builtin_scenario("demo").parent.glob("*.yaml")):
        assert Scenario.load(path).gpus, path


def test_cgroup_attrs_of_a_kubernetes_process(tmp_path: Path) -> None:
    cid = "a" * 64
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(
        "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_1111_2222_3333_444455556666"
        f".slice/cri-containerd-{cid}.scope\n"
    )
    assert cgroup_attrs(42, str(tmp_path)) == (
        ("k8s.pod.uid", "1b2c3d4e-1111-2222-3333-444455556666"),
        ("container.id", cid),
    )
    assert cgroup_attrs(43, str(tmp_path)) == ()


def _record(scenario: Path, passes: int, step: float) -> tuple[Recorder, list[list[Values]]]:
    clock = FakeClock()
    recorder = Recorder()
    sampler = Sampler(FakeBackend(Scenario.load(scenario), clock), clock=clock.wall, observer=recorder)
    sampler.open()
    recorder.system = sampler.system
    seen = []
    for _ in range(passes):
        samples = sampler.sample()
        recorder.end_pass(samples[0].ts)
        seen.append([_values(s.points) for s in samples])
        clock.advance(step)
    return recorder, seen


def test_record_then_replay_gives_the_same_points(tmp_path: Path) -> None:
    recorder, original = _record(builtin_scenario("fall_off_bus"), passes=30, step=1.0)
    path = tmp_path / "recorded.yaml"
    recorder.write(path)
    replay = Scenario.load(path)
    clock = FakeClock()
    sampler = Sampler(FakeBackend(replay, clock), clock=clock.wall)
    sampler.open()
    for expected in original:
        assert [_values(s.points) for s in sampler.sample()] == expected
        clock.advance(1.0)
    assert any(step.get("lost") for step in replay.steps) and any(
        step.get("xid") == 79 for step in replay.steps
    )


@pytest.mark.parametrize("fixture", sorted(FIXTURES.glob("*.yaml")), ids=lambda p: p.name)
def test_recorded_fixture_replays_through_the_rules(fixture: Path, tmp_path: Path) -> None:
    """Files recorded with `mlvigil agent --record` (on a GPU machine) replay here."""
    sim = Simulation.start(fixture, DuckDBStore(tmp_path))
    sim.run(30, 1.0)
    assert sim.latest
    for sample in sim.latest:
        assert sample.uuid.startswith("GPU-") and sample.name
        values = _values(sample.points)
        if not sample.lost:
            util = values.get((n.UTILIZATION, ()))
            assert util is None or 0.0 <= util <= 1.0
            temp = values.get((n.TEMPERATURE, ()))
            assert temp is None or 0.0 < temp < 120.0
    GpuHealthDetector().evaluate(sim.store, sim.now)  # type: ignore[arg-type]
