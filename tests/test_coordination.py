"""Leases and outbox claims on a real PostgreSQL server: work divides among live replicas,
never runs on two at once, and moves within the lease bound when a replica stops beating."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

from mlvigil.core.coordination import Coordinator, MessageClaims
from mlvigil.core.outbox import Message, NewMessage, Outbox, Outcome, RetryPolicy
from mlvigil.core.store.postgres import PostgresStore

KEYS = [f"detector:d{i}" for i in range(7)]
TTL = 3.0


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[PostgresStore]:
    s = PostgresStore(postgres_dsn)
    yield s
    s.close()


def _replicas(store: PostgresStore, n: int) -> list[Coordinator]:
    out = []
    for i in range(n):
        c = Coordinator(store, TTL, replica_id=f"r{i}")
        c.set_keys(KEYS)
        out.append(c)
    return out


def _settle(replicas: list[Coordinator], rounds: int = 4) -> None:
    for _ in range(rounds):
        for c in replicas:
            c.tick()


def _wait(cond: object, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if callable(cond) and cond():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s")


def test_work_divides_evenly_and_never_twice(pg: PostgresStore) -> None:
    replicas = _replicas(pg, 3)
    _settle(replicas)
    held = [set(c.held()) for c in replicas]
    assert set().union(*held) == set(KEYS)
    assert sum(len(h) for h in held) == len(KEYS)  # disjoint
    assert max(len(h) for h in held) == math.ceil(len(KEYS) / 3)
    # Ticking on never hands a key to two replicas at once.
    for _ in range(5):
        _settle(replicas, 1)
        now_held = [set(c.held()) for c in replicas]
        assert sum(len(h) for h in now_held) == len(set().union(*now_held))


def test_a_dead_replicas_work_moves_within_the_lease_bound(pg: PostgresStore) -> None:
    a, b, c = _replicas(pg, 3)
    _settle([a, b, c])
    lost = set(a.held())
    assert lost
    # a dies: no more heartbeats, no release. b and c beat every ttl/3, as the service does.
    died = time.monotonic()

    def taken_over() -> bool:
        for r in (b, c):
            r.tick()
        return lost <= set(b.held()) | set(c.held())

    took = _wait(taken_over, timeout=TTL * 3)
    assert time.monotonic() - died <= TTL * 4 / 3 + 1.0, took
    assert set(b.held()) | set(c.held()) == set(KEYS)
    assert not set(b.held()) & set(c.held())
    # a's own view lapsed before the database let anyone else take its keys.
    assert a.held() == []


def test_a_new_replica_gets_its_share(pg: PostgresStore) -> None:
    a, b = _replicas(pg, 2)
    _settle([a])
    assert set(a.held()) == set(KEYS)
    _settle([b, a, b, a, b])
    assert len(a.held()) == 4 and len(b.held()) == 3


def test_each_outbox_message_is_claimed_by_one_replica(pg: PostgresStore) -> None:
    pg.put_doc("alerts_outbox", "m1", {"id": "m1", "state": "pending", "next_attempt_at": 0})
    one, two = MessageClaims(pg, "r1"), MessageClaims(pg, "r2")
    assert one.claim("alerts_outbox", "m1", 30)[0] is True
    assert two.claim("alerts_outbox", "m1", 30)[0] is False
    # Delivered by r1: r2 learns that from the stored message and never sends it.
    pg.put_doc("alerts_outbox", "m1", {"id": "m1", "state": "delivered", "next_attempt_at": 0})
    one.release("alerts_outbox", "m1")
    claimed, stored = two.claim("alerts_outbox", "m1", 30)
    assert claimed is False and stored is not None and stored["state"] == "delivered"


def test_a_crashed_claim_expires_and_another_replica_retries(pg: PostgresStore) -> None:
    pg.put_doc("alerts_outbox", "m2", {"id": "m2", "state": "pending", "next_attempt_at": 0})
    one, two = MessageClaims(pg, "r1"), MessageClaims(pg, "r2")
    assert one.claim("alerts_outbox", "m2", 0.5)[0] is True
    _wait(lambda: two.claim("alerts_outbox", "m2", 30)[0], timeout=5)


def test_two_replicas_dispatching_one_outbox_send_each_message_once(postgres_dsn: str) -> None:
    """Two replicas' dispatchers drain the same outbox collection: messages one replica
    recorded are found by the other (refresh), and each is sent once (claims), in order."""
    import asyncio

    import aiohttp

    from mlvigil.core.outbox import Dispatcher, NewMessage, Outbox, Outcome, RetryPolicy
    from tests.fakes.receiver import RecordingReceiver

    async def scenario() -> None:
        receiver = await RecordingReceiver(delay=0.05).start()
        session = aiohttp.ClientSession()
        stores = [PostgresStore(postgres_dsn) for _ in range(2)]
        dispatchers = []
        sent_by: list[str] = []
        for i, store in enumerate(stores):
            store.coordinator = Coordinator(store, TTL, replica_id=f"r{i}")
            d = Dispatcher(Outbox(store, "alerts_outbox"), name=f"r{i}")
            # At once, not after the recorder's head start: the claims alone keep them apart.
            d.outbox.takeover_after = 0.0

            async def send(msg: Message, who: str = f"r{i}") -> Outcome:
                sent_by.append(who)
                async with session.post(receiver.url, data=msg.id) as r:
                    return Outcome.from_http(r.status)

            d.add_target("hook", send, RetryPolicy(concurrency=2))
            dispatchers.append(d)
        for d in dispatchers:
            await d.start()
        try:
            # Recorded on r0 only, in three order keys.
            dispatchers[0].record(
                [
                    NewMessage(id=f"m{n:03d}", target="hook", payload={}, order_key=f"k{n % 3}")
                    for n in range(60)
                ]
            )
            deadline = asyncio.get_running_loop().time() + 30
            while len(receiver.received) < 60 and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # a refresh period more: a duplicate would have arrived by now
        finally:
            for d in dispatchers:
                await d.stop()
            await session.close()
            await receiver.stop()
            for s in stores:
                s.close()
        ids = [r.body.decode() for r in receiver.received]
        assert sorted(ids) == [f"m{n:03d}" for n in range(60)]  # all, each once
        for key in range(3):  # each order key in the order it was recorded
            mine = [i for i in ids if int(i[1:]) % 3 == key]
            assert mine == sorted(mine)
        assert len(sent_by) == 60 and set(sent_by) == {"r0", "r1"}  # both worked, neither twice

    asyncio.run(scenario())


def _shared_outbox(dsn: str, replica: str) -> tuple[PostgresStore, Outbox]:
    store = PostgresStore(dsn)
    store.coordinator = Coordinator(store, TTL, replica_id=replica)
    box = Outbox(store, "alerts_outbox")
    box.takeover_after = 0.0
    return store, box


def test_an_outcome_the_store_refused_keeps_the_claim(postgres_dsn: str) -> None:
    """Delivered, but "delivered" could not be stored (the database blinked): the claim is
    kept, so another replica, which still reads "pending", does not send it again."""
    store, box = _shared_outbox(postgres_dsn, "r0")
    other = MessageClaims(store, "r1")
    try:
        box.record([NewMessage(id="m-refused", target="hook", payload={})], lambda t: RetryPolicy())
        [msg] = box.take_due(box._clock(), lambda t: 1, lambda t: RetryPolicy())
        assert box.claim(msg.id, 30)
        real_put = store.put_docs

        def refuse(*args: object, **kwargs: object) -> None:
            raise RuntimeError("database unavailable")

        store.put_docs = refuse  # type: ignore[method-assign]
        box.complete(msg.id, box._clock(), Outcome(ok=True, status=200), RetryPolicy())
        assert box.unsaved == 1
        claimed, stored = other.claim("alerts_outbox", msg.id, 30)
        assert stored is not None and stored["state"] == "pending"
        assert claimed is False  # held until saved or expired, never re-sent at once
        store.put_docs = real_put  # type: ignore[method-assign]
        assert box.save_unsaved() == 0
        assert other.claim("alerts_outbox", msg.id, 30) == (False, store.get_doc("alerts_outbox", msg.id))
        assert store.get_doc("alerts_outbox", msg.id)["state"] == "delivered"  # type: ignore[index]
    finally:
        other.leases.close()
        box.claims.leases.close()  # type: ignore[union-attr]
        store.close()


def test_a_claim_that_ran_short_before_the_send_is_given_back_unsent(postgres_dsn: str) -> None:
    """Fencing: a replica stalled between claiming and sending (its claim nearly spent) does
    not send; it gives the claim back and another replica sends the message, once."""
    import asyncio

    from mlvigil.core.outbox import Dispatcher

    store, box = _shared_outbox(postgres_dsn, "r0")
    real_claim = box.claim
    calls: list[str] = []

    def stalled_claim(msg_id: str, ttl: float) -> bool:
        calls.append(msg_id)
        if len(calls) > 1:
            return False  # later passes: leave it (to the other replica below)
        got = real_claim(msg_id, ttl)
        if got:  # the loop stalled: most of the claim is gone before the send could start
            box._claimed_until[msg_id] = time.monotonic() + 1.0
        return got

    box.claim = stalled_claim  # type: ignore[method-assign]
    sent: list[str] = []

    async def scenario() -> None:
        d = Dispatcher(box, name="r0")

        async def send(msg: Message) -> Outcome:
            sent.append(msg.id)
            return Outcome(ok=True, status=200)

        d.add_target("hook", send, RetryPolicy(timeout=5.0))
        await d.start()
        try:
            d.record([NewMessage(id="m-stalled", target="hook", payload={})])
            deadline = time.monotonic() + 10
            # Until a later pass came back to it (the first attempt is over).
            while len(calls) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert len(calls) >= 2, calls
        finally:
            await d.stop()

    try:
        asyncio.run(scenario())
        assert sent == []
        # Given back at once (not left to expire): another replica may claim it now.
        other = MessageClaims(store, "r1")
        claimed, stored = other.claim("alerts_outbox", "m-stalled", 30)
        other.leases.close()
        assert claimed and stored is not None and stored["state"] == "pending"
    finally:
        box.claims.leases.close()  # type: ignore[union-attr]
        store.close()


def _claims(store: PostgresStore) -> set[str]:
    with store.connect() as con:
        return {r[0] for r in con.execute("SELECT name FROM mlvigil_leases WHERE name LIKE 'outbox:%'")}


def test_a_finding_burst_through_two_replicas_is_one_grouped_notification(postgres_dsn: str) -> None:
    """Two replicas' detectors fire into one webhook group (group_by model) within its
    group_wait: the group is shared through the database, so the receiver gets one
    notification with both alerts, not one per replica."""
    import asyncio

    from alerts.config import AlertsConfig
    from alerts.pipeline import AlertService
    from mlvigil.core.finding_book import FindingBook
    from tests.fakes.alerting import finding, until
    from tests.fakes.receiver import RecordingReceiver

    async def scenario() -> None:
        receiver = await RecordingReceiver().start()
        hook_cfg = AlertsConfig.model_validate(
            {
                "receivers": [{"name": "hook", "webhook": {"url": receiver.url}}],
                "routes": [
                    {
                        "receiver": "hook",
                        "group_by": ["model"],
                        "group_wait": "500ms",
                        "group_interval": "300ms",
                    }
                ],
                "tick": "20ms",
            }
        )
        stores = [PostgresStore(postgres_dsn) for _ in range(2)]
        books, services = [], []
        for i, store in enumerate(stores):
            store.coordinator = Coordinator(store, TTL, replica_id=f"r{i}")
            book = FindingBook(store)
            books.append(book)
            services.append(AlertService(hook_cfg, store, book))
        for s in services:
            await s.start()
        try:
            now = time.time()
            # Different detectors (one per replica), one group: model=shared.
            books[0].record("drift:a", [finding(kind="data_drift", model="shared")], now)
            books[1].record("drift:b", [finding(kind="prediction_drift", model="shared")], now)
            (first,) = await until(lambda: receiver.received, timeout=15, what="a notification")
            # Both replicas' group timers have passed (and a group_interval): still one.
            await asyncio.sleep(1.5)
        finally:
            for s in services:
                await s.stop()
            await receiver.stop()
            for store in stores:
                if store.coordinator is not None:
                    store.coordinator.claims.leases.close()
                store.close()
        assert len(receiver.received) == 1, [r.json() for r in receiver.received]
        kinds = sorted(a["labels"]["alertname"] for a in first.json()["alerts"])
        assert kinds == ["data_drift", "prediction_drift"], first.json()

    asyncio.run(scenario())
