"""Recording real NVML answers as a scenario file the fake backend replays.

``mlvigil agent --record FILE`` attaches a ``Recorder`` to the sampler: every group's
result (or NVML error) of every pass is kept, and the file written at the end is a
scenario: the GPUs with their first-pass state and unsupported groups, then a timeline of
``set`` steps holding only what changed, ``fail`` steps for errors, ``xid`` and ``lost``
steps. Replaying it (``--backend fake --scenario FILE``) gives the same points at the same
offsets, so a fixture recorded on a GPU machine tests the rules anywhere.
"""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pynvml
import yaml

from gpu_health.backend import Identity, SystemInfo, nvml_error_name
from gpu_health.fake import state_of


class Recorder:
    """Sampler observer; call ``end_pass(ts)`` after each pass and ``write(path)`` at the end."""

    def __init__(self) -> None:
        self.system = SystemInfo("", "")
        self._identity: dict[int, Identity] = {}
        self._current: dict[int, dict[str, Any]] = {}
        self._events: dict[int, list[tuple[str, Any]]] = {}
        self._gpus: dict[int, dict[str, Any]] = {}
        self._last_state: dict[int, dict[str, Any]] = {}
        self._last_errors: dict[int, dict[str, str]] = {}
        self._lost: dict[int, bool] = {}
        self._timeline: list[dict[str, Any]] = []
        self._t0: float | None = None
        self.passes = 0

    def __call__(self, index: int, group: str, result: Any) -> None:
        if group == "identity":
            self._identity[index] = result
            return
        if group == "xid":
            self._events.setdefault(index, []).append(("xid", int(result)))
            return
        self._current.setdefault(index, {})[group] = result

    def end_pass(self, ts: float) -> None:
        if self._t0 is None:
            self._t0 = ts
        at = round(ts - self._t0, 3)
        for index in sorted(self._identity):
            results = self._current.get(index, {})
            state: dict[str, Any] = {}
            errors: dict[str, str] = {}
            lost = False
            for group, result in results.items():
                if isinstance(result, pynvml.NVMLError_GpuIsLost):
                    lost = True
                elif isinstance(result, pynvml.NVMLError):
                    errors[group] = nvml_error_name(result)
                else:
                    state.update(_plain(state_of(group, result)))
            if index not in self._gpus:
                ident = self._identity[index]
                self._gpus[index] = {
                    "uuid": ident.uuid,
                    "name": ident.name,
                    "pci_bus_id": ident.pci_bus_id,
                    "unsupported": sorted(g for g, e in errors.items() if e == "NotSupported"),
                    "state": state,
                }
                if lost or not results:
                    self._gpus[index]["lost"] = True
                self._last_state[index] = dict(state)
                self._last_errors[index] = {g: e for g, e in errors.items() if e != "NotSupported"}
                self._lost[index] = lost or not results
                if self._last_errors[index]:
                    self._timeline.append({"at": at, "gpu": index, "fail": dict(self._last_errors[index])})
            else:
                step: dict[str, Any] = {}
                changed = {k: v for k, v in state.items() if self._last_state[index].get(k) != v}
                if changed:
                    step["set"] = changed
                    self._last_state[index].update(changed)
                prev_errors = self._last_errors[index]
                fail: dict[str, str | None] = {g: e for g, e in errors.items() if prev_errors.get(g) != e}
                fail.update({g: None for g in prev_errors if g not in errors and g in results})
                if fail and not lost:
                    step["fail"] = fail
                    self._last_errors[index] = {g: e for g, e in {**prev_errors, **fail}.items() if e}
                if lost != self._lost[index]:
                    step["lost"] = lost
                    self._lost[index] = lost
                if step:
                    self._timeline.append({"at": at, "gpu": index, **step})
            for kind, value in self._events.get(index, []):
                # XIDs are read at the start of a pass: replay them just before it.
                self._timeline.append({"at": max(at - 0.001, 0.0), "gpu": index, kind: value})
        self._current = {}
        self._events = {}
        self.passes += 1

    def scenario(self) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        return {
            "description": f"recorded by mlvigil agent on {socket.gethostname()} at {now},"
            f" {self.passes} passes",
            "driver_version": self.system.driver_version,
            "cuda_version": self.system.cuda_version,
            "gpus": [self._gpus[i] for i in sorted(self._gpus)],
            "timeline": sorted(self._timeline, key=lambda s: s["at"]),
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.scenario(), sort_keys=False))


def _plain(state: dict[str, Any]) -> dict[str, Any]:
    """YAML-safe values: bools and numbers as they are, everything else as text."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        out[k] = v if isinstance(v, bool | int | float | str | list | type(None)) else str(v)
    return out
