"""The durable outbox: recording, backoff, ordering, expiry, and survival of a SIGKILL."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mlvigil.core.outbox import Dispatcher, Message, NewMessage, Outbox, Outcome, RetryPolicy
from mlvigil.core.store import StoreUnavailable
from mlvigil.core.store.duckdb import DuckDBStore
from tests.fakes.alerting import Scenario
from tests.fakes.receiver import RecordingReceiver

REPO = Path(__file__).resolve().parents[1]
FAST = RetryPolicy(initial_backoff=0.05, max_backoff=0.2, expire_after=60, timeout=2)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _policy(_: str) -> RetryPolicy:
    return FAST


def test_record_is_durable_idempotent_and_resumed_after_reopen(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    box = Outbox(store, "box")
    assert box.record([NewMessage("m1", "t", {"n": 1}), NewMessage("m2", "t", {"n": 2})], _policy) == [
        "m1",
        "m2",
    ]
    # The same deterministic id again is not a second notification.
    assert box.record([NewMessage("m1", "t", {"n": 99})], _policy) == []
    claimed = box.take_due(box._clock(), lambda t: 10, _policy)
    assert [d.id for d in claimed] == ["m1", "m2"]
    assert box.counts() == {"delivering": 2}
    store.close()

    store = DuckDBStore(tmp_path)
    again = Outbox(store, "box")
    # "delivering" was never persisted: after a restart both are pending and due again.
    assert again.counts() == {"pending": 2}
    assert again.get("m1").payload == {"n": 1}  # type: ignore[union-attr]
    store.close()


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(initial_backoff=1, max_backoff=10, multiplier=2)
    rng = random.Random(7)
    for attempt, cap in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        draws = [policy.backoff(attempt, rng) for _ in range(400)]
        assert min(draws) >= 0 and max(draws) <= cap
        # Full jitter spreads over the whole interval, not around its top.
        assert min(draws) < 0.1 * cap and max(draws) > 0.9 * cap


def test_retry_permanent_failure_max_attempts_and_expiry(tmp_path: Path) -> None:
    clock = Clock()
    store = DuckDBStore(tmp_path)
    box = Outbox(store, "box", clock=clock)
    limited = RetryPolicy(initial_backoff=1, max_backoff=1, max_attempts=2, expire_after=100)
    box.record(
        [NewMessage("a", "t", {}), NewMessage("b", "t", {}), NewMessage("c", "t", {})], lambda _: limited
    )

    assert len(box.take_due(clock.t, lambda t: 10, lambda _: limited)) == 3
    # a: 503 then 503 -> failed after max_attempts; b: 400 -> failed at once; c: 429 honours Retry-After.
    assert box.complete("a", clock.t, Outcome.from_http(503), limited).state == "pending"
    assert box.complete("b", clock.t, Outcome.from_http(400, "bad"), limited).state == "failed"
    c = box.complete("c", clock.t, Outcome.from_http(429, "", "30"), limited)
    assert c.state == "pending" and c.next_attempt_at >= clock.t + 30
    clock.t += 2
    assert [d.id for d in box.take_due(clock.t, lambda t: 10, lambda _: limited)] == ["a"]
    assert box.complete("a", clock.t, Outcome.from_http(502), limited).state == "failed"
    clock.t += 200  # beyond expires_at
    assert box.take_due(clock.t, lambda t: 10, lambda _: limited) == []
    assert box.get("c").state == "expired"  # type: ignore[union-attr]
    assert [a.status for a in box.get("a").attempts] == [503, 502]  # type: ignore[union-attr]
    store.close()
    store = DuckDBStore(tmp_path)
    assert Outbox(store, "box").counts() == {"failed": 2, "expired": 1}
    store.close()


def test_same_order_key_is_delivered_in_order(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path)
    box = Outbox(store, "box")
    box.record(
        [
            NewMessage("fire", "t", {}, order_key="k"),
            NewMessage("resolve", "t", {}, order_key="k"),
            NewMessage("other", "t", {}, order_key="j"),
        ],
        _policy,
    )
    first = [d.id for d in box.take_due(box._clock(), lambda t: 10, _policy)]
    assert first == ["fire", "other"]  # "resolve" waits for "fire"
    box.complete("fire", box._clock(), Outcome(ok=False), FAST)
    # fire is back to pending with a backoff: resolve still may not overtake it
    assert "resolve" not in [d.id for d in box.take_due(box._clock() + 10, lambda t: 10, _policy)]
    store.close()


def test_dispatcher_retries_a_receiver_that_is_down_and_delivers_each_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as stack:
            receiver = await stack.use(RecordingReceiver(status=503))
            dispatcher = Dispatcher(Outbox(stack.store, "box"))

            async def send(msg: Message) -> Outcome:
                import aiohttp

                async with (
                    aiohttp.ClientSession() as s,
                    s.post(receiver.url + "/hook", json=msg.payload, headers={"webhook-id": msg.id}) as r,
                ):
                    return Outcome.from_http(r.status)

            dispatcher.add_target("hook", send, FAST)
            await stack.use(dispatcher)
            dispatcher.record([NewMessage(f"m{i}", "hook", {"i": i}, order_key="g") for i in range(20)])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while receiver.refused < 5:  # it is really being retried while down
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            receiver.status = 200
            got = await receiver.wait_for(20)
            await asyncio.sleep(0.3)  # a duplicate would arrive within the backoff window
            assert [r.json()["i"] for r in got] == list(range(20))  # all, once each, in order
            assert len({r.headers["webhook-id"] for r in receiver.received}) == 20 == len(receiver.received)

    asyncio.run(scenario())


_RECORD_THEN_DIE = textwrap.dedent(
    """
    import os, signal, sys
    from mlvigil.core.outbox import NewMessage, Outbox, RetryPolicy
    from mlvigil.core.store.duckdb import DuckDBStore
    box = Outbox(DuckDBStore(sys.argv[1]), "box")
    box.record([NewMessage("alert-1", "hook", {"what": "data_drift"})], lambda t: RetryPolicy())
    os.kill(os.getpid(), signal.SIGKILL)  # after recording, before any send
    """
)


def test_killed_between_recording_and_sending_sends_once_after_restart(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _RECORD_THEN_DIE, str(tmp_path)], cwd=REPO, env=os.environ)
    assert proc.returncode == -signal.SIGKILL

    async def run_once() -> list[str]:
        async with Scenario(tmp_path) as stack:
            receiver = await stack.use(RecordingReceiver())
            dispatcher = Dispatcher(Outbox(stack.store, "box"))
            import aiohttp

            async def send(msg: Message) -> Outcome:
                async with (
                    aiohttp.ClientSession() as s,
                    s.post(receiver.url, json=msg.payload, headers={"webhook-id": msg.id}) as r,
                ):
                    return Outcome.from_http(r.status)

            dispatcher.add_target("hook", send, FAST)
            await stack.use(dispatcher)
            delivered = False
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 3
            while loop.time() < deadline and not delivered:
                delivered = dispatcher.outbox.counts().get("delivered", 0) == 1
                await asyncio.sleep(0.02)
            await dispatcher.stop()
            return [r.headers["webhook-id"] for r in receiver.received]

    assert asyncio.run(run_once()) == ["alert-1"]
    # A second restart finds it delivered: nothing is sent again.
    assert asyncio.run(run_once()) == []


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_stop_lets_an_attempt_in_flight_finish_so_a_restart_does_not_repeat_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Scenario(tmp_path) as stack:
            receiver = await stack.use(RecordingReceiver(delay=0.5))
            started = asyncio.Event()

            async def send(msg: Message) -> Outcome:
                import aiohttp

                started.set()
                async with (
                    aiohttp.ClientSession() as s,
                    s.post(receiver.url + "/hook", json=msg.payload) as r,
                ):
                    return Outcome.from_http(r.status)

            dispatcher = Dispatcher(Outbox(stack.store, "box"))
            dispatcher.add_target("hook", send, FAST)
            await stack.use(dispatcher)
            dispatcher.record([NewMessage("m1", "hook", {"i": 1})])
            await asyncio.wait_for(started.wait(), 10)
            await dispatcher.stop()  # the receiver is still sleeping on the request
            assert len(receiver.received) == 1
            assert dispatcher.outbox.messages()[0].state == "delivered"
            stack.reopen()

            again = Dispatcher(Outbox(stack.store, "box"))
            again.add_target("hook", send, FAST)
            await stack.use(again)
            assert again.outbox.messages()[0].state == "delivered"
            await again.stop()
            assert len(receiver.received) == 1

    asyncio.run(scenario())


def test_stop_returns_when_a_wake_lands_in_the_same_loop_iteration(tmp_path: Path) -> None:
    """An attempt's ``finally: wake()`` can set the dispatcher's event just as ``stop()``
    cancels its loop. ``asyncio.wait_for`` on 3.11 then swallows the cancellation and the
    loop runs on, so ``stop()`` never returned. Every point of the loop is hit by varying
    how many loop iterations pass before the wake+stop pair."""

    async def scenario() -> None:
        store = DuckDBStore(tmp_path)
        box = Outbox(store, "box")
        for yields in range(12):
            dispatcher = Dispatcher(box)
            await dispatcher.start()
            for _ in range(yields):
                await asyncio.sleep(0)
            dispatcher.wake()
            # Same iteration as the wake: stop() cancels before anything else runs.
            stopping = asyncio.ensure_future(dispatcher.stop())
            done, _ = await asyncio.wait({stopping}, timeout=3)
            if not done:
                stopping.cancel()
                pytest.fail(f"stop() did not return within 3 s (wake after {yields} loop iterations)")
        store.close()

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_dispatcher_survives_a_store_that_cannot_be_written(tmp_path: Path) -> None:
    """A delivery outcome that cannot be saved (disk full) is kept and saved on a later pass;
    the dispatcher keeps running and nothing is sent twice."""

    class FlakyStore(DuckDBStore):
        broken = False

        def put_docs(self, collection: str, docs: dict[str, dict[str, Any]]) -> None:
            if self.broken:
                raise StoreUnavailable("no space left on device")
            super().put_docs(collection, docs)

    async def scenario() -> None:
        sent: list[str] = []

        async def send(msg: Message) -> Outcome:
            sent.append(msg.id)
            return Outcome(ok=True)

        store = FlakyStore(tmp_path)
        dispatcher = Dispatcher(Outbox(store, "box"))
        dispatcher.add_target("hook", send, FAST)
        await dispatcher.start()
        dispatcher.record([NewMessage("m1", "hook", {})])
        store.broken = True  # before the dispatcher runs: the outcome cannot be saved
        await _until(lambda: sent == ["m1"] and dispatcher.outbox.unsaved == 1)
        assert dispatcher._main is not None and not dispatcher._main.done()
        store.broken = False
        await _until(lambda: dispatcher.outbox.unsaved == 0)
        assert store.get_doc("box", "m1")["state"] == "delivered"  # type: ignore[index]
        await dispatcher.stop()
        assert sent == ["m1"]
        store.close()

    asyncio.run(scenario())
