"""Drift statistics in worker processes, through the real service: a window's statistics run
in a low-priority child process (not in the service, where they would take ingest's GIL),
and a worker that dies or stalls costs one evaluation at most, never the service."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from tests.harness import ServiceHandle
from tests.test_drift_fleet import _monitor, _reference, _send, _status


def _stat(pid: int) -> list[str]:
    # Fields after the command name (which may hold spaces): state is [0], ppid [1], nice [16].
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _new_verdict(svc: ServiceHandle, rng: np.random.Generator, tag: str) -> dict[str, Any]:
    """Rows that move the window, then one evaluation: the monitor's status after it."""
    before = svc.stats()["inferences"]
    _send(svc, rng, 100, shift=1.0, tag=tag)
    svc.wait_for(lambda: svc.stats()["inferences"] >= before + 100)
    svc.evaluate()
    return _status(svc, "w")


def test_statistics_run_in_a_worker_and_a_dead_or_stalled_worker_never_stops_the_service(
    service_factory,
) -> None:
    svc: ServiceHandle = service_factory(
        {"detectors": {"interval": 3600, "drift": {"statistics_timeout": 5}}}
    )
    assert svc.proc is not None
    rng = np.random.default_rng(3)
    svc.post("/api/v1/monitors", _monitor("w", correction="bh"))
    svc.post("/api/v1/monitors/w/reference", _reference(rng))
    _send(svc, rng, 400, shift=1.0)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 400)

    svc.evaluate()
    first = _status(svc, "w")
    assert first["status"] == "drift"
    worker = first["statistics"]["worker_pid"]
    # A child process of the service, at a lower CPU priority than the service.
    assert worker != svc.proc.pid
    assert int(_stat(worker)[1]) == svc.proc.pid
    assert int(_stat(worker)[16]) > int(_stat(svc.proc.pid)[16])
    assert svc.findings(kind="data_drift", monitor="w")

    # A worker killed (out of memory, say): the next window is decided in a fresh one.
    os.kill(worker, signal.SIGKILL)
    after_kill = _new_verdict(svc, rng, "k")
    assert after_kill["status"] == "drift"
    stalled = after_kill["statistics"]["worker_pid"]
    assert stalled != worker

    # A worker that stops answering: the evaluation gives up after statistics_timeout, says
    # why, keeps the monitor's finding, and the stalled worker is stopped.
    os.kill(stalled, signal.SIGSTOP)
    try:
        timed_out = _new_verdict(svc, rng, "s")
        assert timed_out["status"] == "error"
        assert "longer than 5 s" in timed_out["error"]
        assert svc.findings(kind="data_drift", monitor="w")  # not resolved by the failure
        svc.wait_for(lambda: not _alive(stalled), timeout=10)
    finally:
        if _alive(stalled):
            os.kill(stalled, signal.SIGKILL)
    assert svc.get("/healthz")

    recovered = _new_verdict(svc, rng, "again")
    assert recovered["status"] == "drift"
    assert recovered["statistics"]["worker_pid"] not in (worker, stalled)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat(int(stat.parent.name))[1]) == pid:
                out.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


SCHED_IDLE = 5  # the policy field of /proc/PID/stat ([38] after the command name)


def test_a_calibration_yields_the_cpu_to_the_statistics_of_steady_verdicts(service_factory) -> None:
    # At the same priority, a calibration's seconds of CPU made each window's statistics wait
    # behind it: a calibration runs in the idle scheduling class, the statistics at nice +10.
    svc: ServiceHandle = service_factory({"detectors": {"interval": 3600}})
    assert svc.proc is not None
    rng = np.random.default_rng(5)
    svc.post("/api/v1/monitors", _monitor("slow", null_windows=100_000))  # minutes of calibration
    svc.post("/api/v1/monitors/slow/reference", _reference(rng))
    _send(svc, rng, 400)
    svc.wait_for(lambda: svc.stats()["inferences"] >= 400)
    svc.evaluate()
    status = _status(svc, "slow")
    assert status["calibration"] == "pending"
    statistics = status["statistics"]["worker_pid"]
    service = svc.proc.pid
    service_nice = int(_stat(service)[16])

    def calibration_worker() -> int | None:
        idle = [p for p in _children(service) if p != statistics and int(_stat(p)[38]) == SCHED_IDLE]
        return idle[0] if idle else None

    calibration = svc.wait_for(calibration_worker, timeout=30)
    assert calibration is not None
    assert int(_stat(statistics)[38]) != SCHED_IDLE
    assert int(_stat(statistics)[16]) == min(19, service_nice + 10)
    assert int(_stat(calibration)[16]) >= int(_stat(statistics)[16])
