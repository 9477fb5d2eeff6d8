"""Detector adapters: read ``training_steps`` incrementally, feed the pure scorers, report Findings.

One adapter per Finding kind. Each keeps per-run state keyed by ``run_id`` and reads only the
rows since its last evaluation (``StepFeed``); runs idle for ``run_ttl`` are forgotten.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from detectors.base import Detector
from detectors.training.attribution import attribute
from detectors.training.config import TrainingConfig
from detectors.training.dataloader import StallMonitor
from detectors.training.feed import Row, StepAligner, StepFeed, by_run
from detectors.training.goodput import GoodputMeter
from detectors.training.loss import LossAnomaly, LossMonitor
from detectors.training.metrics import TrainingMetrics
from detectors.training.regression import BaselineShift
from detectors.training.robust import RollingMedian, median
from detectors.training.straggler import StragglerScorer
from mlvigil.findings import Finding, Severity
from mlvigil.store import Store

S = TypeVar("S")


@dataclass
class RankInfo:
    host: str | None = None
    k8s_pod: str | None = None
    gpu_uuid: str | None = None

    def update(self, row: Row) -> None:
        self.host = row["host"] or self.host
        self.k8s_pod = row["k8s_pod"] or self.k8s_pod
        self.gpu_uuid = row["gpu_uuid"] or self.gpu_uuid


def _rank(row: Row) -> int:
    return int(row["rank"]) if row["rank"] is not None else 0


def _num(v: Any) -> float | None:
    return float(v) if v is not None else None


def _subject(run_id: str, rank: int | None = None, info: RankInfo | None = None) -> dict[str, str]:
    subject = {"run_id": run_id}
    if rank is not None:
        subject["rank"] = str(rank)
    if info is not None:
        for key in ("host", "gpu_uuid", "k8s_pod"):
            value = getattr(info, key)
            if value:
                subject[key] = value
    return subject


class _RunDetector(Detector, Generic[S]):
    kind = ""

    def __init__(
        self, cfg: TrainingConfig, metrics: TrainingMetrics | None = None, name: str | None = None
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.name = name or f"training.{self.kind}"
        self.feed = StepFeed(history=cfg.history, lookback=cfg.lookback)
        self.runs: dict[str, S] = {}
        self._last_rows: dict[str, float] = {}

    def evaluate(self, store: Store, now: float) -> Sequence[Finding]:
        for run_id, rows in by_run(self.feed.poll(store, now)).items():
            state = self.runs.get(run_id)
            if state is None:
                state = self.runs[run_id] = self.new_run(run_id)
            rows.sort(key=lambda r: (r["step"] if r["step"] is not None else -1, r["ts"]))
            self.consume(run_id, state, rows)
            self._last_rows[run_id] = now
        for run_id, seen in list(self._last_rows.items()):
            if now - seen > self.cfg.run_ttl:
                del self._last_rows[run_id]
                self.runs.pop(run_id, None)
                if self.metrics:
                    self.metrics.forget(run_id)
        out: list[Finding] = []
        for run_id, state in self.runs.items():
            out.extend(self.report(store, now, run_id, state))
        return out

    def _set(self, gauge_name: str, labels: tuple[str, ...], value: float) -> None:
        if self.metrics is not None and math.isfinite(value):
            self.metrics.set(getattr(self.metrics, gauge_name), labels, value)

    def _attribute(
        self, store: Store, ranks: list[RankInfo], since: float | None, now: float
    ) -> dict[str, Any]:
        if not self.cfg.attribution.enabled:
            return {}
        start = (since if since is not None else now) - self.cfg.attribution.margin
        att = attribute(
            store,
            [(r.host, r.gpu_uuid) for r in ranks],
            start,
            now + 1.0,
            clock_ratio=self.cfg.attribution.clock_ratio,
        )
        return {"suspected_cause": att.sentence(), **att.to_dict()}

    @abstractmethod
    def new_run(self, run_id: str) -> S: ...

    @abstractmethod
    def consume(self, run_id: str, state: S, rows: list[Row]) -> None: ...

    @abstractmethod
    def report(self, store: Store, now: float, run_id: str, state: S) -> list[Finding]: ...


# -- step-time regression and goodput ---------------------------------------------------------
@dataclass
class _SlowdownRun:
    aligner: StepAligner
    shift: BaselineShift
    goodput: GoodputMeter = field(default_factory=GoodputMeter)
    ranks: dict[int, RankInfo] = field(default_factory=dict)
    rank_times: dict[int, RollingMedian] = field(default_factory=dict)
    rank_compute: dict[int, RollingMedian] = field(default_factory=dict)
    last_step: int | None = None


class SlowdownDetector(_RunDetector[_SlowdownRun]):
    """``training_slowdown``: the run's step time regressed from its ideal (post-warm-up) level.

    The run's step time at a step is the median over ranks of step time minus checkpointing
    (in synchronous training every rank waits for the slowest, so the median is the job's
    pace and is robust to one rank's clock). Also keeps goodput and per-rank step-time gauges.
    """

    kind = "training_slowdown"

    def new_run(self, run_id: str) -> _SlowdownRun:
        c = self.cfg
        return _SlowdownRun(
            StepAligner(c.align_lag_steps),
            BaselineShift(
                direction="increase",
                min_shift=c.slowdown.min_slowdown,
                warmup=c.warmup_steps,
                baseline_samples=c.baseline_steps,
                window=c.window,
                h=c.slowdown.cusum_h,
            ),
        )

    def consume(self, run_id: str, state: _SlowdownRun, rows: list[Row]) -> None:
        for row in rows:
            rank = _rank(row)
            state.ranks.setdefault(rank, RankInfo()).update(row)
            st = _num(row["step_time_s"])
            if st is None or not st >= 0:
                continue
            state.goodput.add(
                rank=rank,
                ts=row["ts"],
                step_time=st,
                data_wait=_num(row["data_wait_s"]),
                checkpoint=_num(row["checkpoint_s"]),
            )
            state.rank_times.setdefault(rank, RollingMedian(self.cfg.window)).update(st)
            comm = _num(row["comm_s"]) or 0.0
            state.rank_compute.setdefault(rank, RollingMedian(self.cfg.window)).update(max(st - comm, 0.0))
            state.aligner.add(row)
        for step, by_rank in state.aligner.ready():
            times = [
                float(r["step_time_s"]) - (_num(r["checkpoint_s"]) or 0.0)
                for r in by_rank.values()
                if r["step_time_s"] is not None
            ]
            if not times:
                continue
            ts = min(r["ts"] for r in by_rank.values())
            state.shift.update(median(times), step=step, ts=ts)
            state.last_step = step
        for rank, rm in state.rank_times.items():
            self._set("step_time", (run_id, str(rank)), rm.value)
        self._set("goodput", (run_id,), state.goodput.ratio)
        for cat, secs in state.goodput.breakdown().items():
            self._set("badput", (run_id, cat), secs)
        if state.shift.baseline is not None:
            self._set("ideal_step_time", (run_id,), state.shift.baseline)
            self._set("slowdown", (run_id,), state.shift.recent.value / state.shift.baseline)

    def report(self, store: Store, now: float, run_id: str, state: _SlowdownRun) -> list[Finding]:
        shift = state.shift.active
        if shift is None:
            return []
        # The ranks computing slowest now are the first suspects.
        compute = {r: rm.value for r, rm in state.rank_compute.items() if len(rm)}
        ref = median(compute.values()) if compute else 0.0
        slow = sorted(compute, key=lambda r: -compute[r])[:3]
        suspects = [
            r for r in slow if ref > 0 and compute[r] >= (1 + self.cfg.slowdown.min_slowdown / 2) * ref
        ]
        checked = [state.ranks[r] for r in (suspects or list(state.ranks))][:256]
        evidence: dict[str, Any] = {
            "ideal_step_time_s": shift.baseline,
            "current_step_time_s": shift.current,
            "slowdown_pct": round(100 * (shift.ratio - 1), 2),
            "began_step": shift.began_step,
            "began_ts": shift.began_ts,
            "cusum": shift.cusum,
            "threshold_pct": 100 * self.cfg.slowdown.min_slowdown,
            "last_step": state.last_step,
            "goodput_ratio": state.goodput.ratio,
            "time_s": state.goodput.breakdown(),
            "slowest_ranks": [
                {"rank": r, "compute_s": compute[r], "relative": compute[r] / ref if ref else None}
                for r in slow
            ],
        }
        evidence.update(self._attribute(store, checked, shift.began_ts, now))
        began = f" since step {shift.began_step}" if shift.began_step is not None else ""
        summary = (
            f"Run {run_id} steps take {shift.current:.3g}s, {100 * (shift.ratio - 1):.0f}% over its ideal"
            f" {shift.baseline:.3g}s{began}; {evidence.get('suspected_cause', 'cause not attributed')}."
        )
        sev = Severity.CRITICAL if shift.ratio >= 1.5 else Severity.WARNING
        return [
            Finding(
                self.kind,
                sev,
                _subject(run_id),
                summary,
                evidence,
                window_start=shift.began_ts,
                window_end=now,
            )
        ]


# -- stragglers -------------------------------------------------------------------------------
@dataclass
class _StragglerRun:
    aligner: StepAligner
    scorer: StragglerScorer
    ranks: dict[int, RankInfo] = field(default_factory=dict)
    last_step: int | None = None


class StragglerDetector(_RunDetector[_StragglerRun]):
    """``straggler``: one rank computes clearly and durably slower than its peers."""

    kind = "straggler"

    def new_run(self, run_id: str) -> _StragglerRun:
        c = self.cfg.straggler
        return _StragglerRun(
            StepAligner(self.cfg.align_lag_steps),
            StragglerScorer(
                window=c.window,
                min_excess=c.min_excess,
                z=c.z,
                sustain=c.sustain,
                max_relative=c.max_relative,
                resolve_excess=c.resolve_excess,
            ),
        )

    def consume(self, run_id: str, state: _StragglerRun, rows: list[Row]) -> None:
        for row in rows:
            state.ranks.setdefault(_rank(row), RankInfo()).update(row)
            state.aligner.add(row)
        scores = {}
        for step, by_rank in state.aligner.ready():
            compute: dict[int, float] = {}
            for rank, r in by_rank.items():
                st = _num(r["step_time_s"])
                if st is None:
                    continue
                comm = _num(r["comm_s"]) if self.cfg.straggler.exclude_comm else None
                compute[rank] = st - comm if comm is not None and comm < st else st
            ts = min(r["ts"] for r in by_rank.values())
            scores = state.scorer.update(step, compute, ts)
            state.last_step = step
        for rank, s in scores.items():
            self._set("straggler", (run_id, str(rank), "relative"), s.relative)
            self._set("straggler", (run_id, str(rank), "individual"), s.individual)

    def report(self, store: Store, now: float, run_id: str, state: _StragglerRun) -> list[Finding]:
        out = []
        for rank, st in state.scorer.ranks.items():
            s = st.score
            if s is None or not s.flagged:
                continue
            info = state.ranks.get(rank, RankInfo())
            evidence: dict[str, Any] = {
                "relative_score": s.relative,
                "individual_score": s.individual,
                "peak_relative_score": s.peak_relative,
                "threshold": s.threshold,
                "usual_relative_score": s.reference,
                "compute_s": s.compute,
                "since_step": s.since_step,
                "since_ts": s.since_ts,
                "last_step": state.last_step,
                "window_steps": self.cfg.straggler.window,
                "sustain_steps": self.cfg.straggler.sustain,
                "comm_excluded": self.cfg.straggler.exclude_comm,
                "k8s_pod": info.k8s_pod,
            }
            evidence.update(self._attribute(store, [info], s.since_ts, now))
            where = ", ".join(x for x in (info.host, info.gpu_uuid) if x)
            summary = (
                f"Rank {rank} of run {run_id} computes {100 * (s.relative - 1):.0f}% slower than"
                f" the median rank since step {s.since_step}"
                + (f" ({where})" if where else "")
                + f"; {evidence.get('suspected_cause', 'cause not attributed')}."
            )
            sev = Severity.CRITICAL if s.relative >= self.cfg.straggler.max_relative else Severity.WARNING
            out.append(
                Finding(
                    self.kind,
                    sev,
                    _subject(run_id, rank, info),
                    summary,
                    evidence,
                    window_start=s.since_ts,
                    window_end=now,
                )
            )
        return out


# -- throughput -------------------------------------------------------------------------------
@dataclass
class _ThroughputRun:
    aligner: StepAligner
    shift: BaselineShift
    unit: str | None = None


class ThroughputDropDetector(_RunDetector[_ThroughputRun]):
    """``throughput_drop``: the run's tokens (else samples) per second fell from its baseline.

    Per step: the sum over ranks of tokens (or samples) over the median rank step time.
    """

    kind = "throughput_drop"

    def new_run(self, run_id: str) -> _ThroughputRun:
        c = self.cfg
        return _ThroughputRun(
            StepAligner(c.align_lag_steps),
            BaselineShift(
                direction="decrease",
                min_shift=c.throughput.min_drop / (1 - c.throughput.min_drop),
                warmup=c.warmup_steps,
                baseline_samples=c.baseline_steps,
                window=c.window,
            ),
        )

    def consume(self, run_id: str, state: _ThroughputRun, rows: list[Row]) -> None:
        for row in rows:
            if state.unit is None:
                state.unit = (
                    "tokens"
                    if row["tokens"] is not None
                    else ("samples" if row["samples"] is not None else None)
                )
            state.aligner.add(row)
        for step, by_rank in state.aligner.ready():
            if state.unit is None:
                continue
            work = sum(float(r[state.unit]) for r in by_rank.values() if r[state.unit] is not None)
            times = [float(r["step_time_s"]) for r in by_rank.values() if r["step_time_s"]]
            if not times or work <= 0:
                continue
            state.shift.update(work / median(times), step=step, ts=min(r["ts"] for r in by_rank.values()))
        if state.unit and len(state.shift.recent):
            self._set("throughput", (run_id, state.unit), state.shift.recent.value)

    def report(self, store: Store, now: float, run_id: str, state: _ThroughputRun) -> list[Finding]:
        shift = state.shift.active
        if shift is None:
            return []
        drop = 1 - shift.ratio
        evidence = {
            "unit": f"{state.unit}/s",
            "baseline_per_s": shift.baseline,
            "current_per_s": shift.current,
            "drop_pct": round(100 * drop, 2),
            "threshold_pct": 100 * self.cfg.throughput.min_drop,
            "began_step": shift.began_step,
            "began_ts": shift.began_ts,
        }
        summary = (
            f"Run {run_id} throughput fell {100 * drop:.0f}% to {shift.current:.4g} {state.unit}/s"
            f" from {shift.baseline:.4g} since step {shift.began_step}."
        )
        sev = Severity.CRITICAL if drop >= 0.5 else Severity.WARNING
        return [
            Finding(
                self.kind,
                sev,
                _subject(run_id),
                summary,
                evidence,
                window_start=shift.began_ts,
                window_end=now,
            )
        ]


# -- data-loader stalls -----------------------------------------------------------------------
@dataclass
class _StallRun:
    monitors: dict[int, StallMonitor] = field(default_factory=dict)
    ranks: dict[int, RankInfo] = field(default_factory=dict)
    last_step: dict[int, int] = field(default_factory=dict)


class DataloaderStallDetector(_RunDetector[_StallRun]):
    """``dataloader_stall``: a rank's steps wait on input for a large share of their time."""

    kind = "dataloader_stall"

    def new_run(self, run_id: str) -> _StallRun:
        return _StallRun()

    def consume(self, run_id: str, state: _StallRun, rows: list[Row]) -> None:
        c = self.cfg.dataloader
        touched = set()
        for row in rows:
            rank = _rank(row)
            state.ranks.setdefault(rank, RankInfo()).update(row)
            st = _num(row["step_time_s"])
            if st is None:
                continue
            mon = state.monitors.setdefault(
                rank, StallMonitor(window=c.window, share=c.share, seconds=c.seconds)
            )
            mon.update(step_time=st, data_wait=_num(row["data_wait_s"]))
            if row["step"] is not None:
                state.last_step[rank] = int(row["step"])
            touched.add(rank)
        for rank in touched:
            mon = state.monitors[rank]
            if len(mon._shares):
                self._set("data_wait", (run_id, str(rank)), mon._shares.value)

    def report(self, store: Store, now: float, run_id: str, state: _StallRun) -> list[Finding]:
        out = []
        for rank, mon in state.monitors.items():
            stall = mon.current
            if stall is None:
                continue
            info = state.ranks.get(rank, RankInfo())
            evidence = {
                "data_wait_share": stall.wait_share,
                "longest_wait_s": stall.max_wait,
                "rule": stall.reason,
                "share_threshold": self.cfg.dataloader.share,
                "seconds_threshold": self.cfg.dataloader.seconds,
                "window_steps": self.cfg.dataloader.window,
                "last_step": state.last_step.get(rank),
            }
            summary = (
                f"Rank {rank} of run {run_id} waits on its data loader for"
                f" {100 * stall.wait_share:.0f}% of step time"
                f" (longest wait {stall.max_wait:.3g}s over the last {self.cfg.dataloader.window} steps)."
            )
            out.append(
                Finding(
                    self.kind,
                    Severity.WARNING,
                    _subject(run_id, rank, info),
                    summary,
                    evidence,
                    window_end=now,
                )
            )
        return out


# -- loss and gradient anomalies --------------------------------------------------------------
@dataclass
class _LossRun:
    monitor: LossMonitor
    ref_rank: int | None = None
    latest_step: int = 0
    # Non-finite values on any rank: kind -> (step seen, anomaly, rank).
    non_finite: tuple[int, LossAnomaly, int] | None = None
    # Latest finite loss of the reference rank, for the loss gauge.
    last_loss: float | None = None


_LOSS_SEVERITY = {
    "non_finite": Severity.CRITICAL,
    "divergence": Severity.CRITICAL,
    "loss_spike": Severity.WARNING,
    "grad_spike": Severity.WARNING,
    "plateau": Severity.INFO,
}


class LossAnomalyDetector(_RunDetector[_LossRun]):
    """``loss_anomaly``: NaN/Inf on any rank at once; spikes, divergence, plateaus on the
    lowest rank that reports a loss (the one frameworks log)."""

    kind = "loss_anomaly"

    def new_run(self, run_id: str) -> _LossRun:
        c = self.cfg.loss
        return _LossRun(
            LossMonitor(
                window=c.window,
                spike_ratio=c.spike_ratio,
                spike_z=c.spike_z,
                smooth=c.smooth,
                divergence_ratio=c.divergence_ratio,
                plateau_steps=c.plateau_steps,
                plateau_tolerance=c.plateau_tolerance,
                hold=c.hold,
                warmup=self.cfg.warmup_steps,
            )
        )

    def consume(self, run_id: str, state: _LossRun, rows: list[Row]) -> None:
        for row in rows:
            loss, grad = _num(row["loss"]), _num(row["grad_norm"])
            if loss is None and grad is None:
                continue
            rank = _rank(row)
            step = int(row["step"]) if row["step"] is not None else state.latest_step + 1
            state.latest_step = max(state.latest_step, step)
            for value in (loss, grad):
                if value is not None and not math.isfinite(value):
                    state.non_finite = (
                        step,
                        LossAnomaly("non_finite", step, row["ts"], value, math.nan, math.inf, 0.0),
                        rank,
                    )
            if state.ref_rank is None or rank < state.ref_rank:
                state.ref_rank = rank
            if rank == state.ref_rank:
                state.monitor.update(step, loss=loss, grad_norm=grad, ts=row["ts"])
                if loss is not None and math.isfinite(loss):
                    state.last_loss = loss

    def report(self, store: Store, now: float, run_id: str, state: _LossRun) -> list[Finding]:
        if state.last_loss is not None:
            self._set("loss", (run_id,), state.last_loss)
        found: dict[str, tuple[LossAnomaly, int | None]] = {
            a.kind: (a, state.ref_rank) for a in state.monitor.current()
        }
        if state.non_finite is not None:
            seen, anomaly, bad_rank = state.non_finite
            if state.latest_step - seen < self.cfg.loss.hold:
                found["non_finite"] = (anomaly, bad_rank)
            else:
                state.non_finite = None
        out = []
        for kind, (a, rank) in found.items():
            evidence = {
                "anomaly": kind,
                "step": a.step,
                "ts": a.ts,
                "value": _finite_or_str(a.value),
                "baseline": _finite_or_str(a.baseline),
                "score": _finite_or_str(a.score),
                "threshold": a.threshold,
                "rank": rank,
            }
            summary = _loss_summary(run_id, a, rank, self.cfg.loss.plateau_steps)
            out.append(
                Finding(
                    self.kind,
                    _LOSS_SEVERITY[kind],
                    _subject(run_id),
                    summary,
                    evidence,
                    key=kind,
                    window_start=a.ts,
                    window_end=now,
                )
            )
        return out


def _loss_summary(run_id: str, a: LossAnomaly, rank: int | None, plateau_steps: int) -> str:
    run = f"Run {run_id}"
    if a.kind == "non_finite":
        return (
            f"{run} produced a non-finite loss or gradient norm ({a.value}) at step {a.step} on rank {rank}."
        )
    if a.kind == "loss_spike":
        return f"{run} loss spiked to {a.value:.4g} (median {a.baseline:.4g}) at step {a.step}."
    if a.kind == "grad_spike":
        return f"{run} gradient norm spiked to {a.value:.4g} (median {a.baseline:.4g}) at step {a.step}."
    if a.kind == "divergence":
        return f"{run} is diverging: smoothed loss {a.value:.4g} is {a.score:.2f}x its best {a.baseline:.4g}."
    gain = f"{100 * a.score:.3f}%"
    return f"{run} loss has plateaued at {a.value:.4g} (improved {gain} over {plateau_steps} steps)."


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)
