"""What every GPU health rule shares: the window of points it reads and counter arithmetic.

Rules read ``metric_points`` rows, grouped per GPU (``hw_id``), metric name and point
attributes, so they judge the points of any agent that follows the names in
``gpu_health.names``, not only this one's.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpu_health import names as n
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.store import Store

FAULT = "gpu_fault"
DEGRADED = "gpu_degraded"


@dataclass
class Series:
    ts: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def since(self, t: float) -> Series:
        i = 0
        while i < len(self.ts) and self.ts[i] < t:
            i += 1
        return Series(self.ts[i:], self.values[i:])

    @property
    def last(self) -> float | None:
        return self.values[-1] if self.values else None


def increase(series: Series, since: float, *, from_zero: bool = False) -> float:
    """Counter increase over ``[since, end]``, counting a drop as a reset (like PromQL's increase).

    The baseline is the last point before ``since``; without one, the first point in the
    window, or zero when ``from_zero`` (counters the agent starts at zero, such as XIDs).
    """
    base: float | None = None
    total = 0.0
    prev: float | None = None
    for t, v in zip(series.ts, series.values, strict=True):
        if t < since:
            base = v
            continue
        if prev is None:
            prev = base if base is not None else (0.0 if from_zero else v)
        total += v - prev if v >= prev else v
        prev = v
    return total


@dataclass
class Gpu:
    hw_id: str
    host: str
    index: str = ""
    name: str = ""
    # metric name -> canonical attributes JSON -> series
    series: dict[str, dict[str, Series]] = field(default_factory=dict)

    def one(self, name: str) -> Series:
        """The series of ``name`` without attributes (or the first, if all have some)."""
        by_attrs = self.series.get(name)
        if not by_attrs:
            return Series()
        return by_attrs.get("", next(iter(by_attrs.values())))

    def by_attr(self, name: str, key: str) -> dict[str, Series]:
        """Series of ``name`` keyed by the value of attribute ``key``."""
        out: dict[str, Series] = {}
        for attrs_json, s in self.series.get(name, {}).items():
            attrs = json.loads(attrs_json) if attrs_json else {}
            if key in attrs:
                out[str(attrs[key])] = s
        return out

    def subject(self) -> dict[str, str]:
        return {"host": self.host, "gpu_uuid": self.hw_id, "gpu_index": self.index}


class GpuWindow:
    """Points of the named metrics since each name's window start, grouped per GPU."""

    def __init__(self, store: Store, now: float, windows: dict[str, float]) -> None:
        self.now = now
        self.gpus: dict[str, Gpu] = {}
        by_window: dict[float, list[str]] = {}
        for name, window in windows.items():
            by_window.setdefault(window, []).append(name)
        for window, names in by_window.items():
            rows = store.query(
                "metric_points",
                columns=["ts", "host", "hw_id", "name", "value", "attributes"],
                since=now - window,
                until=now + 1e-6,
                where={"name": sorted(names)},
            )
            self._add(rows)

    def _add(self, rows: dict[str, list[Any]]) -> None:
        canon: dict[str | None, str] = {None: ""}
        gpus = self.gpus
        for ts, host, hw_id, name, value, attrs in zip(
            rows["ts"],
            rows["host"],
            rows["hw_id"],
            rows["name"],
            rows["value"],
            rows["attributes"],
            strict=True,
        ):
            if not hw_id:
                continue
            gpu = gpus.get(hw_id)
            if gpu is None:
                gpu = gpus[hw_id] = Gpu(hw_id, host or "")
            elif host:
                gpu.host = host
            key = canon.get(attrs)
            if key is None:
                key = json.dumps(json.loads(attrs), sort_keys=True, separators=(",", ":"))
                canon[attrs] = key
            s = gpu.series.setdefault(name, {}).setdefault(key, Series())
            s.ts.append(ts)
            s.values.append(value if value is not None else float("nan"))
        for gpu in gpus.values():
            info = gpu.series.get(n.INFO)
            if info:
                # The newest identity wins (an index can change after a reboot).
                latest = max(info, key=lambda k: info[k].ts[-1])
                attrs = json.loads(latest) if latest else {}
                gpu.index = str(attrs.get("gpu.index", ""))
                gpu.name = str(attrs.get("gpu.name", ""))


def aligned(*series: Series) -> list[tuple[float, ...]]:
    """Rows of values from series sampled in the same passes (joined on timestamp)."""
    if not series:
        return []
    maps = [dict(zip(s.ts, s.values, strict=True)) for s in series[1:]]
    out = []
    for t, v in zip(series[0].ts, series[0].values, strict=True):
        row = [v]
        for m in maps:
            other = m.get(t)
            if other is None:
                break
            row.append(other)
        else:
            out.append((t, *row))
    return out


class Rule(ABC):
    """One health concept: which metrics it reads over which window, and what it reports."""

    name: str = "rule"

    @abstractmethod
    def windows(self) -> dict[str, float]:
        """Metric name -> seconds of history this rule needs."""

    @abstractmethod
    def check(self, gpu: Gpu, now: float) -> Iterable[Finding]:
        """Conditions holding now on one GPU."""

    def finding(
        self,
        gpu: Gpu,
        kind: str,
        severity: Severity,
        summary: str,
        evidence: dict[str, Any],
        *,
        detail: str = "",
        window: Sequence[float] | None = None,
    ) -> Finding:
        return Finding(
            kind=kind,
            severity=severity,
            subject=gpu.subject(),
            summary=summary,
            evidence={"rule": self.name, **evidence},
            key=f"{self.name}:{detail}" if detail else self.name,
            window_start=window[0] if window else None,
            window_end=window[1] if window else None,
        )


def label(gpu: Gpu) -> str:
    """How a summary names a GPU: 'GPU 3 (GPU-8f2c...) on node-a'."""
    return f"GPU {gpu.index or '?'} ({gpu.hw_id}) on {gpu.host or 'unknown host'}"
