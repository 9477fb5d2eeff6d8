"""The real nvidia-ml-py backend, without a GPU.

This machine has no libnvidia-ml, so nvmlInit raises the real LibraryNotFound. Other
driver answers are provoked by a scripted stand-in for the shared library: pynvml's own
wrapper code runs unchanged (argument marshalling, return-code checks, exception
classes); only the C functions it looks up answer from a script.
"""

from __future__ import annotations

import argparse
import ctypes
from collections.abc import Callable
from typing import Any

import pynvml
import pytest

from gpu_health import names as n
from gpu_health.cli import EXIT_UNAVAILABLE, add_cli
from gpu_health.nvml import NvmlBackend
from gpu_health.sampler import Sampler


def _fill(arg: Any, value: int) -> None:
    """Write an output argument the way the C function would."""
    obj = getattr(arg, "_obj", None)  # byref(x) -> x
    if obj is None:
        if isinstance(arg, ctypes.Array) and arg._type_ is ctypes.c_char:
            arg.value = b"scripted"
        return
    if isinstance(obj, ctypes.c_uint | ctypes.c_int | ctypes.c_ulonglong | ctypes.c_ulong):
        obj.value = value


class ScriptedNvml:
    """Looks like the loaded libnvidia-ml: every attribute is a C function returning an NVML code."""

    def __init__(self, codes: dict[str, int] | None = None, outputs: dict[str, int] | None = None) -> None:
        self.codes = codes or {}
        self.outputs = outputs or {}
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., int]:
        if name.startswith("__"):
            raise AttributeError(name)

        def fn(*args: Any) -> int:
            self.calls.append(name)
            code = self.codes.get(name, pynvml.NVML_SUCCESS)
            if code == pynvml.NVML_SUCCESS:
                for arg in args:
                    _fill(arg, self.outputs.get(name, 1))
            return code

        return fn


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ScriptedNvml]:
    def install(codes: dict[str, int] | None = None, outputs: dict[str, int] | None = None) -> ScriptedNvml:
        lib = ScriptedNvml(codes, {"nvmlDeviceGetCount_v2": 1, "nvmlEventSetWait_v2": 0, **(outputs or {})})
        lib.codes.setdefault("nvmlEventSetWait_v2", pynvml.NVML_ERROR_TIMEOUT)
        monkeypatch.setattr(pynvml, "nvmlLib", lib)
        monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
        return lib

    return install


def _agent_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    return parser.parse_args(["agent", *argv])


def test_no_library_raises_library_not_found_here() -> None:
    if pynvml.nvmlLib is not None:
        pytest.skip("a real libnvidia-ml is loaded on this machine")
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        NvmlBackend().init()


def test_agent_without_library_exits_cleanly_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    if pynvml.nvmlLib is not None:
        pytest.skip("a real libnvidia-ml is loaded on this machine")
    args = _agent_args("--once")
    assert args.func(args) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "libnvidia-ml.so.1 not found" in err
    assert "Traceback" not in err


def test_driver_not_loaded(scripted: Callable[..., ScriptedNvml], capsys: pytest.CaptureFixture[str]) -> None:
    scripted({"nvmlInitWithFlags": pynvml.NVML_ERROR_DRIVER_NOT_LOADED})
    with pytest.raises(pynvml.NVMLError_DriverNotLoaded):
        NvmlBackend().init()
    args = _agent_args("--once")
    assert args.func(args) == EXIT_UNAVAILABLE
    err = capsys.readouterr().err
    assert (
        err.strip() == "mlvigil agent: the NVIDIA kernel driver is not loaded on this node: nothing to sample"
    )


def test_no_gpu_is_a_clean_exit(
    scripted: Callable[..., ScriptedNvml], capsys: pytest.CaptureFixture[str]
) -> None:
    scripted(outputs={"nvmlDeviceGetCount_v2": 0})
    args = _agent_args("--once")
    assert args.func(args) == EXIT_UNAVAILABLE
    assert "no NVIDIA GPU" in capsys.readouterr().err


def test_not_supported_on_one_group_never_stops_the_others(scripted: Callable[..., ScriptedNvml]) -> None:
    lib = scripted(
        {
            "nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetTotalEccErrors": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetNvLinkState": pynvml.NVML_ERROR_NOT_SUPPORTED,
            "nvmlDeviceGetTemperatureThreshold": pynvml.NVML_ERROR_NOT_SUPPORTED,
        },
        outputs={
            "nvmlDeviceGetClockInfo": 1410,
            "nvmlDeviceGetMaxClockInfo": 1980,
            "nvmlDeviceGetTemperature": 55,
        },
    )
    sampler = Sampler(NvmlBackend(), processes=False)
    sampler.open()
    (sample,) = sampler.sample()
    assert sample.uuid == "scripted" and not sample.lost
    assert sample.unsupported == ["ecc", "nvlink", "power"]
    values = {(name, attrs): value for name, value, attrs in sample.points}
    assert values[(n.CLOCK_SM, ())] == 1410.0 and values[(n.CLOCK_SM_MAX, ())] == 1980.0
    assert values[(n.TEMPERATURE, ())] == 55.0
    assert (n.TEMPERATURE_SLOWDOWN, ()) not in values  # optional part: absent, group still read
    assert (n.PCIE_REPLAY, ()) in values and (n.ENERGY, (("hw.type", "gpu"),)) in values
    assert not any(name == n.POWER for name, _, _ in sample.points)
    # Unsupported groups are not asked again on the next pass.
    lib.calls.clear()
    sampler.sample()
    assert "nvmlDeviceGetPowerUsage" not in lib.calls and "nvmlDeviceGetTotalEccErrors" not in lib.calls
    assert "nvmlDeviceGetClockInfo" in lib.calls
    sampler.close()


