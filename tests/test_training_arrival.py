"""Training detectors under realistic arrival: per-rank batch exporters, late nodes, clock
skew, retried and duplicated exports, evaluations every 15 s (the in-process arrival model of
detectors/training/arrival.py, the same one tests/producers/ddp_job.py runs for real)."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from detectors.training import TrainingConfig, build_detectors
from detectors.training.arrival import JobSpec, MemoryStore, replay, trace_rows
from detectors.training.detectors import LossAnomalyDetector, ThroughputDropDetector
from detectors.training.feed import StepAligner, StepFeed
from detectors.training.synthetic import RunSpec, simulate, to_batch
from mlvigil.core.findings import Finding, State
from mlvigil.core.store.duckdb import DuckDBStore
from tests.conftest import SHARED

SPIKE, NAN, STRAGGLER, STALL = 125, 100, 150, 75


def _transients(**kw: Any) -> JobSpec:
    return JobSpec(steps=185, spike_at=SPIKE, nan_at=NAN, straggler_at=STRAGGLER, stall_at=STALL, **kw)


def _one(found: list[Finding], kind: str, key: str = "", rank: str | None = None) -> Finding:
    match = [f for f in found if f.kind == kind and f.key == key and f.subject.get("rank") == rank]
    assert len(match) == 1, (kind, key, rank, [f.summary for f in found])
    return match[0]


@pytest.mark.parametrize(
    ("ranks", "step_time"), [(8, 0.05), (8, 0.25), (8, 1.0), (8, 5.0), (64, 0.05), (64, 5.0)]
)
def test_every_transient_becomes_a_finding_naming_its_first_step(ranks: int, step_time: float) -> None:
    spec = _transients(ranks=ranks, step_time=step_time, seed=ranks + int(step_time * 100))
    result = replay(spec, build_detectors(TrainingConfig()))
    found = result.fired()
    spike = _one(found, "loss_anomaly", "loss_spike")
    assert spike.evidence["began_step"] == spike.evidence["step"] == SPIKE
    assert spike.evidence["peak"] > 5 * spike.evidence["baseline"]
    nan = _one(found, "loss_anomaly", "non_finite")
    assert nan.evidence["step"] == NAN and nan.evidence["rank"] == spec.nan_rank
    assert nan.evidence["value"] == "nan" and nan.severity == "critical"
    straggler = _one(found, "straggler", rank=str(spec.straggler_rank))
    assert STRAGGLER <= straggler.evidence["began_step"] <= STRAGGLER + 2
    assert straggler.evidence["peak_relative_score"] > 1.4
    stall = _one(found, "dataloader_stall", rank=str(spec.stall_rank))
    assert stall.evidence["began_step"] == STALL and stall.evidence["rule"] == "burst"
    # The straggler made every rank wait for ten steps: the run's pace and throughput dipped
    # with it, and only then.
    others = [f for f in found if f not in (spike, nan, straggler, stall)]
    assert all(f.kind in ("training_slowdown", "throughput_drop") for f in others), others
    assert all(STRAGGLER - 5 <= f.evidence["began_step"] < STRAGGLER + 10 for f in others)
    # Every one fired, then resolved on its own: none is left firing.
    assert result.unresolved() == []
    for f in found:
        whats = [what for _, g, what in result.transitions if g.id == f.id and what != "updated"]
        assert whats == ["fired", "resolved"], (f.summary, whats)


def test_clean_runs_with_warmup_checkpoints_jitter_and_late_ranks_fire_nothing() -> None:
    """A slice of the 200-run study in bench.training (which reports the per-detector rates)."""
    fired: Counter[str] = Counter()
    for seed in range(10):
        rng = random.Random(seed)
        spec = JobSpec(ranks=8, step_time=10 ** rng.uniform(-1.3, 0.7), steps=180, seed=5000 + seed)
        for f in replay(spec, build_detectors(TrainingConfig())).fired():
            fired[f.kind] += 1
    assert fired == Counter()


def test_clock_skew_and_retried_duplicate_exports_do_not_change_results() -> None:
    def outcome(**kw: float) -> set[tuple[object, ...]]:
        spec = _transients(ranks=8, step_time=0.2, seed=42, **kw)
        return {
            (f.kind, f.key, f.subject.get("rank"), f.evidence["began_step"], str(f.evidence["peak"]))
            for f in replay(spec, build_detectors(TrainingConfig())).fired()
        }

    calm = outcome(clock_skew=0.0, duplicate_prob=0.0, retry_prob=0.0)
    assert len(calm) >= 4
    # One node's clock two minutes off, a third of the exports stored twice, a fifth retried late.
    assert outcome(clock_skew=120.0, duplicate_prob=0.3, retry_prob=0.2) == calm


def test_ranks_later_than_the_bound_are_left_out_never_summed_short() -> None:
    # Node 1's telemetry starts 90 s late, past the 30 s bound: its ranks' early steps are
    # released incomplete and skipped, later rows for them dropped, and no throughput drop
    # is made of half the ranks.
    spec = JobSpec(ranks=8, step_time=0.25, node_offset=90.0, seed=3, steps=600)
    det = ThroughputDropDetector(TrainingConfig())
    result = replay(spec, [det])
    assert result.fired() == []
    aligner = det.runs[spec.run_id].aligner
    assert aligner.incomplete_steps > 0 and aligner.late_rows > 0
    shift = det.runs[spec.run_id].shift
    assert shift is not None and shift.baseline is not None


def test_expected_world_size_comes_from_the_data_not_from_who_arrived() -> None:
    al = StepAligner(bound=30.0)
    for rank in range(4):  # node 0 only; every row says the world is 8 ranks
        al.add({"step": 1, "rank": rank, "world_size": 8}, now=0.0)
    assert al.ready(now=10.0) == []
    (released,) = al.ready(now=30.0)
    assert released.expected == 8 and not released.complete
    # Without a world_size attribute: one more than the highest rank seen in the run.
    al = StepAligner(bound=30.0)
    al.add({"step": 1, "rank": 5, "world_size": None}, now=0.0)
    al.add({"step": 2, "rank": 0, "world_size": None}, now=0.0)
    assert al.ready(now=1.0) == []


def test_a_restart_rereading_history_does_not_report_an_ended_episode_again() -> None:
    store = MemoryStore()
    spec = JobSpec(ranks=8, step_time=0.25, seed=8, spike_at=120, steps=200)
    first = replay(spec, build_detectors(TrainingConfig()), store=store)
    assert [f.key for f in first.fired()] == ["loss_spike"]
    assert all(f.state == State.RESOLVED for f in store.findings())
    # A new service process: fresh detectors read the last hour again.
    now = max(t for t, _, _ in first.transitions) + 15.0
    again = [f for det in build_detectors(TrainingConfig()) for f in det.evaluate(store, now)]
    assert again == []


@pytest.mark.skipif(not (SHARED / "data" / "alibaba-pai-minibatch").is_dir(), reason="shared data absent")
def test_alibaba_job1_through_the_arrival_model_flags_worker6_once_then_resolves() -> None:
    data = SHARED / "data" / "alibaba-pai-minibatch"
    spec = JobSpec(run_id="job_1", ranks_per_node=5, seed=1, clock_skew=30.0, duplicate_prob=0.1)
    result = replay(
        spec, build_detectors(TrainingConfig()), per_rank=trace_rows(spec, data / "job_1_norm.csv")
    )
    (f,) = result.fired()
    assert f.kind == "straggler" and f.subject["rank"] == "6" and f.state == State.RESOLVED
    # The publishers' episode: worker 6 above 1.15x the median worker ~1860-1970.
    assert 1811 <= f.evidence["began_step"] <= 1941 and 1941 <= f.evidence["last_step"] <= 2050
    spec2 = JobSpec(run_id="job_2", ranks_per_node=5, seed=1, clock_skew=30.0, duplicate_prob=0.1)
    assert (
        replay(
            spec2, build_detectors(TrainingConfig()), per_rank=trace_rows(spec2, data / "job_2_norm.csv")
        ).fired()
        == []
    )


def test_feed_reads_a_rank_first_seen_late_whose_clock_is_behind(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    try:
        spec = RunSpec(world_size=2, steps=100, seed=1)
        rows = simulate(spec)
        feed = StepFeed(history=3600, lookback=30, max_skew=300)
        store.append(to_batch("training_steps", [r for r in rows if r["rank"] == 0]))
        now = rows[-1]["ts"] + 1
        assert {r["rank"] for r in feed.poll(store, now)} == {0}
        # Rank 1's node clock is two minutes behind and its first export comes only now: all
        # its rows are older than rank 0's newest minus the lookback.
        behind = [{**r, "ts": r["ts"] - 120.0} for r in rows if r["rank"] == 1]
        store.append(to_batch("training_steps", behind))
        late = feed.poll(store, now + 5)
        assert sorted(r["step"] for r in late) == list(range(100))
        assert feed.poll(store, now + 10) == []
    finally:
        store.close()


def test_a_reader_that_finds_the_feed_polling_waits_for_the_rows_of_that_pass(tmp_path: Path) -> None:
    """The training detectors share one feed and run concurrently (detectors.workers): a
    reader asking while another reader's poll of the same ``now`` is under way gets that
    poll's rows, not none (before: an empty pass, its rows only at the next evaluation)."""
    import threading

    class SlowStore(DuckDBStore):
        """The real store; its first read waits until the second reader has asked."""

        polling = threading.Event()
        second_asked = threading.Event()

        def query_arrow(self, *args: Any, **kwargs: Any) -> Any:
            self.polling.set()
            self.second_asked.wait(timeout=10)
            return super().query_arrow(*args, **kwargs)

    store = SlowStore(tmp_path)
    try:
        rows = simulate(RunSpec(world_size=2, steps=20, seed=3))
        store.append(to_batch("training_steps", rows))
        feed = StepFeed(history=3600, lookback=30, max_skew=300)
        first, second = feed.subscribe(), feed.subscribe()
        now = rows[-1]["ts"] + 1
        got: dict[str, int] = {}
        poller = threading.Thread(
            target=lambda: got.update(first=sum(t.num_rows for t in first.read(store, now)))
        )
        poller.start()
        assert store.polling.wait(timeout=10)
        reader = threading.Thread(
            target=lambda: got.update(second=sum(t.num_rows for t in second.read(store, now)))
        )
        reader.start()
        # The second reader has asked (it is blocked on the feed, or would have returned).
        reader.join(timeout=0.5)
        store.second_asked.set()
        poller.join(timeout=30)
        reader.join(timeout=30)
        assert got == {"first": len(rows), "second": len(rows)}
    finally:
        store.close()


def test_nan_finding_names_the_first_non_finite_step_whatever_the_arrival_order() -> None:
    rows = simulate(RunSpec(world_size=4, steps=140, seed=6))
    for r in rows:
        if r["step"] >= 100 and r["rank"] in (1, 3):
            r["loss"] = math.nan  # diverged from step 100 on
    store = MemoryStore()
    det = LossAnomalyDetector(TrainingConfig())
    now = rows[-1]["ts"] + 1
    # Rank 1's export of steps 100-119 is retried and lands after everything else.
    delayed = [r for r in rows if r["rank"] == 1 and 100 <= r["step"] < 120]
    store.add_rows(r for r in rows if r not in delayed)
    (first,) = det.evaluate(store, now)
    assert first.evidence["step"] == 100 and first.evidence["rank"] == 3
    store.add_rows(delayed)
    (again,) = det.evaluate(store, now + 15)
    assert again.id == first.id and again.evidence["step"] == 100
    assert again.evidence["observations"] > first.evidence["observations"]
