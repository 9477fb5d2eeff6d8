"""``detectors.training``: configuration of the training-degradation detectors."""

from __future__ import annotations

from pydantic import Field

from mlvigil.core.config import Duration, Strict


class SlowdownConfig(Strict):
    enabled: bool = True
    # Smallest step-time regression reported, relative to the post-warm-up ideal (0.10 = 10 %).
    min_slowdown: float = Field(default=0.10, gt=0)
    # CUSUM threshold in robust standard deviations of the baseline's log step time.
    cusum_h: float = Field(default=5.0, gt=0)


class StragglerConfig(Strict):
    enabled: bool = True
    # Steps each rank's rolling median compute time is taken over.
    window: int = Field(default=10, ge=3)
    # Smallest excess over the median rank that is flagged (0.10: 10 % slower).
    min_excess: float = Field(default=0.10, gt=0)
    # Robust standard deviations of the rank's own relative-score history to exceed.
    z: float = Field(default=4.0, gt=0)
    # Consecutive steps the excess must hold before a rank is flagged.
    sustain: int = Field(default=5, ge=1)
    # Relative score flagged outright, whatever the rank's history.
    max_relative: float = Field(default=1.5, gt=1)
    # A flagged rank clears when its excess falls under this.
    resolve_excess: float = Field(default=0.05, ge=0)
    # Subtract reported communication time (mlvigil.train.comm_seconds) from step time.
    exclude_comm: bool = True


class ThroughputConfig(Strict):
    enabled: bool = True
    # Smallest throughput drop reported, relative to the post-warm-up baseline (0.10 = 10 %).
    min_drop: float = Field(default=0.10, gt=0, lt=1)


class DataloaderConfig(Strict):
    enabled: bool = True
    # Median share of step time spent waiting for data that is a stall.
    share: float = Field(default=0.3, gt=0, le=1)
    # A single data wait this long is a stall on its own.
    seconds: Duration = 30.0
    window: int = Field(default=10, ge=1)
    # Consecutive steps each waiting at least burst_share of their time: a short stall
    # (0 disables). Not applied to a rank's first warmup_steps steps.
    burst_steps: int = Field(default=3, ge=0)
    burst_share: float = Field(default=0.5, gt=0, le=1)


class LossConfig(Strict):
    enabled: bool = True
    # Rolling window (steps) for spike baselines.
    window: int = Field(default=50, ge=4)
    spike_ratio: float = Field(default=1.5, gt=1)
    spike_z: float = Field(default=6.0, gt=0)
    # Rolling-median smoothing (steps) for divergence and plateaus.
    smooth: int = Field(default=20, ge=1)
    divergence_ratio: float = Field(default=1.5, gt=1)
    # Steps without improvement beyond plateau_tolerance that make a plateau; 0 disables.
    plateau_steps: int = Field(default=0, ge=0)
    plateau_tolerance: float = Field(default=0.001, ge=0)
    # A spike or non-finite episode ends this many steps after its last occurrence; a
    # recurrence within them extends it. (Findings never depend on this: an episode is
    # recorded when observed and reported at the next evaluation even after it ended.)
    hold: int = Field(default=20, ge=1)


class AttributionConfig(Strict):
    enabled: bool = True
    # SM clock below this share of its maximum (while training) is a clock under max.
    clock_ratio: float = Field(default=0.9, gt=0, le=1)
    # Extra time before the degradation began that is searched for GPU signals and findings
    # (tolerates clock skew between trainer hosts and GPU agents).
    margin: Duration = 15.0


class TrainingConfig(Strict):
    """Detectors of silent training degradation (step-time regressions, stragglers,
    throughput drops, data-loader stalls, loss anomalies) over ``training_steps``."""

    enabled: bool = True
    # How far back the first evaluation after a start reads steps.
    history: Duration = 3600.0
    # The lateness bound. Each evaluation re-reads this much before the newest row of the
    # slowest-clocked active rank (a row later than that on its own node's clock is missed),
    # and a step waits this long (service time) after its first row for its missing ranks
    # before it is released incomplete, excluded from cross-rank statistics. The OTel SDK's
    # batch processor exports every 5 s by default, so 30 s also covers a retry or two.
    lookback: Duration = 30.0
    # Most a node's clock may be behind the others' and still have its late rows re-read.
    max_clock_skew: Duration = 300.0
    # Each detector runs as this many instances, each over the runs whose id hashes to it
    # (``training.straggler[2/8]``). On replicas sharing PostgreSQL each instance is a lease
    # of its own, so the runs spread over the replicas (docs/scale-out.md); 1 on one node.
    shards: int = Field(default=1, ge=1, le=256)
    # Runs with no new step for this long are forgotten (state, metrics).
    run_ttl: Duration = 3600.0
    # Steps skipped at the start of a run (compilation, warm caches) before baselines.
    warmup_steps: int = Field(default=20, ge=0)
    # Steps the post-warm-up baseline ("ideal step time") is taken over.
    baseline_steps: int = Field(default=50, ge=5)
    # Rolling window (steps) whose median must confirm a regression or drop: at least half of
    # it must be slow, so bursts of outliers (GC pauses on some rank) are not a regression.
    window: int = Field(default=20, ge=3)
    slowdown: SlowdownConfig = Field(default_factory=SlowdownConfig)
    straggler: StragglerConfig = Field(default_factory=StragglerConfig)
    throughput: ThroughputConfig = Field(default_factory=ThroughputConfig)
    dataloader: DataloaderConfig = Field(default_factory=DataloaderConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    attribution: AttributionConfig = Field(default_factory=AttributionConfig)
