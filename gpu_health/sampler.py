"""One sampling pass over every GPU: backend field groups -> metric points.

A field group that raises NotSupported is remembered and not asked again (NVML answers the
same way for the life of the driver), so unsupported fields cost nothing after the first
pass. Any other NVML error on one group is recorded and the pass goes on with the next
group; GpuIsLost ends that GPU's pass and is reported as ``mlvigil.gpu.lost`` = 1.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pynvml

from gpu_health import names as n
from gpu_health.backend import (
    CLOCK_EVENT_REASONS,
    FIELD_GROUPS,
    GpuBackend,
    Identity,
    SystemInfo,
    nvml_error_name,
)

log = logging.getLogger(__name__)

Attrs = tuple[tuple[str, str], ...]
Point = tuple[str, float, Attrs]  # (metric name, value, point attributes)
# Called with (gpu index, group, result or exception) for every group read: the recorder.
Observer = Callable[[int, str, Any], None]

_NO_ATTRS: Attrs = ()
_HW_GPU: Attrs = (("hw.type", "gpu"),)
_REASON_ATTRS = {bit: (("reason", name),) for bit, name in CLOCK_EVENT_REASONS.items()}


class NoGpuError(Exception):
    """The driver answered but reports no GPU."""


@dataclass
class GpuSample:
    ts: float
    index: int
    uuid: str
    name: str
    pci_bus_id: str
    lost: bool
    points: list[Point]
    unsupported: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "pci_bus_id": self.pci_bus_id,
            "lost": self.lost,
            "unsupported": self.unsupported,
            "errors": self.errors,
            "points": [{"name": p[0], "value": p[1], "attributes": dict(p[2])} for p in self.points],
        }


@dataclass
class _Gpu:
    index: int
    handle: Any
    identity: Identity
    unsupported: set[str] = field(default_factory=set)
    xids: dict[int, int] = field(default_factory=dict)
    info: Attrs = ()


_CGROUP_POD = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_CGROUP_CONTAINER = re.compile(r"(?:cri-containerd-|crio-|docker-)?([0-9a-f]{64})(?:\.scope)?$")


def cgroup_attrs(pid: int, proc: str = "/proc") -> Attrs:
    """Pod UID and container id of ``pid`` from its cgroup path, when it runs under Kubernetes.

    Works for the cgroupfs (``/kubepods/burstable/pod<uid>/<id>``) and systemd
    (``kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope``) layouts; the agent
    needs ``hostPID: true`` to see other pods' processes.
    """
    try:
        with open(f"{proc}/{pid}/cgroup") as fh:
            text = fh.read()
    except OSError:
        return ()
    for line in text.splitlines():
        path = line.rpartition(":")[2]
        pod = _CGROUP_POD.search(path)
        if not pod:
            continue
        out = [("k8s.pod.uid", pod.group(1).replace("_", "-"))]
        container = _CGROUP_CONTAINER.search(path)
        if container:
            out.append(("container.id", container.group(1)))
        return tuple(out)
    return ()


class Sampler:
    """Reads every GPU through ``backend``; ``clock`` stamps the samples (epoch seconds)."""

    def __init__(
        self,
        backend: GpuBackend,
        *,
        clock: Callable[[], float] = time.time,
        processes: bool = True,
        proc_root: str = "/proc",
        observer: Observer | None = None,
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.observer = observer
        self._proc_root = proc_root
        self._want_processes = processes
        self._pid_attrs: dict[int, Attrs] = {}
        self._pids_seen: set[int] = set()
        self.gpus: list[_Gpu] = []
        self.system = SystemInfo("", "")
        self._opened = False

    def open(self) -> None:
        """Initialise NVML and find the GPUs. Raises NVMLError (LibraryNotFound, ...) or NoGpuError."""
        self.backend.init()
        self._opened = True
        self.system = self.backend.system()
        count = self.backend.device_count()
        if count == 0:
            raise NoGpuError("the NVIDIA driver reports no GPU on this node")
        for index in range(count):
            try:
                handle = self.backend.handle(index)
                identity = self.backend.identity(handle)
            except pynvml.NVMLError as exc:
                # A GPU already off the bus at start: keep its slot so it is reported lost.
                log.warning("GPU %d: %s", index, exc)
                handle, identity = None, Identity(f"unknown-gpu-{index}", "", "")
            gpu = _Gpu(index, handle, identity)
            gpu.info = (
                ("gpu.index", str(index)),
                ("gpu.name", identity.name),
                ("gpu.pci_bus_id", identity.pci_bus_id),
                ("gpu.driver_version", self.system.driver_version),
                ("gpu.cuda_version", self.system.cuda_version),
            )
            self.gpus.append(gpu)
            if self.observer:
                self.observer(index, "identity", identity)
        try:
            self.backend.watch_xids([g.handle for g in self.gpus if g.handle is not None])
        except pynvml.NVMLError as exc:
            log.warning("XID events unavailable: %s", exc)

    def close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                self.backend.shutdown()
            except pynvml.NVMLError as exc:
                log.debug("nvmlShutdown: %s", exc)

    def sample(self) -> list[GpuSample]:
        now = self.clock()
        self._collect_xids()
        samples = [self._sample_gpu(gpu, now) for gpu in self.gpus]
        # Cgroup lookups are cached only while a pid stays on a GPU, so a reused pid is
        # looked up afresh and cannot inherit another pod's labels.
        if len(self._pid_attrs) != len(self._pids_seen):
            self._pid_attrs = {pid: a for pid, a in self._pid_attrs.items() if pid in self._pids_seen}
        self._pids_seen = set()
        return samples

    def _collect_xids(self) -> None:
        try:
            events = self.backend.xid_events()
        except pynvml.NVMLError as exc:
            log.debug("XID events: %s", exc)
            return
        if not events:
            return
        by_uuid = {g.identity.uuid: g for g in self.gpus}
        for ev in events:
            gpu = by_uuid.get(ev.uuid)
            if gpu is None:
                continue
            gpu.xids[ev.xid] = gpu.xids.get(ev.xid, 0) + 1
            if self.observer:
                self.observer(gpu.index, "xid", ev.xid)

    def _sample_gpu(self, gpu: _Gpu, now: float) -> GpuSample:
        points: list[Point] = [(n.INFO, 1.0, gpu.info)]
        errors: dict[str, str] = {}
        lost = gpu.handle is None
        backend = self.backend
        observer = self.observer
        if not lost:
            for group in FIELD_GROUPS:
                if group in gpu.unsupported:
                    continue
                try:
                    result = getattr(backend, group)(gpu.handle)
                except pynvml.NVMLError_GpuIsLost as exc:
                    if observer:
                        observer(gpu.index, group, exc)
                    lost = True
                    break
                except pynvml.NVMLError_NotSupported as exc:
                    if observer:
                        observer(gpu.index, group, exc)
                    gpu.unsupported.add(group)
                    continue
                except pynvml.NVMLError as exc:
                    if observer:
                        observer(gpu.index, group, exc)
                    errors[group] = nvml_error_name(exc)
                    continue
                if observer:
                    observer(gpu.index, group, result)
                _CONVERT[group](self, result, points)
        for xid, count in gpu.xids.items():
            points.append((n.XID_EVENTS, float(count), (("xid", str(xid)),)))
        points.append((n.LOST, 1.0 if lost else 0.0, _NO_ATTRS))
        ident = gpu.identity
        return GpuSample(
            now,
            gpu.index,
            ident.uuid,
            ident.name,
            ident.pci_bus_id,
            lost,
            points,
            sorted(gpu.unsupported),
            errors,
        )

    # -- group -> points -------------------------------------------------------------------
    def _utilization(self, r: Any, out: list[Point]) -> None:
        out.append((n.UTILIZATION, r.gpu, _NO_ATTRS))
        out.append((n.MEMORY_UTILIZATION, r.memory, _NO_ATTRS))

    def _memory(self, r: Any, out: list[Point]) -> None:
        out.append((n.MEMORY_USAGE, float(r.used), _NO_ATTRS))
        out.append((n.MEMORY_LIMIT, float(r.total), _NO_ATTRS))

    def _clocks(self, r: Any, out: list[Point]) -> None:
        out.append((n.CLOCK_SM, float(r.sm), _NO_ATTRS))
        out.append((n.CLOCK_SM_MAX, float(r.sm_max), _NO_ATTRS))
        out.append((n.CLOCK_MEM, float(r.mem), _NO_ATTRS))
        out.append((n.CLOCK_MEM_MAX, float(r.mem_max), _NO_ATTRS))

    def _power(self, r: Any, out: list[Point]) -> None:
        out.append((n.POWER, r.usage_w, _HW_GPU))
        out.append((n.POWER_LIMIT, r.limit_w, _NO_ATTRS))

    def _energy(self, r: Any, out: list[Point]) -> None:
        out.append((n.ENERGY, float(r), _HW_GPU))

    def _temperatures(self, r: Any, out: list[Point]) -> None:
        out.append((n.TEMPERATURE, r.gpu, _NO_ATTRS))
        if r.memory is not None:
            out.append((n.TEMPERATURE_MEMORY, r.memory, _NO_ATTRS))
        if r.slowdown is not None:
            out.append((n.TEMPERATURE_SLOWDOWN, r.slowdown, _NO_ATTRS))
        if r.shutdown is not None:
            out.append((n.TEMPERATURE_SHUTDOWN, r.shutdown, _NO_ATTRS))

    def _clock_events(self, mask: int, out: list[Point]) -> None:
        for bit, attrs in _REASON_ATTRS.items():
            out.append((n.CLOCK_EVENT, 1.0 if mask & bit else 0.0, attrs))

    def _violations(self, r: dict[str, float], out: list[Point]) -> None:
        for policy, seconds in r.items():
            out.append((n.VIOLATION_TIME, seconds, (("policy", policy),)))

    def _ecc(self, r: Any, out: list[Point]) -> None:
        out.append(
            (n.ECC_ERRORS, float(r.corrected_volatile), (("type", "corrected"), ("counter", "volatile")))
        )
        out.append(
            (n.ECC_ERRORS, float(r.uncorrected_volatile), (("type", "uncorrected"), ("counter", "volatile")))
        )
        out.append(
            (n.ECC_ERRORS, float(r.corrected_aggregate), (("type", "corrected"), ("counter", "aggregate")))
        )
        out.append(
            (
                n.ECC_ERRORS,
                float(r.uncorrected_aggregate),
                (("type", "uncorrected"), ("counter", "aggregate")),
            )
        )

    def _retired_pages(self, r: Any, out: list[Point]) -> None:
        out.append((n.RETIRED_PAGES, float(r.single_bit), (("cause", "single_bit"),)))
        out.append((n.RETIRED_PAGES, float(r.double_bit), (("cause", "double_bit"),)))
        out.append((n.RETIRED_PAGES_PENDING, 1.0 if r.pending else 0.0, _NO_ATTRS))

    def _remapped_rows(self, r: Any, out: list[Point]) -> None:
        out.append((n.REMAPPED_ROWS, float(r.correctable), (("type", "correctable"),)))
        out.append((n.REMAPPED_ROWS, float(r.uncorrectable), (("type", "uncorrectable"),)))
        out.append((n.REMAPPED_ROWS_PENDING, 1.0 if r.pending else 0.0, _NO_ATTRS))
        out.append((n.REMAPPED_ROWS_FAILURE, 1.0 if r.failure else 0.0, _NO_ATTRS))

    def _pcie(self, r: Any, out: list[Point]) -> None:
        out.append((n.PCIE_GEN, float(r.generation), _NO_ATTRS))
        out.append((n.PCIE_GEN_MAX, float(r.generation_max), _NO_ATTRS))
        out.append((n.PCIE_WIDTH, float(r.width), _NO_ATTRS))
        out.append((n.PCIE_WIDTH_MAX, float(r.width_max), _NO_ATTRS))
        out.append((n.PCIE_REPLAY, float(r.replay), _NO_ATTRS))

    def _nvlink(self, links: list[Any], out: list[Point]) -> None:
        for link in links:
            label = str(link.link)
            out.append((n.NVLINK_STATE, 1.0 if link.active else 0.0, (("link", label),)))
            for kind, count in link.errors.items():
                out.append((n.NVLINK_ERRORS, float(count), (("link", label), ("type", kind))))

    def _processes(self, procs: list[Any], out: list[Point]) -> None:
        if not self._want_processes:
            return
        known = self._pid_attrs
        for p in procs:
            attrs = known.get(p.pid)
            if attrs is None:
                attrs = (("process.pid", str(p.pid)), *cgroup_attrs(p.pid, self._proc_root))
                known[p.pid] = attrs
            self._pids_seen.add(p.pid)
            out.append((n.PROCESS_MEMORY, float(p.used_memory or 0), attrs))


_CONVERT: dict[str, Callable[[Sampler, Any, list[Point]], None]] = {
    group: getattr(Sampler, f"_{group}") for group in FIELD_GROUPS
}


def node_name(env: dict[str, str] | None = None) -> str:
    """The node this agent runs on: NODE_NAME (Downward API in the DaemonSet) or the hostname."""
    import os

    env = os.environ if env is None else env  # type: ignore[assignment]
    return (env or {}).get("NODE_NAME") or socket.gethostname()
