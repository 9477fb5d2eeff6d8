"""A scripted NVML for tests and the demo: GPUs and their timelines from a scenario file.

The fake raises nvidia-ml-py's real exception classes wherever a real driver would:
NotSupported for a field group the scenario marks unsupported, GpuIsLost on every call once
a GPU has fallen off the bus, and any named NVML error a timeline step injects. Time comes
from a clock the caller owns (``FakeClock`` in tests, advanced by hand; wall time in the
demo), so nothing sleeps.

Scenario format (YAML; see gpu_health/scenarios/ and docs/gpu_health.md)::

    description: one GPU drops off the bus
    driver_version: "550.54.15"
    cuda_version: "12.4"
    init_error: null          # e.g. DriverNotLoaded: nvmlInit raises it
    gpus:
      - name: NVIDIA H100 80GB HBM3
        count: 2              # copies, uuids and bus ids generated
        unsupported: [nvlink] # groups that raise NotSupported
        state: {temperatures.gpu: 60}
    timeline:
      - at: 30s               # seconds from the scenario start
        gpu: 0                # an index, a list of them, or "all"
        set: {clock_events: [hw_slowdown], clocks.sm: 1200}
        ramp: {temperatures.gpu: {to: 95, over: 60s}}
        increase: {pcie.replay: 40}
        rate: {nvlink.0.crc_flit: 5}   # per second from here on (0 stops it)
        xid: 79
        lost: true
        fail: {processes: NoPermission}  # group raises this error (null clears it)

State keys are ``<group>.<field>`` of the dataclasses in ``gpu_health.backend``; NVLink
links are ``nvlink.links`` (how many) and ``nvlink.<i>.active`` / ``nvlink.<i>.<counter>``;
``clock_events`` is a list of reason names; ``processes`` a list of ``{pid, used_memory}``.
``energy.j`` is integrated from ``power.usage_w`` unless a step sets it.
"""

from __future__ import annotations

import copy
import dataclasses
import uuid as uuidlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pynvml
import yaml

from gpu_health.backend import (
    FIELD_GROUPS,
    NVLINK_COUNTERS,
    REASON_BITS,
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
    nvml_error_class,
)
from mlvigil.core.config import parse_duration

GIB = 1024**3

# A healthy, busy H100 SXM: what every GPU starts as unless its scenario says otherwise.
DEFAULT_STATE: dict[str, Any] = {
    "utilization.gpu": 0.95,
    "utilization.memory": 0.55,
    "memory.used": 60 * GIB,
    "memory.total": 80 * GIB,
    "clocks.sm": 1980,
    "clocks.sm_max": 1980,
    "clocks.mem": 2619,
    "clocks.mem_max": 2619,
    "power.usage_w": 550.0,
    "power.limit_w": 700.0,
    "temperatures.gpu": 62.0,
    "temperatures.memory": 70.0,
    "temperatures.slowdown": 89.0,
    "temperatures.shutdown": 92.0,
    "clock_events": [],
    "violations.power": 0.0,
    "violations.thermal": 0.0,
    "violations.sync_boost": 0.0,
    "violations.board_limit": 0.0,
    "violations.low_utilization": 0.0,
    "violations.reliability": 0.0,
    "ecc.corrected_volatile": 0,
    "ecc.uncorrected_volatile": 0,
    "ecc.corrected_aggregate": 0,
    "ecc.uncorrected_aggregate": 0,
    "retired_pages.single_bit": 0,
    "retired_pages.double_bit": 0,
    "retired_pages.pending": False,
    "remapped_rows.correctable": 0,
    "remapped_rows.uncorrectable": 0,
    "remapped_rows.pending": False,
    "remapped_rows.failure": False,
    "pcie.generation": 5,
    "pcie.generation_max": 5,
    "pcie.width": 16,
    "pcie.width_max": 16,
    "pcie.replay": 0,
    "nvlink.links": 18,
    "processes": [],
}

