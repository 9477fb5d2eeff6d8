"""Cost of one GPU agent sampling pass, against the bare NVML calls it makes.

Run: ``python bench/gpu/run.py [--gpus 8] [--passes 300]`` (the fake backend), or
``python bench/gpu/run.py --backend nvml`` on a machine with NVIDIA GPUs (every GPU it
has; the groups NVML answers NotSupported for are left out of the bare calls, as the
sampler leaves them out after its first pass). Measures CPU time (process time, so
waiting never counts) of:

- bare: the backend calls of one pass, made directly (one per field group, per GPU);
- pass: ``Sampler.sample()`` (the same calls plus turning results into points);
- ship: ``pass`` + building and serialising the OTLP export request;
- scrape: rendering ``/metrics`` from the latest pass (once per scrape, not per pass).

and prints per-GPU microseconds, the agent's overhead over the bare calls, and the share
of one core at 1 Hz for the GPU count, against the target of at most 1 % for 8 GPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prometheus_client import CollectorRegistry, generate_latest

from gpu_health.backend import FIELD_GROUPS
from gpu_health.fake import FakeBackend, FakeClock, Scenario
from gpu_health.otlp import build_request, resource_attributes
from gpu_health.prom import GpuCollector
from gpu_health.sampler import Sampler


def _cpu(fn: Callable[[], object], repeat: int) -> float:
    """CPU seconds per call, best of three rounds (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        for _ in range(repeat):
            fn()
        best = min(best, (time.process_time() - t0) / repeat)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--passes", type=int, default=300)
    ap.add_argument("--backend", choices=("fake", "nvml"), default="fake")
    args = ap.parse_args(argv)
    if args.backend == "nvml":
        return _real_nvml(args.passes)

    scenario = Scenario(
        {
            "gpus": [{"count": args.gpus, "state": {"processes": [{"pid": 4242, "used_memory": 1 << 30}]}}],
            "timeline": [{"at": 0, "gpu": "all", "rate": {"pcie.replay": 0.1, "nvlink.3.crc_flit": 1}}],
        },
        "bench",
    )
    clock = FakeClock()
    backend = FakeBackend(scenario, clock)
    sampler = Sampler(backend, clock=clock.wall, proc_root="/nonexistent")
    sampler.open()
    handles = [g.handle for g in sampler.gpus]
    calls = [getattr(backend, group) for group in FIELD_GROUPS]

    def bare() -> None:
        clock.advance(1.0)
        backend.xid_events()
        for h in handles:
            for call in calls:
                call(h)

    def one_pass() -> None:
        clock.advance(1.0)
        sampler.sample()

    shared = resource_attributes("bench-node", {})

    def ship() -> None:
        clock.advance(1.0)
        build_request(sampler.sample(), shared, clock.epoch).SerializeToString()

    latest = sampler.sample()
    registry = CollectorRegistry()
    registry.register(GpuCollector(lambda: latest, "bench-node"))

    def scrape() -> None:
        generate_latest(registry)

    n = args.passes
    t_bare = _cpu(bare, n)
    t_pass = _cpu(one_pass, n)
    t_ship = _cpu(ship, n)
    t_scrape = _cpu(scrape, max(n // 10, 10))
    points = sum(len(s.points) for s in latest) / len(latest)
    g = args.gpus
    print(f"GPU agent, fake backend: {g} GPUs, {points:.0f} points per GPU per pass, {n} passes x 3 rounds")
    print(f"  bare NVML calls   {t_bare / g * 1e6:8.1f} us CPU per GPU")
    print(f"  sampling pass     {t_pass / g * 1e6:8.1f} us CPU per GPU (x{t_pass / t_bare:.2f} bare)")
    print(f"  pass + OTLP ship  {t_ship / g * 1e6:8.1f} us CPU per GPU (x{t_ship / t_bare:.2f} bare)")
    print(f"  /metrics scrape   {t_scrape / g * 1e6:8.1f} us CPU per GPU   (per scrape)")
    agent_only = t_ship - t_bare
    share = t_ship * 1.0  # one pass per second
    print(f"  agent's own work  {agent_only / g * 1e6:8.1f} us CPU per GPU beyond the bare calls")
    print(
        f"  at 1 Hz with {g} GPUs: {share * 100:.3f}% of one core including the fake's calls,"
        f" {agent_only * 100:.3f}% for the agent's own work (target <= 1%)"
    )
    sampler.close()
    return 0 if share <= 0.01 else 1


def _real_nvml(n: int) -> int:
    """The same rows against libnvidia-ml: what a pass costs on real GPUs."""
    import pynvml

    from gpu_health.nvml import NvmlBackend

    backend = NvmlBackend()
    sampler = Sampler(backend)
    try:
        sampler.open()
    except pynvml.NVMLError as exc:
        print(f"no NVIDIA GPU to measure here: {exc}", file=sys.stderr)
        return 2
    latest = sampler.sample()
    g = len(latest)
    handles = [(gpu.handle, set(s.unsupported)) for gpu, s in zip(sampler.gpus, latest, strict=True)]

    def bare() -> None:
        backend.xid_events()
        for h, unsupported in handles:
            for group in FIELD_GROUPS:
                if group not in unsupported:
                    with contextlib.suppress(pynvml.NVMLError):
                        getattr(backend, group)(h)

    shared = resource_attributes("bench-node", {})
    t_bare = _cpu(bare, n)
    t_pass = _cpu(sampler.sample, n)
    t_ship = _cpu(lambda: build_request(sampler.sample(), shared, time.time()).SerializeToString(), n)
    points = sum(len(s.points) for s in latest) / g
    system = sampler.system
    print(f"GPU agent, real NVML (driver {system.driver_version}): {g} x {latest[0].name},")
    print(f"  {points:.0f} points per GPU per pass, unsupported {latest[0].unsupported}, {n} passes x 3")
    print(f"  bare NVML calls   {t_bare / g * 1e6:8.1f} us CPU per GPU")
    print(f"  sampling pass     {t_pass / g * 1e6:8.1f} us CPU per GPU (x{t_pass / t_bare:.2f} bare)")
    print(f"  pass + OTLP ship  {t_ship / g * 1e6:8.1f} us CPU per GPU (x{t_ship / t_bare:.2f} bare)")
    print(f"  agent's own work  {(t_ship - t_bare) / g * 1e6:8.1f} us CPU per GPU beyond the bare calls")
    print(f"  at 1 Hz: {t_ship * 100:.3f}% of one core per {g} GPU(s), NVML's calls included")
    sampler.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
