"""Three real ``mlvigil serve`` replicas on one real PostgreSQL: producers spread over them,
one SIGKILLed mid-stream. Every acknowledged item is stored once, the dead replica's detectors
move within the lease bound, and no finding, alert or retrain run is lost or sent twice
(a webhook sink and a fake KFP server count them); the straggler findings are those a single
embedded replica finds on the same data. Then a rolling restart under load loses no export."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from mlvigil.app.demo.webhook_sink import WebhookSink
from tests.fakes.kfp import FakeKfp
from tests.harness import ServiceHandle
from tests.otel_helpers import trace_export

TTL = 3.0
RUNS = ("run-a", "run-b", "run-c")
RANKS = 4
STEPS = 140
SLOW_FROM = 90


def _kv(key: str, value: str | int) -> KeyValue:
    v = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
    return KeyValue(key=key, value=v)


def _steps_export(run: str, rank: int, first: int, last: int, t0: float) -> bytes:
    """Training step spans of one rank: 1 s steps; rank 2 takes 2x as long from SLOW_FROM."""
    spans = []
    for step in range(first, last):
        dur = 0.5 * (2.0 if rank == 2 and step >= SLOW_FROM else 1.0)
        start = int((t0 + step) * 1e9)
        spans.append(
            Span(
                trace_id=(hash((run, rank, step)) & (2**127 - 1) | 1).to_bytes(16, "big"),
                span_id=(step + 1).to_bytes(8, "big"),
                name="train.step",
                start_time_unix_nano=start,
                end_time_unix_nano=start + int(dur * 1e9),
                attributes=[
                    _kv("mlvigil.train.run_id", run),
                    _kv("mlvigil.train.step", step),
                    _kv("mlvigil.train.rank", rank),
                    _kv("mlvigil.train.world_size", RANKS),
                ],
            )
        )
    resource = Resource(attributes=[_kv("service.name", "trainer"), _kv("host.name", f"{run}-node-{rank}")])
    req = trace_service_pb2.ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=spans)])]
    )
    return req.SerializeToString()


def _post(url: str, body: bytes, attempts: int = 200, signal: str = "traces") -> bool:
    """POST an OTLP export, retrying 429/503 and refused connections as OTLP exporters do;
    True once acknowledged."""
    for _ in range(attempts):
        req = urllib.request.Request(
            url + f"/v1/{signal}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/x-protobuf"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status == 200:
                    return True
        except urllib.error.HTTPError as err:
            if err.code not in (429, 503):
                raise
            time.sleep(float(err.headers.get("Retry-After") or 1) * 0.2)
            continue
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)  # OTLP's retry backoff (here short)
    return False


class _Kfp:
    """FakeKfp on a loop of its own thread (the replicas are other processes)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = asyncio.run_coroutine_threadsafe(FakeKfp().start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def kfp() -> Iterator[FakeKfp]:
    k = _Kfp()
    yield k.fake
    k.stop()


def _config(sink: WebhookSink | None, kfp: FakeKfp | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "storage": {"lease_ttl": f"{TTL}s"},
        "detectors": {"interval": "1s", "training": {}},
    }
    if sink is not None:
        cfg["alerts"] = {
            "receivers": [{"name": "hook", "webhook": {"url": sink.url + "/alerts"}}],
            "routes": [{"receiver": "hook", "group_by": ["..."], "group_wait": "0s"}],
        }
    if kfp is not None:
        cfg["retrain"] = {
            "targets": [
                {
                    "name": "kfp",
                    "kfp": {
                        "url": kfp.url,
                        "pipeline_id": "pipe-1",
                        "pipeline_version_id": "ver-1",
                        "experiment_id": "exp-1",
                    },
                    "retry": {"initial_backoff": "50ms", "max_backoff": "200ms", "timeout": "5s"},
                }
            ],
            "policies": [
                {
                    "name": "stragglers",
                    "target": "kfp",
                    "kinds": ["straggler"],
                    "severities": ["warning", "critical"],
                    "model_label": "run_id",
                }
            ],
            "poll_interval": "200ms",
        }
    return cfg


def _lease_holders(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn, autocommit=True) as con:
        rows = con.execute(
            "SELECT name, holder FROM mlvigil_leases WHERE name LIKE 'detector:%'"
            " AND expires_at >= extract(epoch from clock_timestamp())"
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def _replica_ids(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as con:
        rows = con.execute(
            "SELECT holder FROM mlvigil_leases WHERE name LIKE 'replica:%'"
            " AND expires_at >= extract(epoch from clock_timestamp())"
        ).fetchall()
    return {r[0] for r in rows}


def _unsent(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as con:
        row = con.execute(
            "SELECT count(*) FROM docs WHERE collection LIKE '%outbox' AND state = 'pending'"
        ).fetchone()
    return int(row[0]) if row else -1


def _trigger_states(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as con:
        rows = con.execute("SELECT body FROM docs WHERE collection = 'retrain_triggers'").fetchall()
    return sorted(json.loads(r[0])["status"] for r in rows)


def _stragglers(h: ServiceHandle) -> set[tuple[str, str]]:
    return {(f["subject"]["run_id"], f["subject"]["rank"]) for f in h.findings(kind="straggler")}


def test_three_replicas_one_killed_mid_stream(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str, kfp: FakeKfp
) -> None:
    sink = WebhookSink()
    sink.start()
    try:
        _scenario(service_factory, postgres_dsn, sink, kfp)
    finally:
        sink.stop()


def _scenario(
    service_factory: Callable[..., ServiceHandle], dsn: str, sink: WebhookSink, kfp: FakeKfp
) -> None:
    env = {"MLVIGIL_STORE_DSN": dsn}
    replicas = [service_factory(_config(sink, kfp), env) for _ in range(3)]
    single = service_factory(_config(None, None))  # embedded DuckDB, the reference
    # Each replica runs its share of the six detectors (five training, one GPU health).
    replicas[0].wait_for(
        lambda: (
            len(_replica_ids(dsn)) == 3
            and sorted(Counter(_lease_holders(dsn).values()).values()) == [2, 2, 2]
        )
    )

    acked: list[int] = []
    alive = [True, True, True]
    stop = threading.Event()

    def produce(i: int) -> None:
        n = i * 100_000
        while not stop.is_set() and alive[i]:
            n += 1
            if _post(replicas[i].otlp_http, trace_export(n, 50), attempts=1):
                acked.append(n)

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for t in producers:
        t.start()

    # Training steps spread over the replicas (and all to the single reference replica).
    t0 = time.time() - STEPS - 60
    k = 0
    victim = -1
    for first in range(0, STEPS, 20):
        for run in RUNS:
            for rank in range(RANKS):
                body = _steps_export(run, rank, first, min(STEPS, first + 20), t0)
                up = [i for i in range(3) if alive[i]]
                assert _post(replicas[up[k % len(up)]].otlp_http, body)
                assert _post(single.otlp_http, body)
                k += 1
        if first == 80:
            # Kill the replica running the straggler detector, mid-stream.
            owner = _lease_holders(dsn)["detector:training.straggler"]
            pid = int(owner.rsplit("-", 2)[1])  # replica ids are host-pid-random
            victim = next(i for i, r in enumerate(replicas) if r.proc is not None and r.proc.pid == pid)
            alive[victim] = False
            # Deliveries it may have had in flight were received before this count grew.
            received_before_kill = len(sink.deliveries)
            replicas[victim].kill()
            killed_at = time.monotonic()
            dead_owner = owner
    live = [r for i, r in enumerate(replicas) if alive[i]]

    # Its work moved within the lease bound (plus a heartbeat and a detector pass).
    ServiceHandle.wait_for(
        live[0],
        lambda: (h := _lease_holders(dsn).get("detector:training.straggler")) and h != dead_owner,
        timeout=TTL * 4 / 3 + 5,
    )
    moved_after = time.monotonic() - killed_at
    assert moved_after <= TTL * 4 / 3 + 3.0, moved_after
    assert not set(_lease_holders(dsn).values()) & {dead_owner}

    # The findings are the single replica's.
    expected = {(run, "2") for run in RUNS}
    live[0].wait_for(lambda: _stragglers(single) == expected, timeout=60, interval=0.5)
    live[0].wait_for(lambda: _stragglers(live[0]) == expected, timeout=60, interval=0.5)
    stop.set()
    for t in producers:
        t.join(30)

    # Every acknowledged export is stored exactly once (50 spans each).
    with psycopg.connect(dsn, autocommit=True) as con:
        counts: dict[str, int] = dict(
            con.execute(
                "SELECT trace_id, count(*) FROM spans WHERE name LIKE 'export-%' GROUP BY trace_id"
            ).fetchall()
        )
    for n in acked:
        assert counts.get(f"{n:032x}") == 50, n
    assert acked

    # One alert per straggler, one retrain run per straggler: none lost, none twice.
    def alerted() -> set[str]:
        out = set()
        for d in sink.deliveries:
            for a in d.body.get("alerts", []):
                if a["labels"].get("alertname") == "straggler" and a["status"] == "firing":
                    out.add(a["labels"]["run_id"])
        return out

    try:
        live[0].wait_for(lambda: alerted() == set(RUNS), timeout=30)
    except AssertionError:
        with psycopg.connect(dsn, autocommit=True) as con:
            docs = [
                (
                    c,
                    i,
                    st,
                    json.loads(b).get("recorded_by"),
                    json.loads(b)["created_at"],
                    json.loads(b)["attempts"],
                )
                for c, i, st, b in con.execute(
                    "SELECT collection, id, state, body FROM docs WHERE collection = 'alerts_outbox'"
                ).fetchall()
            ]
        raise AssertionError(
            f"alerted {alerted()}; outbox {docs}; now {time.time()}; replicas {_replica_ids(dsn)}"
            f" findings {[(f['kind'], f['subject'].get('run_id'), f['state']) for f in live[0].findings()]}"
        ) from None
    live[0].wait_for(lambda: kfp.creates >= len(RUNS), timeout=30)
    # Counted once nothing is left to send (so a late duplicate would be counted too).
    try:
        live[0].wait_for(lambda: _unsent(dsn) == 0, timeout=60)
    except AssertionError:
        with psycopg.connect(dsn, autocommit=True) as con:
            left = con.execute(
                "SELECT collection, id, body FROM docs WHERE collection LIKE '%outbox' AND state = 'pending'"
            ).fetchall()
            claims = con.execute(
                "SELECT name, holder, expires_at - extract(epoch from clock_timestamp()) FROM mlvigil_leases"
                " WHERE name LIKE 'outbox:%'"
            ).fetchall()
        raise AssertionError(f"still pending: {left}; claims {claims}; dead replica {dead_owner}") from None
    # A webhook receiver is not idempotent by itself: a replica SIGKILLed after the receiver
    # got a message but before it stored "delivered" cannot be told apart from one killed
    # before sending, so that message is sent again, under the same webhook-id (at-least-once
    # with an idempotency key, docs/scale-out.md). Counted by that key: every notification
    # once. Only a message received before the kill may arrive twice, with the same body.
    ids = [d.headers.get("webhook-id") for d in sink.deliveries]
    assert all(ids), "a webhook delivery without a webhook-id"
    first_seen: dict[str, int] = {}
    for n, (msg_id, d) in enumerate(zip(ids, sink.deliveries, strict=True)):
        assert msg_id is not None
        if msg_id not in first_seen:
            first_seen[msg_id] = n
            continue
        earlier = sink.deliveries[first_seen[msg_id]]
        if first_seen[msg_id] >= received_before_kill or earlier.body != d.body:
            with psycopg.connect(dsn, autocommit=True) as con:
                docs = con.execute("SELECT collection, id, body FROM docs WHERE id = %s", [msg_id]).fetchall()
            raise AssertionError(
                f"sent twice though no replica died holding it: {msg_id} (first at delivery"
                f" {first_seen[msg_id]}, {received_before_kill} received before the kill); stored: {docs}"
            )
    # Each straggler alert is one notification (one idempotency key), whichever replica sent it.
    straggler_ids: dict[str, set[str | None]] = {}
    for i, d in zip(ids, sink.deliveries, strict=True):
        for a in d.body.get("alerts", []):
            if a["labels"].get("alertname") == "straggler" and a["status"] == "firing":
                straggler_ids.setdefault(a["labels"]["run_id"], set()).add(i)
    assert sorted(straggler_ids) == sorted(RUNS) and all(len(v) == 1 for v in straggler_ids.values()), (
        straggler_ids
    )
    names = Counter(r["display_name"] for r in kfp.runs.values())
    assert kfp.creates == len(RUNS) and max(names.values()) == 1, names
    # Whichever replica delivered a trigger follows its run to the end (stored trigger states).
    done = ["succeeded"] * len(RUNS)
    try:
        live[0].wait_for(lambda: _trigger_states(dsn) == done, timeout=60)
    except AssertionError:
        raise AssertionError(f"trigger states {_trigger_states(dsn)}, want {done}") from None


def test_rolling_restart_under_load_loses_no_export(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str
) -> None:
    env = {"MLVIGIL_STORE_DSN": postgres_dsn}
    replicas = [service_factory({"storage": {"lease_ttl": f"{TTL}s"}}, env) for _ in range(3)]
    urls = [r.otlp_http for r in replicas]
    acked: list[int] = []
    failed: list[int] = []
    stop = threading.Event()

    def produce(i: int) -> None:
        n = i * 100_000
        while not stop.is_set():
            n += 1
            body = trace_export(n, 20)
            # Behind a load balancer: a replica that is away is skipped, 429/503 retried.
            for attempt in range(60):
                if _post(urls[(i + attempt) % 3], body, attempts=1):
                    acked.append(n)
                    break
            else:
                failed.append(n)

    producers = [threading.Thread(target=produce, args=(i,)) for i in range(3)]
    for t in producers:
        t.start()
    try:
        for r in replicas:
            want = len(acked) + 10
            replicas[0].wait_for(lambda: len(acked) > want, timeout=30)  # noqa: B023 (used at once)
            assert r.stop() == 0  # SIGTERM: drain what was acknowledged, then exit
            r.start()  # same ports: the "pod" comes back
    finally:
        stop.set()
        for t in producers:
            t.join(60)
    assert failed == []
    with psycopg.connect(postgres_dsn, autocommit=True) as con:
        counts: dict[str, int] = dict(
            con.execute("SELECT trace_id, count(*) FROM spans GROUP BY trace_id").fetchall()
        )
    assert len(acked) > 30
    missing = [n for n in acked if counts.get(f"{n:032x}") != 20]
    assert missing == []


def test_a_monitor_added_on_one_replica_reaches_the_others_without_restart(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str
) -> None:
    """Added through replica a's API: b lists it, its lease joins the division (one replica
    runs it); replaced through b, a follows; deleted through b, a drops it and its lease."""
    env = {"MLVIGIL_STORE_DSN": postgres_dsn}
    a, b = (service_factory({"storage": {"lease_ttl": f"{TTL}s"}}, env) for _ in range(2))
    monitor = {
        "name": "shared-credit",
        "kind": "data",
        "service": "credit",
        "model": "credit",
        "reference": {"dataset": True},
        "window": {"size": 300, "min_size": 100},
    }

    def listed(h: ServiceHandle) -> dict[str, Any]:
        return {m["config"]["name"]: m["config"] for m in h.get("/api/v1/monitors")["monitors"]}

    a.post("/api/v1/monitors", monitor)
    b.wait_for(lambda: "shared-credit" in listed(b), timeout=15)
    # One lease for it, held by one live replica (both now share the key).
    b.wait_for(
        lambda: "detector:drift:shared-credit" in _lease_holders(postgres_dsn), timeout=TTL * 4 / 3 + 5
    )

    b.post("/api/v1/monitors", {**monitor, "window": {"size": 500, "min_size": 100}})
    a.wait_for(lambda: listed(a).get("shared-credit", {}).get("window", {}).get("size") == 500, timeout=15)

    status, _, body = b.request("DELETE", "/api/v1/monitors/shared-credit")
    assert status == 200, body
    a.wait_for(lambda: "shared-credit" not in listed(a), timeout=15)
    a.wait_for(
        lambda: "detector:drift:shared-credit" not in _lease_holders(postgres_dsn), timeout=TTL * 4 / 3 + 5
    )


def test_training_runs_spread_over_replicas_by_shard_and_move_when_one_dies(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str
) -> None:
    """``detectors.training.shards: 4``: the straggler detector is four leases, one per
    quarter of the runs; two replicas both run some (their findings come from both), and
    when one is killed the survivor holds every shard within the lease bound."""
    from mlvigil.core.shard import shard_of as run_shard

    shards = 4
    runs: dict[int, str] = {}
    n = 0
    while len(runs) < shards:  # one run in each shard
        runs.setdefault(run_shard(f"job-{n}", shards), f"job-{n}")
        n += 1
    off = {"enabled": False}
    cfg = {
        "storage": {"lease_ttl": f"{TTL}s"},
        "detectors": {
            "interval": "1s",
            "training": {
                "shards": shards,
                "slowdown": off,
                "throughput": off,
                "dataloader": off,
                "loss": off,
            },
        },
    }
    env = {"MLVIGIL_STORE_DSN": postgres_dsn}
    a, b = service_factory(cfg, env), service_factory(cfg, env)
    names = {f"detector:training.straggler[{i}/{shards}]" for i in range(shards)}

    def holders() -> dict[str, str]:
        return {k: v for k, v in _lease_holders(postgres_dsn).items() if k in names}

    # Five leases (four shards and GPU health) over two replicas: each runs some runs.
    a.wait_for(lambda: len(_replica_ids(postgres_dsn)) == 2 and len(set(holders().values())) == 2, timeout=30)
    t0 = time.time() - STEPS - 60
    for first in range(0, STEPS, 20):
        for run in runs.values():
            for rank in range(RANKS):
                assert _post((a, b)[rank % 2].otlp_http, _steps_export(run, rank, first, first + 20, t0))
    want = {(run, "2") for run in runs.values()}
    a.wait_for(lambda: _stragglers(a) == want, timeout=60, interval=0.5)
    # Each run's finding was made by its shard's instance, on the replica holding it.
    by = {f["subject"]["run_id"]: f["detector"] for f in a.findings(kind="straggler")}
    assert by == {run: f"training.straggler[{i}/{shards}]" for i, run in runs.items()}
    spread = holders()
    assert len(set(spread.values())) == 2, spread

    victim = next(
        h for h in (a, b) if h.proc is not None and f"-{h.proc.pid}-" in next(iter(spread.values()))
    )
    survivor = b if victim is a else a
    dead = next(iter(spread.values()))
    victim.kill()
    killed_at = time.monotonic()
    survivor.wait_for(
        lambda: len(h := holders()) == shards and dead not in h.values(), timeout=TTL * 4 / 3 + 10
    )
    assert time.monotonic() - killed_at <= TTL * 4 / 3 + 3.0


def test_gpu_nodes_spread_over_replicas_by_shard_and_move_when_one_dies(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str
) -> None:
    """``gpu.shards: 4``: the GPU-health detector is four leases, one per quarter of the nodes;
    two replicas both judge some nodes (each node's findings come from its shard), and when one
    is killed the survivor holds every shard within the lease bound."""
    from gpu_health.fake import builtin_scenario
    from gpu_health.otlp import build_request
    from gpu_health.simulate import Simulation
    from mlvigil.core.shard import shard_of

    shards = 4
    nodes: dict[int, str] = {}
    n = 0
    while len(nodes) < shards:  # one node in each shard
        nodes.setdefault(shard_of(f"node-{n}", shards), f"node-{n}")
        n += 1
    # A faulty scenario per node (GPU uuids differ by scenario), each with a fault within 40 s.
    scenarios = ("xid_mixed", "ecc_uncorrected", "fall_off_bus", "memory_repair")
    off = {"enabled": False}
    cfg = {
        "storage": {"lease_ttl": f"{TTL}s"},
        "detectors": {"interval": "1s", "training": off},
        "gpu": {"shards": shards},
    }
    env = {"MLVIGIL_STORE_DSN": postgres_dsn}
    a, b = service_factory(cfg, env), service_factory(cfg, env)
    names = {f"detector:gpu_health[{i}/{shards}]" for i in range(shards)}

    def holders() -> dict[str, str]:
        return {k: v for k, v in _lease_holders(postgres_dsn).items() if k in names}

    a.wait_for(lambda: len(_replica_ids(postgres_dsn)) == 2 and len(set(holders().values())) == 2, timeout=30)
    start = time.time() - 60
    for k, (node, scenario) in enumerate(zip([nodes[i] for i in range(shards)], scenarios, strict=True)):
        sim = Simulation.start(builtin_scenario(scenario), None, epoch=start, node=node)
        for p in range(30):  # 60 s of 2 s passes, each one export, spread over both replicas
            sim.clock.advance(2.0)
            samples = sim.pass_once()
            body = build_request(samples, {"host.name": node, "service.name": "agent"}, start)
            assert _post((a, b)[(k + p) % 2].otlp_http, body.SerializeToString(), signal="metrics")
    hosts = set(nodes.values())

    def by_host() -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for f in a.findings():
            if f["subject"].get("host") in hosts:
                out.setdefault(f["subject"]["host"], set()).add(f["detector"])
        return out

    a.wait_for(lambda: set(by_host()) == hosts, timeout=60, interval=0.5)
    # Each node's findings were made by its shard's instance, on the replica holding it.
    assert by_host() == {node: {f"gpu_health[{i}/{shards}]"} for i, node in nodes.items()}
    spread = holders()
    assert len(set(spread.values())) == 2, spread

    victim = next(
        h for h in (a, b) if h.proc is not None and f"-{h.proc.pid}-" in next(iter(spread.values()))
    )
    survivor = b if victim is a else a
    dead = next(iter(spread.values()))
    victim.kill()
    killed_at = time.monotonic()
    survivor.wait_for(
        lambda: len(h := holders()) == shards and dead not in h.values(), timeout=TTL * 4 / 3 + 10
    )
    assert time.monotonic() - killed_at <= TTL * 4 / 3 + 3.0


def test_drift_findings_on_replicas_equal_a_single_replicas(
    service_factory: Callable[..., ServiceHandle], postgres_dsn: str
) -> None:
    """A drift monitor created on replica a, its reference posted through b, traffic spread
    over both: whichever replica runs the monitor finds what one embedded replica finds on
    the same data (kind, subject, key, severity)."""
    import numpy as np

    from tests.console_feed import _credit, _send_inferences

    cfg: dict[str, Any] = {"storage": {"lease_ttl": f"{TTL}s"}, "detectors": {"interval": "1s"}}
    env = {"MLVIGIL_STORE_DSN": postgres_dsn}
    a, b = service_factory(cfg, env), service_factory(cfg, env)
    single = service_factory({"detectors": {"interval": "1s"}})
    monitor = {
        "name": "credit-features",
        "kind": "data",
        "service": "credit",
        "model": "credit",
        "reference": {"dataset": True},
        "window": {"size": 300, "min_size": 100},
    }
    rng = np.random.default_rng(0)
    ref_x, _, _ = _credit(rng, 2000)
    reference = {"rows": [{"f0": float(u), "f1": float(v)} for u, v in ref_x]}
    x, p, _ = _credit(rng, 300, hard=True)
    a.post("/api/v1/monitors", monitor)
    single.post("/api/v1/monitors", monitor)
    b.wait_for(
        lambda: any(m["config"]["name"] == "credit-features" for m in b.get("/api/v1/monitors")["monitors"])
    )
    b.post("/api/v1/monitors/credit-features/reference", reference)
    single.post("/api/v1/monitors/credit-features/reference", reference)
    _send_inferences(a, x[:150], p[:150], 0)
    _send_inferences(b, x[150:], p[150:], 150)
    _send_inferences(single, x, p, 0)

    def drift(h: ServiceHandle) -> set[tuple[str, str, str, str]]:
        return {
            (f["kind"], json.dumps(f["subject"], sort_keys=True), f["key"], f["severity"])
            for f in h.findings(kind="data_drift")
        }

    single.wait_for(lambda: drift(single), timeout=60, interval=0.5)
    a.wait_for(lambda: drift(a) == drift(single), timeout=60, interval=0.5)
    assert drift(b) == drift(single)  # one database: both replicas answer the same