_GROUP_TYPES: dict[str, type] = {
    "utilization": Utilization,
    "memory": Memory,
    "clocks": Clocks,
    "power": Power,
    "temperatures": Temperatures,
    "ecc": Ecc,
    "retired_pages": RetiredPages,
    "remapped_rows": RemappedRows,
    "pcie": Pcie,
}
_GROUP_FIELDS = {g: tuple(f.name for f in dataclasses.fields(t)) for g, t in _GROUP_TYPES.items()}
_STEP_KEYS = {"at", "gpu", "set", "ramp", "increase", "rate", "xid", "lost", "fail"}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message says where."""


class FakeClock:
    """Scenario time in seconds, advanced by the test; ``epoch`` maps it to wall time."""

    def __init__(self, start: float = 0.0, epoch: float = 1_700_000_000.0) -> None:
        self.now = start
        self.epoch = epoch

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def wall(self) -> float:
        return self.epoch + self.now


def state_of(group: str, result: Any) -> dict[str, Any]:
    """Scenario state keys for one group's result (what the recorder writes)."""
    if group in _GROUP_TYPES:
        return {f"{group}.{f}": getattr(result, f) for f in _GROUP_FIELDS[group]}
    if group == "energy":
        return {"energy.j": float(result)}
    if group == "clock_events":
        return {"clock_events": sorted(name for name, bit in REASON_BITS.items() if result & bit)}
    if group == "violations":
        return {f"violations.{k}": float(v) for k, v in result.items()}
    if group == "nvlink":
        out: dict[str, Any] = {"nvlink.links": (max((lk.link for lk in result), default=-1) + 1)}
        for lk in result:
            out[f"nvlink.{lk.link}.active"] = bool(lk.active)
            for k, v in lk.errors.items():
                out[f"nvlink.{lk.link}.{k}"] = int(v)
        return out
    if group == "processes":
        return {"processes": [{"pid": p.pid, "used_memory": p.used_memory} for p in result]}
    raise KeyError(group)


def _gpu_index_list(spec: Any, count: int, where: str) -> list[int]:
    if spec == "all" or spec is None:
        return list(range(count))
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        if not isinstance(item, int) or not 0 <= item < count:
            raise ScenarioError(f"{where}: gpu {item!r} is not an index below {count}")
        out.append(item)
    return out


class Scenario:
    """A parsed, validated scenario file."""

    def __init__(self, raw: dict[str, Any], source: str = "scenario") -> None:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{source}: expected a mapping")
        self.source = source
        self.description = str(raw.get("description", ""))
        self.driver_version = str(raw.get("driver_version", "550.54.15"))
        self.cuda_version = str(raw.get("cuda_version", "12.4"))
        self.init_error: str | None = raw.get("init_error")
        if self.init_error:
            nvml_error_class(self.init_error)
        self.gpus: list[dict[str, Any]] = []
        for i, spec in enumerate(raw.get("gpus") or []):
            spec = dict(spec)
            copies = int(spec.pop("count", 1))
            for _ in range(copies):
                self.gpus.append(self._gpu(spec, len(self.gpus), f"{source}: gpus[{i}]"))
        self.steps: list[dict[str, Any]] = []
        for i, step in enumerate(raw.get("timeline") or []):
            where = f"{source}: timeline[{i}]"
            if not isinstance(step, dict) or "at" not in step:
                raise ScenarioError(f"{where}: a step needs 'at'")
            unknown = set(step) - _STEP_KEYS
            if unknown:
                raise ScenarioError(f"{where}: unknown key(s) {sorted(unknown)}")
            step = dict(step)
            step["at"] = parse_duration(step["at"])
            step["gpus"] = _gpu_index_list(step.get("gpu"), len(self.gpus), where)
            for key in step.get("set") or {}:
                self._check_key(key, where)
            for key, r in (step.get("ramp") or {}).items():
                self._check_key(key, where)
                if not isinstance(r, dict) or "to" not in r or "over" not in r:
                    raise ScenarioError(f"{where}: ramp {key} needs 'to' and 'over'")
            for group, err in (step.get("fail") or {}).items():
                if group not in FIELD_GROUPS:
                    raise ScenarioError(f"{where}: unknown field group {group!r}")
                if err:
                    nvml_error_class(err)
            self.steps.append(step)
        self.steps.sort(key=lambda s: s["at"])

    def _gpu(self, spec: dict[str, Any], index: int, where: str) -> dict[str, Any]:
        state = dict(DEFAULT_STATE)
        for key, value in (spec.get("state") or {}).items():
            self._check_key(key, where)
            state[key] = value
        unsupported = list(spec.get("unsupported") or [])
        for group in unsupported:
            if group not in FIELD_GROUPS:
                raise ScenarioError(f"{where}: unknown field group {group!r}")
        seed = f"{Path(self.source).stem}:{index}"
        uuid = spec.get("uuid") if spec.get("count", 1) == 1 and spec.get("uuid") else None
        return {
            "uuid": uuid or f"GPU-{uuidlib.uuid5(uuidlib.NAMESPACE_OID, seed)}",
            "name": spec.get("name", "NVIDIA H100 80GB HBM3"),
            "pci_bus_id": spec.get("pci_bus_id") or f"00000000:{0x18 + 0x10 * index:02X}:00.0",
            "unsupported": unsupported,
            "state": state,
            "lost": bool(spec.get("lost", False)),
        }

    @staticmethod
    def _check_key(key: str, where: str) -> None:
        group = key.split(".", 1)[0]
        if group not in FIELD_GROUPS:
            raise ScenarioError(f"{where}: unknown state key {key!r} (groups: {', '.join(FIELD_GROUPS)})")

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{path}: {exc}") from None
        return cls(raw, str(path))


