"""A data-parallel job as the service sees it: per-rank batch exporters, node start offsets,
clock skew, retried and reordered exports, and evaluations on their own schedule.

``JobSpec`` describes a synchronous job (warm-up, periodic checkpoints on all ranks, jitter,
GC blips) and the transients injected into it; ``job_rows`` gives each rank's step rows as its
OpenTelemetry SDK would stamp them (its node's clock). ``arrivals`` models the SDK's default
``BatchSpanProcessor`` per rank (an export every 5 s, or as soon as 512 spans wait), nodes whose
telemetry starts late, exports that fail and are retried (arriving after the next one) and
exports stored but answered with an error, then sent again (duplicates). ``replay`` feeds the
arrivals, in service time, to a ``MemoryStore`` with the real ``FindingBook`` evaluating the
detectors every ``interval`` seconds, as the service does.

The real-process harness (tests/producers/ddp_job.py) runs the same model with one process
per rank, the real SDK and a running service; this in-process copy serves the seeded studies
(hundreds of runs) and ``bench.training``.
"""

from __future__ import annotations

import bisect
import csv
import heapq
import math
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlvigil.core.detector import Detector
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.findings import Finding, State
from mlvigil.core.records import RecordBatch
from mlvigil.core.store.base import Store

EXPORT_DELAY = 5.0  # OTEL_BSP_SCHEDULE_DELAY default, seconds
EXPORT_BATCH = 512  # OTEL_BSP_MAX_EXPORT_BATCH_SIZE default


@dataclass
class JobSpec:
    """One synchronous data-parallel run and how its telemetry travels.

    Transients (None: not injected): ``spike_at`` multiplies every rank's loss by
    ``spike_factor`` for one step; ``nan_at`` makes one rank's loss NaN for one step;
    ``straggler_at`` slows ``straggler_rank``'s compute by ``straggler_factor`` for
    ``straggler_steps`` steps; ``stall_at`` makes ``stall_rank`` wait ``stall_factor`` step
    times for data for ``stall_steps`` steps.
    """

    run_id: str = "job"
    ranks: int = 8
    ranks_per_node: int = 4
    steps: int = 260
    step_time: float = 0.5
    jitter: float = 0.04
    # Chance that some rank of the job has a GC pause or a slow batch at a step (spread over
    # the ranks, so a larger job is not made slower per step).
    blip_prob: float = 0.08
    warmup_steps: int = 5
    warmup_factor: float = 3.0
    checkpoint_every: int = 50
    checkpoint_factor: float = 4.0
    data_share: float = 0.03
    tokens_per_rank: float = 4096.0
    seed: int = 0
    # Arrival model.
    node_offset: float = 10.0  # most seconds a node's first export is late
    clock_skew: float = 2.0  # most seconds a node's clock is off (either way)
    retry_prob: float = 0.05  # an export fails, is retried after a backoff (reordering)
    duplicate_prob: float = 0.03  # an export is stored but answered 503, then sent again
    latency: float = 0.05
    start: float = 1.7e9
    # Transients.
    spike_at: int | None = None
    spike_factor: float = 8.0
    nan_at: int | None = None
    nan_rank: int = 1
    straggler_at: int | None = None
    straggler_rank: int = 2
    straggler_steps: int = 10
    straggler_factor: float = 1.6
    stall_at: int | None = None
    stall_rank: int = 3
    stall_steps: int = 3
    stall_factor: float = 2.0
    # Filled by job_rows: each node's clock offset and its telemetry start delay.
    skews: list[float] = field(default_factory=list)
    offsets: list[float] = field(default_factory=list)

    def node(self, rank: int) -> int:
        return rank // self.ranks_per_node

    @property
    def nodes(self) -> int:
        return (self.ranks + self.ranks_per_node - 1) // self.ranks_per_node


def _draw_nodes(spec: JobSpec, rng: random.Random) -> None:
    spec.skews = [rng.uniform(-spec.clock_skew, spec.clock_skew) for _ in range(spec.nodes)]
    # Node 0 starts first, the last node node_offset later, the others in between.
    spec.offsets = [0.0] + [rng.uniform(0.0, spec.node_offset) for _ in range(spec.nodes - 2)]
    if spec.nodes > 1:
        spec.offsets.append(spec.node_offset)


