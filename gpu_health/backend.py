"""The backend interface: what the sampler asks of NVML, one method per field group.

Both backends (``gpu_health.nvml`` on nvidia-ml-py, ``gpu_health.fake`` driven by scenario
files) raise nvidia-ml-py's own exception classes (``pynvml.NVMLError_NotSupported``,
``NVMLError_GpuIsLost``, ...), so the sampler handles one set of errors whichever runs.
A group method raises NotSupported only when the whole group is unsupported; optional
parts of a group (memory temperature, thresholds) come back as None instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import pynvml

# Clock-event (throttle) reasons: NVML bit -> the `reason` attribute value (docs/gpu_health.md).
CLOCK_EVENT_REASONS: dict[int, str] = {
    pynvml.nvmlClocksEventReasonGpuIdle: "gpu_idle",
    pynvml.nvmlClocksEventReasonApplicationsClocksSetting: "applications_clocks_setting",
    pynvml.nvmlClocksEventReasonSwPowerCap: "sw_power_cap",
    pynvml.nvmlClocksEventReasonHwSlowdown: "hw_slowdown",
    pynvml.nvmlClocksEventReasonSyncBoost: "sync_boost",
    pynvml.nvmlClocksEventReasonSwThermalSlowdown: "sw_thermal_slowdown",
    pynvml.nvmlClocksEventReasonHwThermalSlowdown: "hw_thermal_slowdown",
    pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown: "hw_power_brake_slowdown",
    pynvml.nvmlClocksEventReasonDisplayClockSetting: "display_clock_setting",
}
REASON_BITS: dict[str, int] = {name: bit for bit, name in CLOCK_EVENT_REASONS.items()}

# Performance policies whose violation time NVML counts (nvmlDeviceGetViolationStatus).
VIOLATION_POLICIES: dict[str, int] = {
    "power": pynvml.NVML_PERF_POLICY_POWER,
    "thermal": pynvml.NVML_PERF_POLICY_THERMAL,
    "sync_boost": pynvml.NVML_PERF_POLICY_SYNC_BOOST,
    "board_limit": pynvml.NVML_PERF_POLICY_BOARD_LIMIT,
    "low_utilization": pynvml.NVML_PERF_POLICY_LOW_UTILIZATION,
    "reliability": pynvml.NVML_PERF_POLICY_RELIABILITY,
}

NVLINK_COUNTERS: dict[str, int] = {
    "replay": pynvml.NVML_NVLINK_ERROR_DL_REPLAY,
    "recovery": pynvml.NVML_NVLINK_ERROR_DL_RECOVERY,
    "crc_flit": pynvml.NVML_NVLINK_ERROR_DL_CRC_FLIT,
    "crc_data": pynvml.NVML_NVLINK_ERROR_DL_CRC_DATA,
}


@dataclass(frozen=True)
class SystemInfo:
    driver_version: str
    cuda_version: str  # "12.4" from NVML's 12040


@dataclass(frozen=True)
class Identity:
    uuid: str
    name: str
    pci_bus_id: str


@dataclass(frozen=True)
class Utilization:
    gpu: float  # ratio 0..1 of time a kernel ran
    memory: float  # ratio 0..1 of time device memory was read or written


@dataclass(frozen=True)
class Memory:
    used: int  # bytes
    total: int


@dataclass(frozen=True)
class Clocks:
    sm: int  # MHz
    sm_max: int
    mem: int
    mem_max: int


@dataclass(frozen=True)
class Power:
    usage_w: float
    limit_w: float  # enforced limit


@dataclass(frozen=True)
class Temperatures:
    gpu: float  # Celsius
    memory: float | None
    slowdown: float | None  # threshold where the GPU starts hardware slowdown
    shutdown: float | None


@dataclass(frozen=True)
class Ecc:
    corrected_volatile: int
    uncorrected_volatile: int
    corrected_aggregate: int
    uncorrected_aggregate: int


@dataclass(frozen=True)
class RetiredPages:
    single_bit: int  # pages retired for multiple single-bit errors
    double_bit: int
    pending: bool  # retirement waits for a reset


@dataclass(frozen=True)
class RemappedRows:
    correctable: int
    uncorrectable: int
    pending: bool  # a remap waits for a reset
    failure: bool  # a remap failed: the GPU needs service


@dataclass(frozen=True)
class Pcie:
    generation: int
    generation_max: int
    width: int
    width_max: int
    replay: int  # cumulative replay counter


@dataclass(frozen=True)
class NvLink:
    link: int
    active: bool
    errors: dict[str, int]  # NVLINK_COUNTERS name -> cumulative count


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int | None  # bytes


@dataclass(frozen=True)
class XidEvent:
    uuid: str
    xid: int


class GpuBackend(Protocol):
    """NVML as the sampler sees it. ``handle`` values are opaque to the caller."""

    def init(self) -> None: ...

    def shutdown(self) -> None: ...

    def system(self) -> SystemInfo: ...

    def device_count(self) -> int: ...

    def handle(self, index: int) -> Any: ...

    def identity(self, h: Any) -> Identity: ...

    def utilization(self, h: Any) -> Utilization: ...

    def memory(self, h: Any) -> Memory: ...

    def clocks(self, h: Any) -> Clocks: ...

    def power(self, h: Any) -> Power: ...

    def energy(self, h: Any) -> float: ...  # joules since the driver loaded

    def temperatures(self, h: Any) -> Temperatures: ...

    def clock_events(self, h: Any) -> int: ...  # bitmask of CLOCK_EVENT_REASONS

    def violations(self, h: Any) -> dict[str, float]: ...  # policy -> seconds violated, cumulative

    def ecc(self, h: Any) -> Ecc: ...

    def retired_pages(self, h: Any) -> RetiredPages: ...

    def remapped_rows(self, h: Any) -> RemappedRows: ...

    def pcie(self, h: Any) -> Pcie: ...

    def nvlink(self, h: Any) -> list[NvLink]: ...

    def processes(self, h: Any) -> list[GpuProcess]: ...

    def watch_xids(self, handles: list[Any]) -> None: ...

    def xid_events(self) -> list[XidEvent]: ...  # events since the last call, never blocking


# The field groups the sampler reads per GPU, in order; also the names scenario files use.
FIELD_GROUPS = (
    "utilization",
    "memory",
    "clocks",
    "power",
    "energy",
    "temperatures",
    "clock_events",
    "violations",
    "ecc",
    "retired_pages",
    "remapped_rows",
    "pcie",
    "nvlink",
    "processes",
)


def nvml_error_name(exc: BaseException) -> str:
    """``NVMLError_NotSupported`` -> ``NotSupported`` (the name scenario files use)."""
    name = type(exc).__name__
    return name.removeprefix("NVMLError_") if name.startswith("NVMLError_") else name


def nvml_error_class(name: str) -> type[pynvml.NVMLError]:
    """The real nvidia-ml-py exception class for ``NotSupported``, ``GpuIsLost``, ..."""
    cls = getattr(pynvml, f"NVMLError_{name}", None)
    if not (isinstance(cls, type) and issubclass(cls, pynvml.NVMLError)):
        known = sorted(
            c.__name__.removeprefix("NVMLError_") for c in pynvml.NVMLError._valClassMapping.values()
        )
        raise ValueError(f"unknown NVML error {name!r}; known: {', '.join(known)}")
    return cls