def builtin_scenario(name: str) -> Path:
    """Path of a scenario shipped in gpu_health/scenarios (``xid79`` -> ``xid79.yaml``)."""
    return Path(__file__).parent / "scenarios" / f"{name.removesuffix('.yaml')}.yaml"


class _FakeGpu:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.identity = Identity(spec["uuid"], spec["name"], spec["pci_bus_id"])
        self.base: dict[str, Any] = copy.deepcopy(spec["state"])
        self.ramps: dict[str, tuple[float, float, float, float]] = {}  # key -> (t0, v0, t1, v1)
        self.rates: dict[str, tuple[float, float]] = {}  # key -> (t0, per second)
        self.errors: dict[str, str] = {g: "NotSupported" for g in spec["unsupported"]}
        self.lost = spec["lost"]
        self.energy_j = float(self.base.pop("energy.j", 0.0))

    def value(self, key: str, t: float) -> Any:
        ramp = self.ramps.get(key)
        if ramp is not None:
            t0, v0, t1, v1 = ramp
            if t >= t1:
                del self.ramps[key]
                self.base[key] = v1
                return v1
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        rate = self.rates.get(key)
        if rate is not None:
            value = self.base.get(key, 0) + rate[1] * (t - rate[0])
            return int(value) if isinstance(self.base.get(key, 0), int) else value
        return self.base.get(key)

    def fold(self, key: str, t: float) -> None:
        """Make ``base[key]`` the value at ``t`` before a step changes how it moves."""
        if key in self.ramps or key in self.rates:
            value = self.value(key, t)
            self.ramps.pop(key, None)
            rate = self.rates.pop(key, None)
            self.base[key] = value
            if rate is not None and rate[1]:
                self.rates[key] = (t, rate[1])