def job_rows(spec: JobSpec) -> list[list[dict[str, Any]]]:
    """Per rank, its ``training_steps`` rows in step order, stamped with its node's clock."""
    rng = random.Random(spec.seed)
    _draw_nodes(spec, rng)
    sigma = math.sqrt(math.log1p(spec.jitter**2))
    out: list[list[dict[str, Any]]] = [[] for _ in range(spec.ranks)]
    t = spec.start
    comm = 0.1 * spec.step_time
    for step in range(spec.steps):
        scale = spec.warmup_factor if step < spec.warmup_steps else 1.0
        compute, wait = [], []
        for rank in range(spec.ranks):
            c = 0.85 * spec.step_time * scale * rng.lognormvariate(-sigma * sigma / 2, sigma)
            if rng.random() < spec.blip_prob / spec.ranks:
                c *= rng.uniform(1.3, 2.5)
            if (
                spec.straggler_at is not None
                and rank == spec.straggler_rank
                and spec.straggler_at <= step < spec.straggler_at + spec.straggler_steps
            ):
                c *= spec.straggler_factor
            w = spec.data_share * spec.step_time * rng.lognormvariate(0.0, 0.5)
            if (
                spec.stall_at is not None
                and rank == spec.stall_rank
                and spec.stall_at <= step < spec.stall_at + spec.stall_steps
            ):
                w = spec.stall_factor * spec.step_time
            compute.append(c)
            wait.append(w)
        checkpoint = (
            spec.checkpoint_factor * spec.step_time
            if spec.checkpoint_every and step and step % spec.checkpoint_every == 0
            else 0.0
        )
        # Synchronous: every rank waits in the all-reduce for the slowest.
        wall = max(c + w for c, w in zip(compute, wait, strict=True)) + comm + checkpoint
        loss = 2.5 * math.exp(-step / 300.0) + 1.2 + rng.gauss(0.0, 0.02)
        for rank in range(spec.ranks):
            rank_loss = loss + rng.gauss(0.0, 0.01)
            if step == spec.spike_at:
                rank_loss *= spec.spike_factor
            if step == spec.nan_at and rank == spec.nan_rank:
                rank_loss = math.nan
            node = spec.node(rank)
            out[rank].append(
                {
                    "ts": t + spec.skews[node],
                    "service": "trainer",
                    "run_id": spec.run_id,
                    "step": step,
                    "rank": rank,
                    "world_size": spec.ranks,
                    "host": f"node-{node}",
                    "k8s_pod": f"{spec.run_id}-worker-{rank}",
                    "gpu_uuid": f"GPU-{spec.run_id}-{rank:03d}",
                    "step_time_s": wall,
                    "loss": rank_loss,
                    "grad_norm": abs(rng.gauss(1.0, 0.1)),
                    "learning_rate": 3e-4,
                    "samples": 8.0,
                    "tokens": spec.tokens_per_rank,
                    "data_wait_s": wait[rank],
                    "forward_s": compute[rank] / 3,
                    "backward_s": 2 * compute[rank] / 3,
                    "optimizer_s": 0.0,
                    "comm_s": wall - compute[rank] - wait[rank] - checkpoint,
                    "checkpoint_s": checkpoint,
                    "_end": t + wall,  # true end time: when the span is queued for export
                }
            )
        t += wall
    return out


def trace_rows(spec: JobSpec, csv_path: str | Path) -> list[list[dict[str, Any]]]:
    """Per rank, the rows of a recorded trace in the Alibaba PAI mini-batch format (worker,
    time = iteration, batch_time_norm = mini-batch time in ms), one iteration a second from
    ``spec.start``, stamped with each node's clock as ``job_rows`` does; ``spec.ranks`` is set
    to the trace's worker count."""
    by_rank: dict[int, list[dict[str, Any]]] = {}
    with open(csv_path, newline="") as fh:
        for rec in csv.DictReader(fh):
            worker, it = int(rec["worker"]), int(rec["time"])
            step_time = float(rec["batch_time_norm"]) / 1000.0
            by_rank.setdefault(worker, []).append(
                {
                    "ts": spec.start + it,
                    "service": "pai",
                    "run_id": spec.run_id,
                    "step": it,
                    "rank": worker,
                    "host": f"pai-node-{worker}",
                    "k8s_pod": f"{spec.run_id}-worker-{worker}",
                    "gpu_uuid": None,
                    "step_time_s": step_time,
                    **dict.fromkeys(
                        ("loss", "grad_norm", "samples", "tokens", "data_wait_s", "comm_s", "checkpoint_s")
                    ),
                    "_end": spec.start + it + step_time,
                }
            )
    spec.ranks = max(by_rank) + 1
    for rows in by_rank.values():
        rows.sort(key=lambda r: r["step"])
        for r in rows:
            r["world_size"] = spec.ranks
    _draw_nodes(spec, random.Random(spec.seed))
    per_rank = [by_rank.get(rank, []) for rank in range(spec.ranks)]
    for rank, rows in enumerate(per_rank):
        for r in rows:
            r["ts"] += spec.skews[spec.node(rank)]
    return per_rank


