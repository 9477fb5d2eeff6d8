"""Detector adapters: read ``training_steps`` incrementally, align ranks, feed the pure
scorers step by step, record what they observe as episodes, report Findings.

One adapter per Finding kind. Each keeps per-run state keyed by ``run_id`` and reads only the
rows since its last evaluation (``StepFeed``); ``StepAligner`` releases steps in order once
complete or past the lateness bound (cross-rank statistics use complete steps only); every
anomaly a scorer observes is recorded in the run's ``EpisodeLog`` at once, so a Finding never
depends on whether an evaluation happened to run while the anomaly lasted. Runs idle for
``run_ttl`` are forgotten.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from detectors.training.attribution import attribute
from detectors.training.config import TrainingConfig
from detectors.training.dataloader import StallMonitor
from detectors.training.episodes import Episode, EpisodeLog
from detectors.training.feed import AlignedStep, Row, StepAligner, StepFeed, rows_of
from detectors.training.goodput import GoodputMeter
from detectors.training.loss import POINT_KINDS, TREND_KINDS, LossMonitor
from detectors.training.metrics import TrainingMetrics
from detectors.training.regression import BaselineShift
from detectors.training.robust import RollingMedian, median
from detectors.training.straggler import StragglerScorer
from mlvigil.core.detector import Detector
from mlvigil.core.findings import Finding, Severity
from mlvigil.core.shard import WHOLE, Shard, in_shard, shard_name
from mlvigil.core.store import Store


@dataclass
class RankInfo:
    host: str | None = None
    k8s_pod: str | None = None
    gpu_uuid: str | None = None

    def update(self, row: Row) -> None:
        self.host = row["host"] or self.host
        self.k8s_pod = row["k8s_pod"] or self.k8s_pod
        self.gpu_uuid = row["gpu_uuid"] or self.gpu_uuid


def step_feed(cfg: TrainingConfig) -> StepFeed:
    """The feed of ``training_steps`` rows for ``cfg``'s detectors (shared by those built
    together, see ``build_detectors``)."""
    return StepFeed(history=cfg.history, lookback=cfg.lookback, max_skew=cfg.max_clock_skew)


def _rank(row: Row) -> int:
    return int(row["rank"]) if row["rank"] is not None else 0


def _num(v: Any) -> float | None:
    return float(v) if v is not None else None


def _step_ts(step: AlignedStep) -> float:
    return min(r["ts"] for r in step.rows.values())


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


@dataclass
class _Run:
    """State every adapter keeps per run."""

    aligner: StepAligner
    episodes: EpisodeLog = field(default_factory=EpisodeLog)
    ranks: dict[int, RankInfo] = field(default_factory=dict)
    last_step: int | None = None


S = TypeVar("S", bound=_Run)


class _RunDetector(Detector, Generic[S]):
    kind = ""

    def __init__(
        self,
        cfg: TrainingConfig,
        metrics: TrainingMetrics | None = None,
        name: str | None = None,
        *,
        feed: StepFeed | None = None,
        shard: Shard = WHOLE,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        # This instance runs the runs whose id hashes to its shard (mlvigil.core.shard).
        self.shard = shard
        self.name = name or shard_name(f"training.{self.kind}", shard)
        self.feed = feed or step_feed(cfg)
        self._reader = self.feed.subscribe()
        self.runs: dict[str, S] = {}
        self._last_rows: dict[str, float] = {}

    def close(self) -> None:
        self._reader.close()

    def _take_rows(self, table: pa.Table, now: float) -> None:
        """Feed one polled table to the runs' state, ``chunk_rows`` rows at a time: each run's
        rows in step order (then ts, steps without a number first), and after each chunk the
        steps already complete go on to the scorers, so what one evaluation holds as Python
        objects is bounded by the chunk and the steps still waiting for ranks, not by how
        much it read."""
        run_col = table.column("run_id")
        chunk = self.feed.chunk_rows
        for run_id in pc.unique(run_col).to_pylist():
            if not in_shard(run_id, self.shard):
                continue  # another instance's run
            rows_t = table.filter(pc.equal(run_col, run_id))
            order = pc.sort_indices(
                rows_t, sort_keys=[("step", "ascending"), ("ts", "ascending")], null_placement="at_start"
            )
            rows_t = rows_t.take(order)
            state = self.runs.get(run_id)
            if state is None:
                state = self.runs[run_id] = self.new_run(run_id)
            for lo in range(0, rows_t.num_rows, chunk):
                for row in rows_of(rows_t.slice(lo, chunk)):
                    state.ranks.setdefault(_rank(row), RankInfo()).update(row)
                    self.arrived(run_id, state, row)
                    state.aligner.add(row, now)
                if lo + chunk < rows_t.num_rows:
                    self._release(run_id, state, state.aligner.ready(now, settled_only=True))
            self._last_rows[run_id] = now

    def _release(self, run_id: str, state: S, steps: list[AlignedStep]) -> None:
        if steps:
            state.last_step = steps[-1].step
            self.consume(run_id, state, steps)

    def evaluate(self, store: Store, now: float) -> Sequence[Finding]:
        for table in self._reader.read(store, now):
            self._take_rows(table, now)
        for run_id, seen in list(self._last_rows.items()):
            if now - seen > self.cfg.run_ttl:
                del self._last_rows[run_id]
                self.runs.pop(run_id, None)
                if self.metrics:
                    self.metrics.forget(run_id)
        out: list[Finding] = []
        for run_id, state in self.runs.items():
            # Also runs without new rows: their waiting steps pass the lateness bound.
            self._release(run_id, state, state.aligner.ready(now))
            out.extend(self._deliver(store, now, run_id, state))
        return out

    def _deliver(self, store: Store, now: float, run_id: str, state: S) -> list[Finding]:
        out = []
        for ep in state.episodes.pending():
            f = self.finding(store, now, run_id, state, ep)
            if not ep.reported and not ep.open and _already_stored(store, f, ep):
                continue  # re-read after a restart: reported before
            out.append(f)
        state.episodes.mark_reported()
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

    def _aligned(self, state: S) -> dict[str, Any]:
        return {
            "incomplete_steps": state.aligner.incomplete_steps,
            "late_rows": state.aligner.late_rows,
            "lateness_bound_s": self.cfg.lookback,
        }

    def arrived(self, run_id: str, state: S, row: Row) -> None:
        """Sees every new row as it arrives, before alignment."""

    @abstractmethod
    def new_run(self, run_id: str) -> S: ...

    @abstractmethod
    def consume(self, run_id: str, state: S, steps: list[AlignedStep]) -> None:
        """Feed released steps, in step order, to the scorers; record episodes."""

    @abstractmethod
    def finding(self, store: Store, now: float, run_id: str, state: S, ep: Episode) -> Finding: ...


def _already_stored(store: Store, f: Finding, ep: Episode) -> bool:
    stored = store.findings(kind=f.kind, subject=f.subject, limit=50)
    return any(g.id == f.id and g.evidence.get("began_step") == ep.began_step for g in stored)


def _window_end(ep: Episode, now: float) -> float | None:
    return now if ep.open else ep.last_ts


# -- step-time regression and goodput ---------------------------------------------------------
@dataclass
class _SlowdownRun(_Run):
    shift: BaselineShift | None = None
    goodput: GoodputMeter = field(default_factory=GoodputMeter)
    rank_times: dict[int, RollingMedian] = field(default_factory=dict)
    rank_compute: dict[int, RollingMedian] = field(default_factory=dict)


class SlowdownDetector(_RunDetector[_SlowdownRun]):
    """``training_slowdown``: the run's step time regressed from its ideal (post-warm-up) level.

    The run's step time at a complete step is the median over ranks of step time minus
    checkpointing (in synchronous training every rank waits for the slowest, so the median
    is the job's pace and is robust to one rank's clock). Also keeps goodput and per-rank
    step-time gauges.
    """

    kind = "training_slowdown"

    def new_run(self, run_id: str) -> _SlowdownRun:
        c = self.cfg
        return _SlowdownRun(
            StepAligner(c.lookback),
            shift=BaselineShift(
                direction="increase",
                min_shift=c.slowdown.min_slowdown,
                warmup=c.warmup_steps,
                baseline_samples=c.baseline_steps,
                window=c.window,
                h=c.slowdown.cusum_h,
            ),
        )

    def arrived(self, run_id: str, state: _SlowdownRun, row: Row) -> None:
        st = _num(row["step_time_s"])
        if st is None or not st >= 0:
            return
        rank = _rank(row)
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

    def consume(self, run_id: str, state: _SlowdownRun, steps: list[AlignedStep]) -> None:
        shift_det = state.shift
        assert shift_det is not None
        for a in steps:
            if not a.complete:
                continue
            times = [
                float(r["step_time_s"]) - (_num(r["checkpoint_s"]) or 0.0)
                for r in a.rows.values()
                if r["step_time_s"] is not None
            ]
            if not times:
                continue
            ts = _step_ts(a)
            shift = shift_det.update(median(times), step=a.step, ts=ts)
            if shift is not None:
                state.episodes.observe(
                    "",
                    step=a.step,
                    ts=ts,
                    value=shift.ratio,
                    began=(shift.began_step, shift.began_ts),
                    detail={"baseline": shift.baseline, "current": shift.current, "cusum": shift.cusum},
                )
            else:
                state.episodes.close("", step=a.step, ts=ts)
        for rank, rm in state.rank_times.items():
            self._set("step_time", (run_id, str(rank)), rm.value)
        self._set("goodput", (run_id,), state.goodput.ratio)
        for cat, secs in state.goodput.breakdown().items():
            self._set("badput", (run_id, cat), secs)
        if shift_det.baseline is not None:
            self._set("ideal_step_time", (run_id,), shift_det.baseline)
            self._set("slowdown", (run_id,), shift_det.recent.value / shift_det.baseline)

    def finding(self, store: Store, now: float, run_id: str, state: _SlowdownRun, ep: Episode) -> Finding:
        # The ranks computing slowest now are the first suspects.
        compute = {r: rm.value for r, rm in state.rank_compute.items() if len(rm)}
        ref = median(compute.values()) if compute else 0.0
        slow = sorted(compute, key=lambda r: -compute[r])[:3]
        suspects = [
            r for r in slow if ref > 0 and compute[r] >= (1 + self.cfg.slowdown.min_slowdown / 2) * ref
        ]
        checked = [state.ranks[r] for r in (suspects or list(state.ranks)) if r in state.ranks][:256]
        baseline, current = ep.detail["baseline"], ep.detail["current"]
        ratio = current / baseline if baseline else 1.0
        evidence: dict[str, Any] = {
            "ideal_step_time_s": baseline,
            "current_step_time_s": current,
            "slowdown_pct": round(100 * (ratio - 1), 2),
            "peak_slowdown_pct": round(100 * (ep.peak - 1), 2),
            "cusum": ep.detail["cusum"],
            "threshold_pct": 100 * self.cfg.slowdown.min_slowdown,
            "goodput_ratio": state.goodput.ratio,
            "time_s": state.goodput.breakdown(),
            "slowest_ranks": [
                {"rank": r, "compute_s": compute[r], "relative": compute[r] / ref if ref else None}
                for r in slow
            ],
            **ep.evidence(),
            **self._aligned(state),
        }
        evidence.update(self._attribute(store, checked, ep.began_ts, now))
        began = f" since step {ep.began_step}" if ep.began_step is not None else ""
        ended = "" if ep.open else f" until step {ep.last_step}"
        summary = (
            f"Run {run_id} steps took {current:.3g}s, {100 * (ratio - 1):.0f}% over its ideal"
            f" {baseline:.3g}s{began}{ended}; {evidence.get('suspected_cause', 'cause not attributed')}."
        )
        sev = Severity.CRITICAL if ep.peak >= 1.5 else Severity.WARNING
        return Finding(
            self.kind,
            sev,
            _subject(run_id),
            summary,
            evidence,
            window_start=ep.began_ts,
            window_end=_window_end(ep, now),
        )


# -- stragglers -------------------------------------------------------------------------------
@dataclass
class _StragglerRun(_Run):
    scorer: StragglerScorer | None = None


class StragglerDetector(_RunDetector[_StragglerRun]):
    """``straggler``: one rank computes clearly and durably slower than its peers."""

    kind = "straggler"

    def new_run(self, run_id: str) -> _StragglerRun:
        c = self.cfg.straggler
        return _StragglerRun(
            StepAligner(self.cfg.lookback),
            scorer=StragglerScorer(
                window=c.window,
                min_excess=c.min_excess,
                z=c.z,
                sustain=c.sustain,
                max_relative=c.max_relative,
                resolve_excess=c.resolve_excess,
            ),
        )

    def consume(self, run_id: str, state: _StragglerRun, steps: list[AlignedStep]) -> None:
        scorer = state.scorer
        assert scorer is not None
        scores = {}
        for a in steps:
            if not a.complete:
                continue
            compute: dict[int, float] = {}
            for rank, r in a.rows.items():
                st = _num(r["step_time_s"])
                if st is None:
                    continue
                comm = _num(r["comm_s"]) if self.cfg.straggler.exclude_comm else None
                compute[rank] = st - comm if comm is not None and comm < st else st
            ts = _step_ts(a)
            scores = scorer.update(a.step, compute, ts)
            for rank, sc in scores.items():
                key = str(rank)
                if sc.flagged:
                    state.episodes.observe(
                        key,
                        step=a.step,
                        ts=ts,
                        value=sc.relative,
                        began=(sc.since_step, sc.since_ts),
                        detail={
                            "individual_score": sc.individual,
                            "threshold": sc.threshold,
                            "usual_relative_score": sc.reference,
                            "compute_s": sc.compute,
                        },
                    )
                elif state.episodes.is_open(key):
                    state.episodes.close(key, step=a.step, ts=ts)
        for rank, sc in scores.items():
            self._set("straggler", (run_id, str(rank), "relative"), sc.relative)
            self._set("straggler", (run_id, str(rank), "individual"), sc.individual)

    def finding(self, store: Store, now: float, run_id: str, state: _StragglerRun, ep: Episode) -> Finding:
        rank = int(ep.key)
        info = state.ranks.get(rank, RankInfo())
        assert state.scorer is not None
        current = state.scorer.ranks[rank].score if rank in state.scorer.ranks else None
        evidence: dict[str, Any] = {
            "relative_score": current.relative if current is not None else ep.peak,
            "peak_relative_score": ep.peak,
            **ep.detail,
            "since_step": ep.began_step,
            "since_ts": ep.began_ts,
            "window_steps": self.cfg.straggler.window,
            "sustain_steps": self.cfg.straggler.sustain,
            "comm_excluded": self.cfg.straggler.exclude_comm,
            "k8s_pod": info.k8s_pod,
            **ep.evidence(),
            **self._aligned(state),
        }
        evidence.update(self._attribute(store, [info], ep.began_ts, now))
        where = ", ".join(x for x in (info.host, info.gpu_uuid) if x)
        ended = "" if ep.open else f" until step {ep.last_step}"
        summary = (
            f"Rank {rank} of run {run_id} computed up to {100 * (ep.peak - 1):.0f}% slower than"
            f" the median rank since step {ep.began_step}{ended}"
            + (f" ({where})" if where else "")
            + f"; {evidence.get('suspected_cause', 'cause not attributed')}."
        )
        sev = Severity.CRITICAL if ep.peak >= self.cfg.straggler.max_relative else Severity.WARNING
        return Finding(
            self.kind,
            sev,
            _subject(run_id, rank, info),
            summary,
            evidence,
            window_start=ep.began_ts,
            window_end=_window_end(ep, now),
        )


# -- throughput -------------------------------------------------------------------------------
@dataclass
class _ThroughputRun(_Run):
    shift: BaselineShift | None = None
    unit: str | None = None


class ThroughputDropDetector(_RunDetector[_ThroughputRun]):
    """``throughput_drop``: the run's tokens (else samples) per second fell from its baseline.

    Per complete step: the sum over ranks of tokens (or samples) over the median rank step
    time. A step missing ranks past the lateness bound is skipped, never summed short.
    """

    kind = "throughput_drop"

    def new_run(self, run_id: str) -> _ThroughputRun:
        c = self.cfg
        return _ThroughputRun(
            StepAligner(c.lookback),
            shift=BaselineShift(
                direction="decrease",
                min_shift=c.throughput.min_drop / (1 - c.throughput.min_drop),
                warmup=c.warmup_steps,
                baseline_samples=c.baseline_steps,
                window=c.window,
            ),
        )

    def arrived(self, run_id: str, state: _ThroughputRun, row: Row) -> None:
        if state.unit is None:
            state.unit = (
                "tokens" if row["tokens"] is not None else ("samples" if row["samples"] is not None else None)
            )

    def consume(self, run_id: str, state: _ThroughputRun, steps: list[AlignedStep]) -> None:
        shift_det = state.shift
        assert shift_det is not None
        for a in steps:
            if state.unit is None or not a.complete:
                continue
            work = sum(float(r[state.unit]) for r in a.rows.values() if r[state.unit] is not None)
            times = [float(r["step_time_s"]) for r in a.rows.values() if r["step_time_s"]]
            if not times or work <= 0:
                continue
            ts = _step_ts(a)
            shift = shift_det.update(work / median(times), step=a.step, ts=ts)
            if shift is not None:
                state.episodes.observe(
                    "",
                    step=a.step,
                    ts=ts,
                    value=1 - shift.ratio,
                    began=(shift.began_step, shift.began_ts),
                    detail={"baseline": shift.baseline, "current": shift.current},
                )
            else:
                state.episodes.close("", step=a.step, ts=ts)
        if state.unit and len(shift_det.recent):
            self._set("throughput", (run_id, state.unit), shift_det.recent.value)

    def finding(self, store: Store, now: float, run_id: str, state: _ThroughputRun, ep: Episode) -> Finding:
        baseline, current = ep.detail["baseline"], ep.detail["current"]
        drop = 1 - current / baseline if baseline else 0.0
        evidence = {
            "unit": f"{state.unit}/s",
            "baseline_per_s": baseline,
            "current_per_s": current,
            "drop_pct": round(100 * drop, 2),
            "peak_drop_pct": round(100 * ep.peak, 2),
            "threshold_pct": 100 * self.cfg.throughput.min_drop,
            **ep.evidence(),
            **self._aligned(state),
        }
        ended = "" if ep.open else f" until step {ep.last_step}"
        summary = (
            f"Run {run_id} throughput fell {100 * drop:.0f}% to {current:.4g} {state.unit}/s"
            f" from {baseline:.4g} since step {ep.began_step}{ended}."
        )
        sev = Severity.CRITICAL if ep.peak >= 0.5 else Severity.WARNING
        return Finding(
            self.kind,
            sev,
            _subject(run_id),
            summary,
            evidence,
            window_start=ep.began_ts,
            window_end=_window_end(ep, now),
        )


# -- data-loader stalls -----------------------------------------------------------------------
@dataclass
class _StallRun(_Run):
    monitors: dict[int, StallMonitor] = field(default_factory=dict)


class DataloaderStallDetector(_RunDetector[_StallRun]):
    """``dataloader_stall``: a rank's steps wait on input for a large share of their time.

    Per rank, so steps missing other ranks are still used."""

    kind = "dataloader_stall"

    def new_run(self, run_id: str) -> _StallRun:
        return _StallRun(StepAligner(self.cfg.lookback))

    def consume(self, run_id: str, state: _StallRun, steps: list[AlignedStep]) -> None:
        c = self.cfg.dataloader
        touched = set()
        for a in steps:
            for rank, row in a.rows.items():
                st = _num(row["step_time_s"])
                if st is None:
                    continue
                mon = state.monitors.get(rank)
                if mon is None:
                    mon = state.monitors[rank] = StallMonitor(
                        window=c.window,
                        share=c.share,
                        seconds=c.seconds,
                        burst_steps=c.burst_steps,
                        burst_share=c.burst_share,
                        warmup=self.cfg.warmup_steps,
                    )
                stall = mon.update(
                    step_time=st, data_wait=_num(row["data_wait_s"]), step=a.step, ts=row["ts"]
                )
                key = str(rank)
                if stall is not None:
                    state.episodes.observe(
                        key,
                        step=a.step,
                        ts=row["ts"],
                        value=stall.wait_share,
                        began=(stall.began_step, stall.began_ts),
                        detail={"longest_wait_s": stall.max_wait, "rule": stall.reason},
                    )
                elif state.episodes.is_open(key):
                    state.episodes.close(key, step=a.step, ts=row["ts"])
                touched.add(rank)
        for rank in touched:
            mon = state.monitors[rank]
            self._set("data_wait", (run_id, str(rank)), mon.share_now)

    def finding(self, store: Store, now: float, run_id: str, state: _StallRun, ep: Episode) -> Finding:
        rank = int(ep.key)
        info = state.ranks.get(rank, RankInfo())
        c = self.cfg.dataloader
        evidence = {
            "data_wait_share": ep.peak,
            "longest_wait_s": ep.detail.get("longest_wait_s"),
            "rule": ep.detail.get("rule"),
            "share_threshold": c.share,
            "seconds_threshold": c.seconds,
            "burst_steps": c.burst_steps,
            "burst_share": c.burst_share,
            "window_steps": c.window,
            **ep.evidence(),
        }
        ended = "" if ep.open else f" until step {ep.last_step}"
        summary = (
            f"Rank {rank} of run {run_id} waited on its data loader for up to"
            f" {100 * ep.peak:.0f}% of step time since step {ep.began_step}{ended}"
            f" (rule {ep.detail.get('rule')}, longest wait {ep.detail.get('longest_wait_s', 0.0):.3g}s)."
        )
        return Finding(
            self.kind,
            Severity.WARNING,
            _subject(run_id, rank, info),
            summary,
            evidence,
            window_start=ep.began_ts,
            window_end=_window_end(ep, now),
        )


# -- loss and gradient anomalies --------------------------------------------------------------
@dataclass
class _LossRun(_Run):
    monitor: LossMonitor | None = None
    # Highest step released to the monitor, to end point episodes ``hold`` steps later.
    progress: int = -1
    last_loss: float | None = None


_LOSS_SEVERITY = {
    "non_finite": Severity.CRITICAL,
    "divergence": Severity.CRITICAL,
    "loss_spike": Severity.WARNING,
    "grad_spike": Severity.WARNING,
    "plateau": Severity.INFO,
}


class LossAnomalyDetector(_RunDetector[_LossRun]):
    """``loss_anomaly``: NaN/Inf on any rank as soon as its row arrives (the episode names
    the first non-finite step); spikes, divergence, plateaus on the lowest rank that reports
    a loss at each step (the one frameworks log)."""

    kind = "loss_anomaly"

    def new_run(self, run_id: str) -> _LossRun:
        c = self.cfg.loss
        return _LossRun(
            StepAligner(self.cfg.lookback),
            monitor=LossMonitor(
                window=c.window,
                spike_ratio=c.spike_ratio,
                spike_z=c.spike_z,
                smooth=c.smooth,
                divergence_ratio=c.divergence_ratio,
                plateau_steps=c.plateau_steps,
                plateau_tolerance=c.plateau_tolerance,
                warmup=self.cfg.warmup_steps,
            ),
        )

    def arrived(self, run_id: str, state: _LossRun, row: Row) -> None:
        for value in (_num(row["loss"]), _num(row["grad_norm"])):
            if value is not None and not math.isfinite(value) and row["step"] is not None:
                step = int(row["step"])
                # The "peak" is the earliest step (lowest is worst), so the evidence names the
                # first non-finite step and its rank whatever order rows arrive in.
                state.episodes.observe(
                    "non_finite",
                    step=step,
                    ts=row["ts"],
                    value=float(step),
                    higher_is_worse=False,
                    detail={"value": str(value), "rank": _rank(row), "ts": row["ts"]},
                )
                return

    def consume(self, run_id: str, state: _LossRun, steps: list[AlignedStep]) -> None:
        mon = state.monitor
        assert mon is not None
        hold = self.cfg.loss.hold
        for a in steps:
            state.progress = max(state.progress, a.step)
            for kind in POINT_KINDS:
                ep = state.episodes.episodes.get(kind)
                if ep is not None and ep.open and ep.last_step is not None and a.step - ep.last_step >= hold:
                    state.episodes.close(kind, step=a.step, ts=_step_ts(a))
            ranks = [
                r
                for r in sorted(a.rows)
                if a.rows[r]["loss"] is not None or a.rows[r]["grad_norm"] is not None
            ]
            if not ranks:
                continue
            rank = ranks[0]
            row = a.rows[rank]
            loss, grad = _num(row["loss"]), _num(row["grad_norm"])
            observed = {x.kind: x for x in mon.update(a.step, loss=loss, grad_norm=grad, ts=row["ts"])}
            for kind, x in observed.items():
                if kind == "non_finite":
                    continue  # recorded on arrival, from every rank
                state.episodes.observe(
                    kind,
                    step=a.step,
                    ts=row["ts"],
                    value=x.value,
                    detail={
                        "value": x.value,
                        "baseline": x.baseline,
                        "score": x.score,
                        "threshold": x.threshold,
                        "rank": rank,
                        "ts": row["ts"],
                    },
                )
            if loss is not None and math.isfinite(loss):
                state.last_loss = loss
                if mon.trends_evaluated:
                    for kind in TREND_KINDS:
                        if kind not in observed and state.episodes.is_open(kind):
                            state.episodes.close(kind, step=a.step, ts=row["ts"])
        # The loss gauge follows the run whether or not an episode is open.
        if state.last_loss is not None:
            self._set("loss", (run_id,), state.last_loss)

    def finding(self, store: Store, now: float, run_id: str, state: _LossRun, ep: Episode) -> Finding:
        kind = ep.key
        d = ep.detail
        first = ep.peak_step if kind == "non_finite" else ep.began_step
        evidence = {
            "anomaly": kind,
            "step": first,
            "ts": d.get("ts") if kind == "non_finite" else ep.began_ts,
            "value": _finite_or_str(d["value"]) if isinstance(d.get("value"), float) else d.get("value"),
            "baseline": _finite_or_str(d.get("baseline", math.nan)),
            "score": _finite_or_str(d.get("score", math.inf)),
            "threshold": d.get("threshold", 0.0),
            "rank": d.get("rank"),
            **ep.evidence(),
        }
        if kind == "non_finite":
            evidence["peak"] = d.get("value")
            evidence["peak_step"] = first
        summary = _loss_summary(run_id, kind, evidence, ep, self.cfg.loss.plateau_steps)
        return Finding(
            self.kind,
            _LOSS_SEVERITY[kind],
            _subject(run_id),
            summary,
            evidence,
            key=kind,
            window_start=ep.began_ts,
            window_end=_window_end(ep, now),
        )


def _loss_summary(run_id: str, kind: str, ev: dict[str, Any], ep: Episode, plateau_steps: int) -> str:
    run = f"Run {run_id}"
    more = f" ({ep.observations} steps affected, last at step {ep.last_step})" if ep.observations > 1 else ""
    if kind == "non_finite":
        return (
            f"{run} produced a non-finite loss or gradient norm ({ev['value']}) first at step"
            f" {ev['step']} on rank {ev['rank']}{more}."
        )
    if kind == "loss_spike":
        return (
            f"{run} loss spiked to {ep.peak:.4g} (median {ev['baseline']:.4g}) at step {ep.began_step}{more}."
        )
    if kind == "grad_spike":
        return (
            f"{run} gradient norm spiked to {ep.peak:.4g} (median {ev['baseline']:.4g}) at step"
            f" {ep.began_step}{more}."
        )
    if kind == "divergence":
        return (
            f"{run} diverged from step {ep.began_step}: smoothed loss up to {ep.peak:.4g},"
            f" {ev['score']:.2f}x its best {ev['baseline']:.4g}."
        )
    return (
        f"{run} loss has plateaued at {ev['value']:.4g} over {plateau_steps} steps"
        f" since step {ep.began_step}."
    )


def _finite_or_str(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)