class FakeBackend:
    """``GpuBackend`` that plays a ``Scenario`` against ``clock`` (scenario seconds)."""

    def __init__(self, scenario: Scenario, clock: Callable[[], float] | None = None) -> None:
        self.scenario = scenario
        self.clock = clock or FakeClock()
        self._gpus = [_FakeGpu(spec) for spec in scenario.gpus]
        self._next_step = 0
        self._t = 0.0
        self._xids: list[XidEvent] = []
        self._watched: set[int] = set()
        self._initialised = False

    # -- time ------------------------------------------------------------------------------
    def _advance(self) -> float:
        t = max(self.clock(), self._t)
        steps = self.scenario.steps
        while self._next_step < len(steps) and steps[self._next_step]["at"] <= t:
            step = steps[self._next_step]
            self._integrate(step["at"])
            for index in step["gpus"]:
                self._apply(self._gpus[index], index, step)
            self._next_step += 1
        self._integrate(t)
        return t

    def _integrate(self, t: float) -> None:
        dt = t - self._t
        if dt > 0:
            for gpu in self._gpus:
                if not gpu.lost:
                    gpu.energy_j += float(gpu.value("power.usage_w", self._t)) * dt
            self._t = t

    def _apply(self, gpu: _FakeGpu, index: int, step: dict[str, Any]) -> None:
        t = step["at"]
        for key, value in (step.get("set") or {}).items():
            gpu.fold(key, t)
            gpu.ramps.pop(key, None)
            gpu.rates.pop(key, None)
            if key == "energy.j":
                gpu.energy_j = float(value)
            else:
                gpu.base[key] = value
        for key, delta in (step.get("increase") or {}).items():
            gpu.fold(key, t)
            gpu.base[key] = gpu.base.get(key, 0) + delta
        for key, per_second in (step.get("rate") or {}).items():
            gpu.fold(key, t)
            gpu.rates.pop(key, None)
            if per_second:
                gpu.rates[key] = (t, float(per_second))
        for key, ramp in (step.get("ramp") or {}).items():
            gpu.fold(key, t)
            gpu.rates.pop(key, None)
            over = parse_duration(ramp["over"])
            start = float(gpu.base.get(key) or 0)
            if over <= 0:
                gpu.base[key] = ramp["to"]
            else:
                gpu.ramps[key] = (t, start, t + over, float(ramp["to"]))
        for group, err in (step.get("fail") or {}).items():
            if err:
                gpu.errors[group] = err
            else:
                gpu.errors.pop(group, None)
        if step.get("xid") is not None and index in self._watched and not gpu.lost:
            self._xids.append(XidEvent(gpu.identity.uuid, int(step["xid"])))
        if "lost" in step:
            gpu.lost = bool(step["lost"])

    def _gpu(self, h: Any, group: str | None = None) -> tuple[_FakeGpu, float]:
        if not self._initialised:
            raise pynvml.NVMLError_Uninitialized()
        t = self._advance()
        gpu = self._gpus[h]
        if gpu.lost:
            raise pynvml.NVMLError_GpuIsLost()
        if group is not None:
            err = gpu.errors.get(group)
            if err:
                raise nvml_error_class(err)()
        return gpu, t

    def _fields(self, h: Any, group: str) -> Any:
        gpu, t = self._gpu(h, group)
        return _GROUP_TYPES[group](*(gpu.value(f"{group}.{f}", t) for f in _GROUP_FIELDS[group]))

    # -- GpuBackend ------------------------------------------------------------------------
    def init(self) -> None:
        if self.scenario.init_error:
            raise nvml_error_class(self.scenario.init_error)()
        self._initialised = True

    def shutdown(self) -> None:
        if not self._initialised:
            raise pynvml.NVMLError_Uninitialized()
        self._initialised = False

    def system(self) -> SystemInfo:
        return SystemInfo(self.scenario.driver_version, self.scenario.cuda_version)

    def device_count(self) -> int:
        if not self._initialised:
            raise pynvml.NVMLError_Uninitialized()
        return len(self._gpus)

    def handle(self, index: int) -> Any:
        if not 0 <= index < len(self._gpus):
            raise pynvml.NVMLError_InvalidArgument()
        self._gpu(index)
        return index

    def identity(self, h: Any) -> Identity:
        return self._gpu(h)[0].identity

    def utilization(self, h: Any) -> Utilization:
        return self._fields(h, "utilization")

    def memory(self, h: Any) -> Memory:
        return self._fields(h, "memory")

    def clocks(self, h: Any) -> Clocks:
        return self._fields(h, "clocks")

    def power(self, h: Any) -> Power:
        return self._fields(h, "power")

    def energy(self, h: Any) -> float:
        return self._gpu(h, "energy")[0].energy_j

    def temperatures(self, h: Any) -> Temperatures:
        return self._fields(h, "temperatures")

    def clock_events(self, h: Any) -> int:
        gpu, t = self._gpu(h, "clock_events")
        mask = 0
        for reason in gpu.value("clock_events", t) or ():
            mask |= REASON_BITS[reason]
        return mask

    def violations(self, h: Any) -> dict[str, float]:
        gpu, t = self._gpu(h, "violations")
        return {
            k.split(".", 1)[1]: float(gpu.value(k, t))
            for k in list(gpu.base) + list(gpu.rates)
            if k.startswith("violations.")
        }

    def ecc(self, h: Any) -> Ecc:
        return self._fields(h, "ecc")

    def retired_pages(self, h: Any) -> RetiredPages:
        return self._fields(h, "retired_pages")

    def remapped_rows(self, h: Any) -> RemappedRows:
        return self._fields(h, "remapped_rows")

    def pcie(self, h: Any) -> Pcie:
        return self._fields(h, "pcie")

    def nvlink(self, h: Any) -> list[NvLink]:
        gpu, t = self._gpu(h, "nvlink")
        links = int(gpu.value("nvlink.links", t) or 0)
        if not links:
            raise pynvml.NVMLError_NotSupported()
        out = []
        for link in range(links):
            active = bool(
                gpu.value(f"nvlink.{link}.active", t) if f"nvlink.{link}.active" in gpu.base else True
            )
            errors = (
                {c: int(gpu.value(f"nvlink.{link}.{c}", t) or 0) for c in NVLINK_COUNTERS} if active else {}
            )
            out.append(NvLink(link, active, errors))
        return out

    def processes(self, h: Any) -> list[GpuProcess]:
        gpu, t = self._gpu(h, "processes")
        return [GpuProcess(int(p["pid"]), p.get("used_memory")) for p in gpu.value("processes", t) or ()]

    def watch_xids(self, handles: Iterable[Any]) -> None:
        self._watched.update(int(h) for h in handles)

    def xid_events(self) -> list[XidEvent]:
        self._advance()
        out, self._xids = self._xids, []
        return out