def arrivals(spec: JobSpec, per_rank: list[list[dict[str, Any]]]) -> list[tuple[float, list[dict[str, Any]]]]:
    """(service arrival time, rows) of every export request, in arrival order."""
    rng = random.Random(spec.seed + 7_919)
    out: list[tuple[float, list[dict[str, Any]]]] = []
    for rank, rows in enumerate(per_rank):
        opens = spec.start + spec.offsets[spec.node(rank)]
        # The exporter thread's timer starts with the process, at a random phase.
        tick = spec.start + rng.uniform(0.0, EXPORT_DELAY)
        i = 0
        while i < len(rows):
            j = i
            while j < len(rows) and j - i < EXPORT_BATCH and rows[j]["_end"] <= tick:
                j += 1
            if j == i:
                tick += EXPORT_DELAY
                continue
            # A full batch goes as soon as its last span ends; otherwise at the timer tick.
            send_at = rows[j - 1]["_end"] if j - i == EXPORT_BATCH else tick
            # A node whose telemetry starts late holds its spans until then.
            send_at = max(send_at, opens)
            batch = [{k: v for k, v in r.items() if k != "_end"} for r in rows[i:j]]
            arrive = send_at + rng.uniform(0.0, spec.latency)
            if rng.random() < spec.retry_prob:
                # Failed (timeout, 503 before storing): retried after the SDK's backoff.
                arrive += rng.uniform(1.0, 8.0)
            out.append((arrive, batch))
            if rng.random() < spec.duplicate_prob:
                # Stored, but the answer was lost: the SDK sends it again.
                out.append((arrive + rng.uniform(1.0, 4.0), batch))
            i = j
            tick = send_at + EXPORT_DELAY
    out.sort(key=lambda a: a[0])
    return out


