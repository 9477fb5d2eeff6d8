"""Cause attribution: is a slow rank's GPU throttling or faulty over the same window?

Joins the rank's host and GPU (``hw.id``, the NVML UUID) with the GPU agent's metric points
(names fixed by the GPU metric contract) and with the gpu_health detectors' Findings:

- clock events that slow the GPU (hardware slowdown, thermal, power brake, power cap),
- SM clocks below ``clock_ratio`` of their maximum,
- PCIe links trained below their maximum generation or width,
- rising ECC, XID, NVLink or PCIe-replay counters, a lost GPU,
- ``gpu_fault`` / ``gpu_degraded`` Findings on that GPU firing in the window.

The verdict is "degraded with GPU fault" naming the GPU and its signals, or "degraded with
no reported fault" (the slowdown is real but nothing on the GPU explains it: look at the
host, the network or the input pipeline).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from detectors.training.robust import median
from mlvigil.core.store import Store

THROTTLE_REASONS = frozenset(
    {"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown", "sw_power_cap"}
)
COUNTERS = (
    "mlvigil.gpu.ecc.errors",
    "mlvigil.gpu.xid.events",
    "mlvigil.gpu.nvlink.errors",
    "mlvigil.gpu.pcie.replay",
)
GAUGES = (
    "mlvigil.gpu.clock_event.active",
    "mlvigil.gpu.clock.sm",
    "mlvigil.gpu.clock.sm.max",
    "mlvigil.gpu.pcie.link.generation",
    "mlvigil.gpu.pcie.link.generation.max",
    "mlvigil.gpu.pcie.link.width",
    "mlvigil.gpu.pcie.link.width.max",
    "mlvigil.gpu.lost",
)
GPU_FINDING_KINDS = ("gpu_fault", "gpu_degraded")
NO_FAULT = "degraded with no reported fault"
GPU_FAULT = "degraded with GPU fault"
# Share of clock-event samples in the window that must be active to count as throttling.
MIN_ACTIVE_SHARE = 0.25


@dataclass
class GpuEvidence:
    gpu_uuid: str
    host: str | None
    signals: list[str] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu_uuid": self.gpu_uuid,
            "host": self.host,
            "signals": self.signals,
            "findings": self.findings,
        }


@dataclass
class Attribution:
    verdict: str
    faulty: list[GpuEvidence]
    checked: list[str]

    @property
    def cause(self) -> str:
        return "gpu_fault" if self.faulty else "no_reported_fault"

    def sentence(self) -> str:
        if not self.faulty:
            return NO_FAULT
        parts = [f"{g.gpu_uuid} ({', '.join(g.signals[:3]) or 'gpu finding'})" for g in self.faulty[:3]]
        return f"{GPU_FAULT}: {'; '.join(parts)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "cause": self.cause,
            "gpus": [g.to_dict() for g in self.faulty],
            "checked_gpus": self.checked,
        }


def _attrs(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _signals(points: list[tuple[float, str, float, dict[str, Any]]], clock_ratio: float) -> list[str]:
    by_name: dict[str, list[tuple[float, float, dict[str, Any]]]] = defaultdict(list)
    for ts, name, value, attrs in points:
        by_name[name].append((ts, value, attrs))
    out: list[str] = []
    # A signal holds if it covers a good share of the window or is on in the latest sample
    # (the window may open before the GPU started throttling).
    events: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for ts, value, attrs in by_name.get("mlvigil.gpu.clock_event.active", []):
        reason = str(attrs.get("reason", ""))
        if reason in THROTTLE_REASONS:
            events[reason].append((ts, value))
    for reason, pts in sorted(events.items()):
        share = sum(1 for _, v in pts if v >= 0.5) / len(pts)
        if share >= MIN_ACTIVE_SHARE or max(pts)[1] >= 0.5:
            out.append(f"clock event {reason} active in {share:.0%} of samples")
    sm = sorted((ts, v) for ts, v, _ in by_name.get("mlvigil.gpu.clock.sm", []))
    sm_max = [v for _, v, _ in by_name.get("mlvigil.gpu.clock.sm.max", []) if v > 0]
    if sm and sm_max:
        top = max(sm_max)
        clock = min(median(v for _, v in sm), sm[-1][1])
        if clock < clock_ratio * top:
            out.append(f"SM clock {clock:.0f} MHz under max {top:.0f} MHz")
    for what in ("generation", "width"):
        cur = by_name.get(f"mlvigil.gpu.pcie.link.{what}")
        top_pts = by_name.get(f"mlvigil.gpu.pcie.link.{what}.max")
        if cur and top_pts:
            latest, top = max(cur)[1], max(top_pts)[1]
            if 0 < latest < top:
                out.append(f"PCIe link {what} {latest:.0f} below max {top:.0f}")
    for name in COUNTERS:
        series: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for ts, value, attrs in by_name.get(name, []):
            series[json.dumps(attrs, sort_keys=True)].append((ts, value))
        for key, pts in sorted(series.items()):
            pts.sort()
            rise = pts[-1][1] - pts[0][1]
            if rise > 0:
                label = ",".join(f"{k}={v}" for k, v in sorted(json.loads(key).items()))
                out.append(f"{name} rose by {rise:.0f}" + (f" ({label})" if label else ""))
    if any(v >= 0.5 for _, v, _ in by_name.get("mlvigil.gpu.lost", [])):
        out.append("GPU lost")
    return out


def attribute(
    store: Store,
    ranks: list[tuple[str | None, str | None]],
    since: float,
    until: float,
    *,
    clock_ratio: float = 0.9,
) -> Attribution:
    """Verdict for the GPUs of ``ranks`` (pairs of host and GPU UUID) over [since, until).

    A rank with a host but no GPU UUID has every GPU reporting from that host checked.
    """
    uuids = sorted({g for _, g in ranks if g})
    bare_hosts = sorted({h for h, g in ranks if h and not g})
    names = list(GAUGES + COUNTERS)
    cols_list = []
    if uuids:
        cols_list.append(
            store.query(
                "metric_points",
                columns=["ts", "host", "hw_id", "name", "value", "attributes"],
                since=since,
                until=until,
                where={"hw_id": uuids, "name": names},
            )
        )
    if bare_hosts:
        cols_list.append(
            store.query(
                "metric_points",
                columns=["ts", "host", "hw_id", "name", "value", "attributes"],
                since=since,
                until=until,
                where={"host": bare_hosts, "name": names},
            )
        )
    per_gpu: dict[str, list[tuple[float, str, float, dict[str, Any]]]] = defaultdict(list)
    host_of: dict[str, str | None] = {g: h for h, g in ranks if g}
    for cols in cols_list:
        for i in range(len(cols["ts"])):
            hw = cols["hw_id"][i]
            if not hw:
                continue
            host_of.setdefault(hw, cols["host"][i])
            per_gpu[hw].append(
                (cols["ts"][i], cols["name"][i], cols["value"][i], _attrs(cols["attributes"][i]))
            )
    evidence: dict[str, GpuEvidence] = {}
    for hw, points in per_gpu.items():
        sig = _signals(points, clock_ratio)
        if sig:
            evidence[hw] = GpuEvidence(hw, host_of.get(hw), sig)
    wanted_gpus = set(uuids) | set(per_gpu)
    seen: set[str] = set()
    for kind in GPU_FINDING_KINDS:
        found = store.findings(kind=kind, since=since, limit=10_000) + store.findings(
            kind=kind, state="firing", limit=10_000
        )
        for f in found:
            if f.id in seen or f.started_at >= until:
                continue
            seen.add(f.id)
            gpu = f.subject.get("gpu_uuid")
            host = f.subject.get("host")
            if not ((gpu and gpu in wanted_gpus) or (not gpu and host in bare_hosts)):
                continue
            key = gpu or f"host:{host}"
            ev = evidence.setdefault(key, GpuEvidence(key, host))
            ev.findings.append({"id": f.id, "kind": f.kind, "state": str(f.state), "summary": f.summary})
    faulty = sorted(evidence.values(), key=lambda e: e.gpu_uuid)
    return Attribution(GPU_FAULT if faulty else NO_FAULT, faulty, sorted(wanted_gpus))
