"""Where carbon numbers come from: codecarbon handler series and NVML GPU energy counters.

Both become ``Trajectory`` objects: cumulative joules and grams over time for one subject (a
run, model, namespace, team or pod), with progress alongside when it is known.

codecarbon handler series (``mlvigil_producer.codecarbon_output``): each tracker instance is one series,
identified by ``mlvigil.carbon.tracker_run`` (+ ``mlvigil.carbon.task`` for per-task
breakdowns, which are left out of totals because the tracker totals include them). A subject's
total at time t is the sum over its series of each series' last running total at or before t,
so a restarted job (a new tracker) adds to its run instead of resetting it.

NVML GPU energy (``hw.energy``, J, cumulative per GPU): attribution rule
  1. a run (with its pod) is *active* on a GPU over the segments covered by its training steps
     on that GPU (``training_steps``: ts .. ts + step_time_s, by ``gpu_uuid``), merging steps
     less than ``max_step_gap`` apart;
  2. between two consecutive energy samples of the GPU, the energy delta is assumed spread
     evenly over the interval; each sub-interval's share is split evenly among the runs active
     on the GPU in it; energy when no run is active stays unattributed (idle);
  3. a counter that goes down (driver reload) starts a new baseline: that interval counts 0.
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from mlvigil.core.store import Store
from mlvigil_producer.carbon_names import (
    DURATION,
    EMISSIONS,
    ENERGY,
    HANDLER_METRICS,
    PROGRESS,
    STEPS_DONE,
    STEPS_PLANNED,
)

GPU_ENERGY = "hw.energy"

#: Budget scope -> handler point attribute.
SCOPE_ATTRS = {
    "run_id": "mlvigil.train.run_id",
    "model": "mlvigil.model.name",
    "namespace": "k8s.namespace.name",
    "team": "mlvigil.team",
}
ATTR_TRACKER_RUN = "mlvigil.carbon.tracker_run"
ATTR_TASK = "mlvigil.carbon.task"


def value_as_of(ts: Sequence[float], values: Sequence[float], t: float, default: float = 0.0) -> float:
    """Last value at or before ``t`` (``ts`` sorted)."""
    i = bisect.bisect_right(ts, t)
    return values[i - 1] if i else default


def increase(
    ts: Sequence[float], values: Sequence[float], t0: float, t1: float, *, starts_at_zero: bool
) -> float:
    """Increase of a cumulative counter over [t0, t1], tolerant of resets (like PromQL increase).

    ``starts_at_zero``: the series counts from 0 at its start (a codecarbon tracker), so a series
    first seen inside the window contributes its whole value; NVML's counter does not.
    """
    i0 = bisect.bisect_right(ts, t0)
    i1 = bisect.bisect_right(ts, t1)
    if i0 > 0:
        prev = values[i0 - 1]
    elif i0 < i1:
        prev = 0.0 if starts_at_zero else values[i0]
    else:
        return 0.0
    total = 0.0
    for v in values[i0:i1]:
        if v >= prev:
            total += v - prev
        elif starts_at_zero:
            total += v  # reset: the new series counted from 0
        prev = v
    return total


@dataclass
class Trajectory:
    """Cumulative energy and emissions of one subject over time, oldest first."""

    ts: list[float] = field(default_factory=list)
    joules: list[float] = field(default_factory=list)
    grams: list[float] = field(default_factory=list)
    source: str = ""

    @property
    def total_joules(self) -> float:
        return self.joules[-1] if self.joules else 0.0

    @property
    def total_grams(self) -> float:
        return self.grams[-1] if self.grams else 0.0

    def since(self, t0: float) -> Trajectory:
        """The same trajectory counted from ``t0`` (for calendar-period budgets)."""
        base_j = value_as_of(self.ts, self.joules, t0)
        base_g = value_as_of(self.ts, self.grams, t0)
        i = bisect.bisect_right(self.ts, t0)
        return Trajectory(
            ts=[t0, *self.ts[i:]],
            joules=[0.0, *(j - base_j for j in self.joules[i:])],
            grams=[0.0, *(g - base_g for g in self.grams[i:])],
            source=self.source,
        )


# -- codecarbon handler series -------------------------------------------------------------
@dataclass
class HandlerSeries:
    tracker_run: str
    labels: dict[str, str]  # scope -> value
    service: str | None
    ts: list[float] = field(default_factory=list)
    joules: list[float] = field(default_factory=list)
    grams: list[float] = field(default_factory=list)
    # gauges by name -> (ts, values)
    gauges: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)

    def gauge_as_of(self, name: str, t: float) -> float | None:
        g = self.gauges.get(name)
        if not g:
            return None
        i = bisect.bisect_right(g[0], t)
        return g[1][i - 1] if i else None


def read_handler_series(store: Store, since: float, until: float) -> list[HandlerSeries]:
    """Tracker-level handler series (task breakdowns left out) with points in [since, until)."""
    cols = store.query(
        "metric_points",
        columns=["ts", "service", "name", "value", "attributes"],
        since=since,
        until=until,
        where={"name": list(HANDLER_METRICS)},
    )
    series: dict[str, HandlerSeries] = {}
    energy: dict[str, dict[float, float]] = defaultdict(dict)
    emissions: dict[str, dict[float, float]] = defaultdict(dict)
    for ts, service, name, value, raw in zip(
        cols["ts"], cols["service"], cols["name"], cols["value"], cols["attributes"], strict=True
    ):
        attrs: dict[str, Any] = json.loads(raw) if raw else {}
        if attrs.get(ATTR_TASK) or value is None:
            continue
        run = str(attrs.get(ATTR_TRACKER_RUN) or f"{service}|{attrs.get('mlvigil.carbon.project')}")
        s = series.get(run)
        if s is None:
            labels = {scope: str(attrs[a]) for scope, a in SCOPE_ATTRS.items() if attrs.get(a) is not None}
            s = series[run] = HandlerSeries(run, labels, service)
        if name == ENERGY:
            energy[run][ts] = value
        elif name == EMISSIONS:
            emissions[run][ts] = value
        else:
            g = s.gauges.setdefault(name, ([], []))
            g[0].append(ts)
            g[1].append(value)
    for run, s in series.items():
        by_t_j, by_t_g = energy.get(run, {}), emissions.get(run, {})
        for t in sorted(set(by_t_j) | set(by_t_g)):
            s.ts.append(t)
            # A monotonic total: carry the last known value when one of the two is missing.
            s.joules.append(by_t_j.get(t, s.joules[-1] if s.joules else 0.0))
            s.grams.append(by_t_g.get(t, s.grams[-1] if s.grams else 0.0))
    return [s for s in series.values() if s.ts]


def combine(series: Iterable[HandlerSeries]) -> Trajectory:
    """Sum of running totals across series, as of every time any of them reported."""
    ss = list(series)
    times = sorted({t for s in ss for t in s.ts})
    out = Trajectory(source="codecarbon")
    for t in times:
        out.ts.append(t)
        out.joules.append(sum(value_as_of(s.ts, s.joules, t) for s in ss))
        out.grams.append(sum(value_as_of(s.ts, s.grams, t) for s in ss))
    return out


def handler_progress(
    series: Sequence[HandlerSeries],
    times: Sequence[float],
    *,
    planned_steps: int | None,
    expected_duration: float | None,
) -> list[float] | None:
    """Progress at each time from the handler's gauges; None when the series give none.

    Budget settings win: ``planned_steps`` with the reported steps done, then
    ``expected_duration`` with the summed tracked duration; else the reported fraction or
    steps done / planned.
    """

    def latest(name: str, t: float) -> float | None:
        vals = [
            (s.gauges[name][0][i - 1], s.gauges[name][1][i - 1])
            for s in series
            if name in s.gauges and (i := bisect.bisect_right(s.gauges[name][0], t))
        ]
        return max(vals)[1] if vals else None

    out: list[float] = []
    for t in times:
        p: float | None = None
        done = latest(STEPS_DONE, t)
        if planned_steps is not None:
            p = None if done is None else done / planned_steps
        elif expected_duration is not None:
            p = sum(s.gauge_as_of(DURATION, t) or 0.0 for s in series) / expected_duration
        else:
            frac = latest(PROGRESS, t)
            planned = latest(STEPS_PLANNED, t)
            if frac is not None:
                p = frac
            elif done is not None and planned:
                p = done / planned
        out.append(float("nan") if p is None else min(max(p, 0.0), 1.0))
    if all(v != v for v in out):
        return None
    return out


# -- NVML energy attribution ---------------------------------------------------------------
@dataclass(frozen=True)
class GpuUser:
    run_id: str
    pod: str | None
    service: str | None


@dataclass
class Attribution:
    """NVML energy attributed to (run, pod) users of GPUs, plus what stayed unattributed."""

    users: dict[GpuUser, Trajectory] = field(default_factory=dict)
    idle_joules: dict[str, float] = field(default_factory=dict)  # gpu_uuid -> J
    # run_id -> (step ts, step) and active segments, for progress
    steps: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    active: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def runs(self) -> dict[str, list[Trajectory]]:
        out: dict[str, list[Trajectory]] = defaultdict(list)
        for user, traj in self.users.items():
            out[user.run_id].append(traj)
        return out

    def pods(self) -> dict[str, list[Trajectory]]:
        out: dict[str, list[Trajectory]] = defaultdict(list)
        for user, traj in self.users.items():
            if user.pod:
                out[user.pod].append(traj)
        return out


def _merge(spans: list[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    spans.sort()
    out: list[tuple[float, float]] = []
    for a, b in spans:
        if out and a - out[-1][1] <= gap:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _overlap(
    segs: list[tuple[float, float]], starts: list[float], a: float, b: float
) -> list[tuple[float, float]]:
    """Parts of the sorted disjoint ``segs`` inside (a, b]."""
    out = []
    i = max(0, bisect.bisect_right(starts, a) - 1)
    while i < len(segs) and segs[i][0] < b:
        lo, hi = max(segs[i][0], a), min(segs[i][1], b)
        if hi > lo:
            out.append((lo, hi))
        i += 1
    return out


def sum_trajectories(trajs: Sequence[Trajectory], source: str) -> Trajectory:
    times = sorted({t for tr in trajs for t in tr.ts})
    out = Trajectory(source=source)
    for t in times:
        out.ts.append(t)
        out.joules.append(sum(value_as_of(tr.ts, tr.joules, t) for tr in trajs))
        out.grams.append(sum(value_as_of(tr.ts, tr.grams, t) for tr in trajs))
    return out


def attribute_gpu_energy(
    store: Store, since: float, until: float, *, grams_per_joule: float, max_step_gap: float
) -> Attribution:
    """Split each GPU's ``hw.energy`` deltas among the runs active on it (module docstring)."""
    steps = store.query(
        "training_steps",
        columns=["ts", "run_id", "k8s_pod", "service", "gpu_uuid", "step", "step_time_s"],
        since=since,
        until=until,
    )
    result = Attribution()
    by_gpu_user: dict[str, dict[GpuUser, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    run_spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for ts, run, pod, service, gpu, step, step_time in zip(
        steps["ts"],
        steps["run_id"],
        steps["k8s_pod"],
        steps["service"],
        steps["gpu_uuid"],
        steps["step"],
        steps["step_time_s"],
        strict=True,
    ):
        if run is None:
            continue
        end = ts + (step_time if step_time and step_time > 0 else 0.0)
        run_spans[run].append((ts, end))
        if step is not None:
            st = result.steps.setdefault(run, ([], []))
            st[0].append(ts)
            st[1].append(float(step))
        if gpu:
            by_gpu_user[gpu][GpuUser(run, pod, service)].append((ts, end))
    for run, spans in run_spans.items():
        result.active[run] = _merge(spans, max_step_gap)
    for run, (sts, svals) in result.steps.items():
        # running max: steps done as of each time
        order = sorted(range(len(sts)), key=sts.__getitem__)
        best = float("-inf")
        ts_sorted, max_sorted = [], []
        for i in order:
            best = max(best, svals[i])
            ts_sorted.append(sts[i])
            max_sorted.append(best)
        result.steps[run] = (ts_sorted, max_sorted)
    if not by_gpu_user:
        return result
    energy = store.query(
        "metric_points",
        columns=["ts", "hw_id", "value"],
        since=since,
        until=until,
        where={"name": GPU_ENERGY, "hw_id": sorted(by_gpu_user)},
    )
    samples: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for ts, hw, value in zip(energy["ts"], energy["hw_id"], energy["value"], strict=True):
        if value is not None:
            samples[hw].append((ts, value))
    per_user: dict[GpuUser, list[Trajectory]] = defaultdict(list)
    for gpu, users in by_gpu_user.items():
        segs = {u: _merge(list(sp), max_step_gap) for u, sp in users.items()}
        starts = {u: [s[0] for s in sg] for u, sg in segs.items()}
        running = dict.fromkeys(users, 0.0)
        trajs = {u: Trajectory(source="nvml") for u in users}
        for u, tr in trajs.items():
            per_user[u].append(tr)
        idle = 0.0
        pts = sorted(samples.get(gpu, []))
        for (a, ea), (b, eb) in pairwise(pts):
            delta = eb - ea
            if delta <= 0 or b <= a:
                continue  # reset or no energy
            parts = {u: _overlap(segs[u], starts[u], a, b) for u in users}
            cuts = sorted({a, b, *(x for ps in parts.values() for p in ps for x in p)})
            attributed = 0.0
            for lo, hi in pairwise(cuts):
                active = [u for u, ps in parts.items() if any(p0 <= lo and hi <= p1 for p0, p1 in ps)]
                if not active:
                    continue
                share = delta * (hi - lo) / (b - a) / len(active)
                for u in active:
                    running[u] += share
                attributed += share * len(active)
            idle += delta - attributed
            for u in users:
                if parts[u]:
                    tr = trajs[u]
                    tr.ts.append(b)
                    tr.joules.append(running[u])
                    tr.grams.append(running[u] * grams_per_joule)
        result.idle_joules[gpu] = idle
    # A pod with several GPUs got one trajectory per GPU above: sum them by time.
    for u, trs in per_user.items():
        result.users[u] = trs[0] if len(trs) == 1 else sum_trajectories(trs, "nvml")
    return result


def run_steps_progress(
    attribution: Attribution,
    run_id: str,
    times: Sequence[float],
    *,
    planned_steps: int | None,
    expected_duration: float | None,
) -> list[float] | None:
    """Progress of a run at each time from its training steps (NVML path)."""
    out: list[float] = []
    if planned_steps is not None and run_id in attribution.steps:
        sts, done = attribution.steps[run_id]
        for t in times:
            out.append(min(1.0, max(0.0, value_as_of(sts, done, t, default=0.0) / planned_steps)))
        return out
    if expected_duration is not None and run_id in attribution.active:
        segs = attribution.active[run_id]
        for t in times:
            busy = sum(max(0.0, min(b, t) - a) for a, b in segs if a < t)
            out.append(min(1.0, busy / expected_duration))
        return out
    return None