class MemoryStore(Store):
    """Just enough of a Store for the detectors and the FindingBook, in memory: rows of
    ``training_steps`` returned as the DuckDB store returns them (``ts >= since``, ordered by
    ts, the newest ``last``), and Findings by id."""

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {}
        self._pairs: dict[tuple[Any, Any], float] = {}  # (run_id, rank) -> newest ts
        self._sorted = True
        self._findings: dict[str, Finding] = {}

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> None:
        for r in rows:
            if not self._cols:
                self._cols = {name: [] for name in r}
            ts = self._cols["ts"]
            if ts and r["ts"] < ts[-1]:
                self._sorted = False
            for name, col in self._cols.items():
                col.append(r.get(name))
            pair = (r.get("run_id"), r.get("rank"))
            self._pairs[pair] = max(self._pairs.get(pair, r["ts"]), r["ts"])

    def append(self, batch: RecordBatch) -> None:
        cols = batch.columns.get("training_steps", {})
        names = list(cols)
        n = len(cols[names[0]]) if names else 0
        self.add_rows({name: cols[name][i] for name in names} for i in range(n))

    def query(
        self,
        table: str,
        *,
        columns: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        where: dict[str, Any] | None = None,
        last: int | None = None,
        order_by: str = "ts",
    ) -> dict[str, list[Any]]:
        names = list(columns or self._cols)
        if table != "training_steps" or not self._cols:
            return {n: [] for n in names}
        if not self._sorted:
            ts = self._cols["ts"]
            order = sorted(range(len(ts)), key=ts.__getitem__)
            self._cols = {name: [col[i] for i in order] for name, col in self._cols.items()}
            self._sorted = True
        ts = self._cols["ts"]
        lo = bisect.bisect_left(ts, since) if since is not None else 0
        hi = bisect.bisect_left(ts, until) if until is not None else len(ts)
        keep = range(lo, hi)
        if where:
            wanted = {k: set(v) if isinstance(v, list | tuple | set) else {v} for k, v in where.items()}
            keep = [i for i in keep if all(self._cols[k][i] in vs for k, vs in wanted.items())]  # type: ignore[assignment]
        idx = list(keep)
        if last is not None:
            idx = idx[-last:]
        if not where:
            a, b = (idx[0], idx[-1] + 1) if idx else (0, 0)
            return {n: self._cols[n][a:b] if n in self._cols else [None] * (b - a) for n in names}
        return {n: [self._cols[n][i] for i in idx] if n in self._cols else [None] * len(idx) for n in names}

    def distinct(
        self,
        table: str,
        columns: Sequence[str],
        *,
        since: float | None = None,
        where: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        # Only what the step feed asks: (run_id, rank) pairs with a row since ``since``.
        if table != "training_steps" or list(columns) != ["run_id", "rank"]:
            raise NotImplementedError(f"MemoryStore.distinct({table}, {columns})")
        return sorted(
            (p for p, newest in self._pairs.items() if since is None or newest >= since),
            key=lambda p: (str(p[0]), -1 if p[1] is None else p[1]),
        )

    def counts(self) -> dict[str, int]:
        return {"training_steps": len(self._cols.get("ts", []))}

    def apply_retention(self, cutoffs: dict[str, float]) -> dict[str, int]:
        return {}

    def upsert_findings(self, findings: Iterable[Finding]) -> None:
        for f in findings:
            self._findings[f.id] = f

    def findings(
        self,
        *,
        kind: str | None = None,
        severity: str | None = None,
        state: str | None = None,
        since: float | None = None,
        subject: dict[str, str] | None = None,
        limit: int = 1000,
        offset: int = 0,
    ) -> list[Finding]:
        out = [
            f
            for f in self._findings.values()
            if (kind is None or f.kind == kind)
            and (state is None or str(f.state) == state)
            and all(f.subject.get(k) == v for k, v in (subject or {}).items())
        ]
        return out[offset : offset + limit]

    def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
        raise NotImplementedError

    def get_doc(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        return None

    def list_docs(
        self, collection: str, *, states: Collection[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        return {}

    def delete_doc(self, collection: str, doc_id: str) -> bool:
        return False

    def close(self) -> None:
        pass


@dataclass
class Replay:
    """What the service made of one job: every transition, and the Findings by id."""

    transitions: list[tuple[float, Finding, str]]
    findings: dict[str, Finding]
    evaluations: int
    # (true start time, step) of the job's steps, to say which step ran at a service time.
    steps: list[tuple[float, int]] = field(default_factory=list)

    def step_at(self, t: float) -> int | None:
        """The step the job was running at service time ``t``."""
        i = bisect.bisect_right(self.steps, (t, math.inf)) - 1
        return self.steps[i][1] if i >= 0 else None

    def fired(self, kind: str | None = None) -> list[Finding]:
        """Findings that fired (their latest version), optionally of one kind."""
        ids = {f.id for _, f, what in self.transitions if what == "fired"}
        return [self.findings[i] for i in ids if kind is None or self.findings[i].kind == kind]

    def unresolved(self) -> list[Finding]:
        return [f for f in self.findings.values() if f.state == State.FIRING]


def replay(
    spec: JobSpec,
    detectors: Sequence[Detector],
    *,
    interval: float = 15.0,
    settle: float = 120.0,
    store: Store | None = None,
    per_rank: list[list[dict[str, Any]]] | None = None,
) -> Replay:
    """Deliver ``spec``'s exports (or those of ``per_rank`` rows, e.g. ``trace_rows``) in
    service time and evaluate every ``interval`` seconds (first at a random phase),
    continuing ``settle`` seconds after the last arrival."""
    store = store or MemoryStore()
    book = FindingBook(store)
    transitions: list[tuple[float, Finding, str]] = []
    book.subscribe(lambda f, what: transitions.append((f.updated_at, f, what)))
    per_rank = per_rank if per_rank is not None else job_rows(spec)
    events = arrivals(spec, per_rank)
    first = next((rows for rows in per_rank if rows), [])
    steps = [(r["ts"] - spec.skews[spec.node(r["rank"])], r["step"]) for r in first]
    rng = random.Random(spec.seed + 104_729)
    tick = spec.start + rng.uniform(0.0, interval)
    end = (events[-1][0] if events else spec.start) + settle
    heap = [(t, i, rows) for i, (t, rows) in enumerate(events)]
    heapq.heapify(heap)
    evaluations = 0
    while tick <= end:
        while heap and heap[0][0] <= tick:
            _, _, rows = heapq.heappop(heap)
            if isinstance(store, MemoryStore):
                store.add_rows(rows)
            else:
                batch = RecordBatch()
                for r in rows:
                    batch.add("training_steps", **r)
                store.append(batch)
        for det in detectors:
            book.record(det.name, det.evaluate(store, tick), tick)
        evaluations += 1
        tick += interval
    latest: dict[str, Finding] = {}
    for _, f, _what in transitions:
        latest[f.id] = f
    return Replay(transitions, latest, evaluations, steps)
