"""The real backend: NVML through nvidia-ml-py (``import pynvml``).

Every call goes through pynvml's own wrappers, so errors arrive as its exception classes.
Optional parts of a group (memory temperature, thresholds, one NVLink counter) that raise
NotSupported become None or are left out; GpuIsLost always propagates, because a lost GPU
is itself a finding.

Cost, measured against the real NVML of an NVIDIA H200 (driver 580.159.04, CPU per call):
most calls take 1-40 us, but ``nvmlDeviceGetMaxClockInfo`` 1.4-1.6 ms,
``nvmlDeviceGetViolationStatus`` ~0.7 ms per policy and ``nvmlDeviceGetTotalEnergyConsumption``
3.8 ms. So the maximum clocks (fixed for a board) are read once per GPU, and the six
violation counters in one ``nvmlDeviceGetFieldValues`` call (~20 us); a pass went from
12.1 to ~5 ms per GPU, most of it the energy counter (bench/gpu/RESULTS.txt).
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from typing import Any, TypeVar

import pynvml

from gpu_health.backend import (
    NVLINK_COUNTERS,
    VIOLATION_POLICIES,
    Clocks,
    Ecc,
    GpuProcess,
    Identity,
    Memory,
    NvLink,
    Pcie,
    Power,
    RemappedRows,
    RetiredPages,
    SystemInfo,
    Temperatures,
    Utilization,
    XidEvent,
)

T = TypeVar("T")

# The violation counters as NVML fields (ns, like nvmlDeviceGetViolationStatus's violationTime).
VIOLATION_FIELDS: dict[str, int] = {
    "power": pynvml.NVML_FI_DEV_PERF_POLICY_POWER,
    "thermal": pynvml.NVML_FI_DEV_PERF_POLICY_THERMAL,
    "sync_boost": pynvml.NVML_FI_DEV_PERF_POLICY_SYNC_BOOST,
    "board_limit": pynvml.NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT,
    "low_utilization": pynvml.NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION,
    "reliability": pynvml.NVML_FI_DEV_PERF_POLICY_RELIABILITY,
}

# Errors that mean "this part is not there on this GPU/driver", not "the GPU is broken".
_ABSENT = (pynvml.NVMLError_NotSupported, pynvml.NVMLError_InvalidArgument, pynvml.NVMLError_FunctionNotFound)


def _optional(fn: Callable[..., T], *args: Any) -> T | None:
    try:
        return fn(*args)
    except _ABSENT:
        return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class NvmlBackend:
    """``GpuBackend`` over libnvidia-ml; ``init`` raises LibraryNotFound/DriverNotLoaded as NVML does."""

    def __init__(self) -> None:
        self._event_set: Any = None
        self._uuid_by_handle: dict[int, str] = {}
        # Links found absent on first read are not asked again (NVML answers the same each time).
        self._links: dict[int, list[int]] = {}
        # Maximum SM and memory clocks per GPU: fixed for a board, and 1.5 ms a read.
        self._max_clocks: dict[int, tuple[int, int]] = {}

    def init(self) -> None:
        pynvml.nvmlInit()

    def shutdown(self) -> None:
        if self._event_set is not None:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlEventSetFree(self._event_set)
            self._event_set = None
        pynvml.nvmlShutdown()

    def system(self) -> SystemInfo:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = _optional(pynvml.nvmlSystemGetCudaDriverVersion)
        return SystemInfo(driver, f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else "")

    def device_count(self) -> int:
        return int(pynvml.nvmlDeviceGetCount())

    def handle(self, index: int) -> Any:
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def identity(self, h: Any) -> Identity:
        uuid = _text(pynvml.nvmlDeviceGetUUID(h))
        self._uuid_by_handle[_handle_key(h)] = uuid
        name = _text(pynvml.nvmlDeviceGetName(h))
        pci = _optional(pynvml.nvmlDeviceGetPciInfo, h)
        return Identity(uuid, name, _text(pci.busId) if pci is not None else "")

    def utilization(self, h: Any) -> Utilization:
        u = pynvml.nvmlDeviceGetUtilizationRates(h)
        return Utilization(u.gpu / 100.0, u.memory / 100.0)

    def memory(self, h: Any) -> Memory:
        m = pynvml.nvmlDeviceGetMemoryInfo(h)
        return Memory(int(m.used), int(m.total))

    def clocks(self, h: Any) -> Clocks:
        sm = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)
        mem = pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)
        key = _handle_key(h)
        if (maxima := self._max_clocks.get(key)) is None:
            maxima = (
                pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
                pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_MEM),
            )
            self._max_clocks[key] = maxima
        return Clocks(sm, maxima[0], mem, maxima[1])

    def power(self, h: Any) -> Power:
        return Power(
            pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0, pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
        )

    def energy(self, h: Any) -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0

    def temperatures(self, h: Any) -> Temperatures:
        gpu = pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        mem_fv = _optional(pynvml.nvmlDeviceGetFieldValues, h, [pynvml.NVML_FI_DEV_MEMORY_TEMP])
        memory: float | None = None
        if mem_fv and mem_fv[0].nvmlReturn == pynvml.NVML_SUCCESS:
            memory = float(mem_fv[0].value.uiVal)
        slowdown = _optional(
            pynvml.nvmlDeviceGetTemperatureThreshold, h, pynvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN
        )
        shutdown = _optional(
            pynvml.nvmlDeviceGetTemperatureThreshold, h, pynvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN
        )
        return Temperatures(float(gpu), memory, _f(slowdown), _f(shutdown))

    def clock_events(self, h: Any) -> int:
        return int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h))

    def violations(self, h: Any) -> dict[str, float]:
        out: dict[str, float] = {}
        fields = _optional(pynvml.nvmlDeviceGetFieldValues, h, list(VIOLATION_FIELDS.values()))
        for name, field in zip(VIOLATION_FIELDS, fields or (), strict=False):
            if field.nvmlReturn == pynvml.NVML_SUCCESS:
                out[name] = field.value.ullVal / 1e9
        if out:
            return out
        # A driver without these fields: one call per policy.
        for name, policy in VIOLATION_POLICIES.items():
            v = _optional(pynvml.nvmlDeviceGetViolationStatus, h, policy)
            if v is not None:
                out[name] = v.violationTime / 1e9
        if not out:
            raise pynvml.NVMLError_NotSupported()
        return out

    def ecc(self, h: Any) -> Ecc:
        get = pynvml.nvmlDeviceGetTotalEccErrors
        c, u = pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        vol, agg = pynvml.NVML_VOLATILE_ECC, pynvml.NVML_AGGREGATE_ECC
        return Ecc(get(h, c, vol), get(h, u, vol), get(h, c, agg), get(h, u, agg))

    def retired_pages(self, h: Any) -> RetiredPages:
        sbe = pynvml.nvmlDeviceGetRetiredPages(
            h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS
        )
        dbe = pynvml.nvmlDeviceGetRetiredPages(h, pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        pending = pynvml.nvmlDeviceGetRetiredPagesPendingStatus(h)
        return RetiredPages(len(sbe), len(dbe), bool(pending))

    def remapped_rows(self, h: Any) -> RemappedRows:
        corr, unc, pending, failure = pynvml.nvmlDeviceGetRemappedRows(h)
        return RemappedRows(int(corr), int(unc), bool(pending), bool(failure))

    def pcie(self, h: Any) -> Pcie:
        return Pcie(
            pynvml.nvmlDeviceGetCurrPcieLinkGeneration(h),
            pynvml.nvmlDeviceGetMaxPcieLinkGeneration(h),
            pynvml.nvmlDeviceGetCurrPcieLinkWidth(h),
            pynvml.nvmlDeviceGetMaxPcieLinkWidth(h),
            pynvml.nvmlDeviceGetPcieReplayCounter(h),
        )

    def nvlink(self, h: Any) -> list[NvLink]:
        key = _handle_key(h)
        links = self._links.get(key)
        if links is None:
            links = [
                link
                for link in range(pynvml.NVML_NVLINK_MAX_LINKS)
                if _optional(pynvml.nvmlDeviceGetNvLinkState, h, link) is not None
            ]
            self._links[key] = links
        if not links:
            raise pynvml.NVMLError_NotSupported()
        out = []
        for link in links:
            active = pynvml.nvmlDeviceGetNvLinkState(h, link) == pynvml.NVML_FEATURE_ENABLED
            errors: dict[str, int] = {}
            if active:
                for name, counter in NVLINK_COUNTERS.items():
                    value = _optional(pynvml.nvmlDeviceGetNvLinkErrorCounter, h, link, counter)
                    if value is not None:
                        errors[name] = int(value)
            out.append(NvLink(link, active, errors))
        return out

    def processes(self, h: Any) -> list[GpuProcess]:
        return [
            GpuProcess(int(p.pid), p.usedGpuMemory) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        ]

    def watch_xids(self, handles: list[Any]) -> None:
        """Register every GPU for XID events; a GPU that cannot be registered is skipped."""
        if self._event_set is None:
            self._event_set = pynvml.nvmlEventSetCreate()
        for h in handles:
            try:
                pynvml.nvmlDeviceRegisterEvents(h, pynvml.nvmlEventTypeXidCriticalError, self._event_set)
            except _ABSENT:
                continue

    def xid_events(self) -> list[XidEvent]:
        if self._event_set is None:
            return []
        out: list[XidEvent] = []
        while True:
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, 0)
            except pynvml.NVMLError_Timeout:
                return out
            if data.eventType != pynvml.nvmlEventTypeXidCriticalError:
                continue
            uuid = self._uuid_by_handle.get(_handle_key(data.device))
            if uuid is None:
                uuid = _text(pynvml.nvmlDeviceGetUUID(data.device))
            out.append(XidEvent(uuid, int(data.eventData)))


def _handle_key(h: Any) -> int:
    """Handles are ctypes pointers; their address identifies the device."""
    try:
        return int(ctypes.cast(h, ctypes.c_void_p).value or 0)
    except (TypeError, ctypes.ArgumentError):
        return id(h)


def _f(value: Any) -> float | None:
    return None if value is None else float(value)