def test_other_errors_are_recorded_and_the_pass_goes_on(scripted: Callable[..., ScriptedNvml]) -> None:
    scripted({"nvmlDeviceGetComputeRunningProcesses_v3": pynvml.NVML_ERROR_NO_PERMISSION})
    sampler = Sampler(NvmlBackend())
    sampler.open()
    (sample,) = sampler.sample()
    assert sample.errors == {"processes": "NoPermission"}
    assert any(name == n.UTILIZATION for name, _, _ in sample.points)
    sampler.close()


def test_gpu_is_lost_is_reported_not_raised(scripted: Callable[..., ScriptedNvml]) -> None:
    lib = scripted()
    sampler = Sampler(NvmlBackend())
    sampler.open()
    (first,) = sampler.sample()
    assert not first.lost
    lib.codes.update(
        {
            name: pynvml.NVML_ERROR_GPU_IS_LOST
            for name in ("nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetClockInfo")
        }
    )
    (second,) = sampler.sample()
    assert second.lost
    assert (n.LOST, 1.0, ()) in second.points
    sampler.close()


def test_xid_events_arrive_through_the_event_set(scripted: Callable[..., ScriptedNvml]) -> None:
    lib = scripted()
    sampler = Sampler(NvmlBackend())
    sampler.open()
    assert "nvmlDeviceRegisterEvents" in lib.calls
    pending = [79]

    def wait(event_set: Any, data: Any, timeout: Any) -> int:
        if not pending:
            return pynvml.NVML_ERROR_TIMEOUT
        data._obj.eventType = pynvml.nvmlEventTypeXidCriticalError
        data._obj.eventData = pending.pop()
        return pynvml.NVML_SUCCESS

    pynvml._nvmlGetFunctionPointer_cache["nvmlEventSetWait_v2"] = wait
    (sample,) = sampler.sample()
    assert (n.XID_EVENTS, 1.0, (("xid", "79"),)) in sample.points
    sampler.close()


def _violation_times(sample: Any) -> dict[str, float]:
    return {dict(attrs)["policy"]: value for name, value, attrs in sample.points if name == n.VIOLATION_TIME}


def test_costly_reads_are_made_once_or_batched(scripted: Callable[..., ScriptedNvml]) -> None:
    """On a real H200 nvmlDeviceGetMaxClockInfo costs ~1.5 ms and nvmlDeviceGetViolationStatus
    ~0.7 ms per policy: the maxima are read once per GPU, the six violation counters in one
    nvmlDeviceGetFieldValues call (fields of 20 us)."""
    from gpu_health.nvml import VIOLATION_FIELDS

    lib = scripted(outputs={"nvmlDeviceGetClockInfo": 1410, "nvmlDeviceGetMaxClockInfo": 1980})
    ns = {field: (i + 1) * 500_000_000 for i, field in enumerate(VIOLATION_FIELDS.values())}

    asked: list[list[int]] = []

    def field_values(handle: Any, count: Any, values: Any) -> int:
        asked.append([v.fieldId for v in values._obj[: count.value]])
        for v in values._obj[: count.value]:
            v.nvmlReturn = pynvml.NVML_SUCCESS
            v.value.ullVal = ns.get(v.fieldId, 40)  # 40: the memory temperature's field
        return pynvml.NVML_SUCCESS

    pynvml._nvmlGetFunctionPointer_cache["nvmlDeviceGetFieldValues"] = field_values
    sampler = Sampler(NvmlBackend(), processes=False)
    sampler.open()
    first = sampler.sample()[0]
    second = sampler.sample()[0]
    assert lib.calls.count("nvmlDeviceGetMaxClockInfo") == 2  # SM and memory, first pass only
    assert asked.count(list(VIOLATION_FIELDS.values())) == 2  # one call a pass
    assert "nvmlDeviceGetViolationStatus" not in lib.calls
    for sample in (first, second):
        values = {(name, attrs): value for name, value, attrs in sample.points}
        assert values[(n.CLOCK_SM_MAX, ())] == 1980.0 and values[(n.CLOCK_SM, ())] == 1410.0
        assert _violation_times(sample) == {name: (i + 1) * 0.5 for i, name in enumerate(VIOLATION_FIELDS)}
    sampler.close()


def test_violations_fall_back_to_one_call_per_policy(scripted: Callable[..., ScriptedNvml]) -> None:
    from gpu_health.backend import VIOLATION_POLICIES

    lib = scripted(
        {"nvmlDeviceGetFieldValues": pynvml.NVML_ERROR_FUNCTION_NOT_FOUND},
        outputs={"nvmlDeviceGetViolationStatus": 2_000_000_000},
    )
    sampler = Sampler(NvmlBackend(), processes=False)
    sampler.open()
    (sample,) = sampler.sample()
    assert lib.calls.count("nvmlDeviceGetViolationStatus") == len(VIOLATION_POLICIES)
    assert set(_violation_times(sample)) == set(VIOLATION_POLICIES)
    sampler.close()
