"""Straggler scores: how much slower one rank computes than its peers and than itself.

For every rank the rolling median of its compute time (step time minus communication,
where reported: in synchronous training the fast ranks spend the straggler's delay waiting
in the collective, so total step times are all alike) over the last ``window`` steps gives

- the *relative* score: rank median / median of all ranks' medians (1.0 = typical), and
- the *individual* score: rank median / the rank's own best median so far.

A rank is a straggler when its relative score rises clearly above its *own* usual level,
``max(1 + min_excess, c + max(min_excess, z * s))`` with ``c``, ``s`` the median and MAD of
its past relative scores, for ``sustain`` consecutive steps, or when its relative score
exceeds ``max_relative`` outright. The per-rank reference absorbs stable differences
between workers (heterogeneous hosts), so the threshold tracks each rank's own noise;
it is frozen while the rank exceeds it. The flag clears once the relative score falls back
within ``resolve_excess`` of 1 or of the rank's usual level.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from detectors.training.robust import RollingMedian, median, median_mad


@dataclass
class RankScore:
    """Scores of one rank after its latest step."""

    rank: int
    relative: float
    individual: float
    compute: float
    reference: float
    threshold: float
    flagged: bool
    since_step: int | None
    since_ts: float | None
    peak_relative: float


@dataclass
class _Rank:
    times: RollingMedian
    history: deque[float]
    samples: int = 0
    best: float = float("inf")
    run: int = 0
    run_start: tuple[int | None, float | None] = (None, None)
    flagged: bool = False
    since: tuple[int | None, float | None] = (None, None)
    peak: float = 0.0
    score: RankScore | None = field(default=None)
    # Cached median and MAD of ``history``, refreshed every few appended scores.
    ref: tuple[float, float] | None = None
    appended: int = 0
    # Latest raw (step, ts, compute) values, to date a flagged slowdown to its first slow step.
    raw: deque[tuple[int, float | None, float]] = field(default_factory=lambda: deque(maxlen=64))


class StragglerScorer:
    """Per-rank relative and individual straggler scores with a sustained-excess flag.

    Parameters
    ----------
    window
        Steps each rank's rolling median is taken over.
    min_excess
        Smallest relative excess flagged (0.10: 10 % slower than the median rank).
    z
        Robust standard deviations of the rank's own relative-score history to exceed.
    sustain
        Consecutive steps the excess must hold before the rank is flagged.
    history
        Past relative scores kept per rank for its reference level and spread.
    max_relative
        Relative score flagged without a history (a rank slow from the start).
    resolve_excess
        Excess under which a flagged rank is cleared.
    min_ranks
        Ranks with a full window needed before anything is scored.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> scorer = StragglerScorer(window=10, sustain=5)
    >>> for step in range(200):
    ...     slow = 1.3 if step >= 120 else 1.0
    ...     times = {r: (slow if r == 3 else 1.0) * rng.gauss(1.0, 0.03) for r in range(8)}
    ...     scores = scorer.update(step, times)
    >>> sorted(r for r, s in scores.items() if s.flagged)
    [3]
    >>> round(scores[3].relative, 1), scores[3].since_step in range(120, 135)
    (1.3, True)

    References
    ----------
    Jiang et al., "MegaScale: Scaling Large Language Model Training to More Than 10,000
    GPUs", NSDI 2024; Wu et al., "Falcon: Pinpointing and Mitigating Stragglers for
    Large-Scale Hybrid-Parallel Training", 2024; Yao et al., "Holmes: Localizing
    Irregularities in LLM Training with Mega-scale GPU Clusters", NSDI 2025.
    """

    def __init__(
        self,
        *,
        window: int = 10,
        min_excess: float = 0.10,
        z: float = 4.0,
        sustain: int = 5,
        history: int = 300,
        max_relative: float = 1.5,
        resolve_excess: float = 0.05,
        min_ranks: int = 2,
    ) -> None:
        self.window = window
        self.min_excess = min_excess
        self.z = z
        self.sustain = sustain
        self.history = history
        self.max_relative = max_relative
        self.resolve_excess = resolve_excess
        self.min_ranks = min_ranks
        self.ranks: dict[int, _Rank] = {}

    def update(self, step: int, compute: dict[int, float], ts: float | None = None) -> dict[int, RankScore]:
        """Add one step's compute time per rank; returns the current score of every scored rank."""
        for rank, value in compute.items():
            if not value > 0.0 or value == float("inf"):
                continue
            st = self.ranks.get(rank)
            if st is None:
                st = self.ranks[rank] = _Rank(RollingMedian(self.window), deque(maxlen=self.history))
            st.times.update(value)
            st.raw.append((step, ts, value))
            st.samples += 1
            if st.times.full:
                st.best = min(st.best, st.times.value)
        full = [st.times.value for st in self.ranks.values() if st.times.full]
        if len(full) < self.min_ranks:
            return {}
        ref = median(full)
        for rank in compute:
            st = self.ranks.get(rank)
            if st is None or not st.times.full or ref <= 0.0:
                continue
            self._score(rank, st, ref, step, ts)
        return {r: st.score for r, st in self.ranks.items() if st.score is not None}

    def _onset(
        self, st: _Rank, ref: float, usual: float, rel: float, start: tuple[int | None, float | None]
    ) -> tuple[int | None, float | None]:
        """First slow step: the rolling median crosses up to half a window after the onset,
        so walk back from that crossing over the raw steps above halfway between the rank's
        usual level and its score, tolerating single fast steps (jitter)."""
        if start[0] is None:
            return start
        cut = ref * (usual + (rel - usual) / 2)
        onset = start
        fast = 0
        for step, ts, value in reversed(st.raw):
            if step > start[0]:
                continue
            if start[0] - step > self.window:
                break
            if value >= cut:
                fast = 0
                if onset[0] is None or step < onset[0]:
                    onset = (step, ts)
            else:
                fast += 1
                if fast >= 2:
                    break
        return onset

    def _score(self, rank: int, st: _Rank, ref: float, step: int, ts: float | None) -> None:
        med = st.times.value
        rel = med / ref
        ind = med / st.best if st.best > 0 else 1.0
        if len(st.history) >= 2 * self.window:
            # The reference moves slowly (hundreds of scores): refreshing it every few
            # appends keeps a step O(ranks) instead of O(ranks x history).
            if st.ref is None or st.appended >= max(1, self.window // 2):
                st.ref = median_mad(st.history)
                st.appended = 0
            c, s = st.ref
            threshold = max(1.0 + self.min_excess, c + max(self.min_excess, self.z * s))
        else:
            c = 1.0
            threshold = self.max_relative
        exceeding = rel >= threshold or rel >= self.max_relative
        if st.flagged:
            if rel < 1.0 + self.resolve_excess or rel < c + self.resolve_excess:
                st.flagged = False
                st.run = 0
                st.peak = 0.0
        elif exceeding:
            if st.run == 0:
                st.run_start = (step, ts)
            st.run += 1
            if st.run >= self.sustain:
                st.flagged = True
                st.since = self._onset(st, ref, c, rel, st.run_start)
        else:
            st.run = 0
        if not st.flagged and not exceeding:
            st.history.append(rel)
            st.appended += 1
        if st.flagged:
            st.peak = max(st.peak, rel)
        st.score = RankScore(
            rank=rank,
            relative=rel,
            individual=ind,
            compute=med,
            reference=c,
            threshold=threshold,
            flagged=st.flagged,
            since_step=st.since[0] if st.flagged else None,
            since_ts=st.since[1] if st.flagged else None,
            peak_relative=st.peak if st.flagged else rel,
        )
