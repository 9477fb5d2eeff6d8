"""Alerts outbox benchmark: notifications per second to a slow receiver, and latency from a
Finding to its delivery.

Peer / bound on the same work in the same run: the same receiver driven by plain aiohttp
POSTs at the same concurrency with no outbox (no durable record, no retries) — the ceiling
the outbox's bookkeeping can approach. Run: ``python -m bench.alerts [--messages N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from alerts.config import AlertsConfig
from alerts.pipeline import AlertService
from mlvigil.core.outbox import Dispatcher, Message, NewMessage, Outbox, Outcome, RetryPolicy
from mlvigil.core.store.duckdb import DuckDBStore
from tests.fakes.alerting import Book, finding
from tests.fakes.receiver import RecordingReceiver


async def outbox_throughput(n: int, delay: float, concurrency: int, data: Path) -> float:
    receiver = await RecordingReceiver(delay=delay).start()
    store = DuckDBStore(data)
    dispatcher = Dispatcher(Outbox(store, "bench"))
    session = aiohttp.ClientSession()

    async def send(msg: Message) -> Outcome:
        async with session.post(receiver.url, json=msg.payload, headers={"webhook-id": msg.id}) as r:
            return Outcome.from_http(r.status)

    dispatcher.add_target("hook", send, RetryPolicy(concurrency=concurrency))
    await dispatcher.start()
    t0 = time.perf_counter()
    for i in range(0, n, 50):  # as a detector pass records them: in batches
        await asyncio.to_thread(
            dispatcher.record, [NewMessage(f"m{j}", "hook", {"j": j}) for j in range(i, min(n, i + 50))]
        )
    await receiver.wait_for(n, timeout=300)
    elapsed = time.perf_counter() - t0
    await dispatcher.stop()
    await session.close()
    store.close()
    await receiver.stop()
    return n / elapsed


async def direct_throughput(n: int, delay: float, concurrency: int) -> float:
    receiver = await RecordingReceiver(delay=delay).start()
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(j: int) -> None:
            async with sem, session.post(receiver.url, json={"j": j}) as r:
                await r.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(j) for j in range(n)))
        elapsed = time.perf_counter() - t0
    await receiver.stop()
    return n / elapsed


async def finding_latency(samples: int, data: Path) -> list[float]:
    receiver = await RecordingReceiver().start()
    cfg = AlertsConfig.model_validate(
        {
            "receivers": [{"name": "hook", "webhook": {"url": receiver.url}}],
            "routes": [{"receiver": "hook", "group_by": ["model"], "group_wait": "0s"}],
            "tick": "10ms",
        }
    )
    book = Book(data)
    service = AlertService(cfg, book.store, book.book)
    await service.start()
    out = []
    for i in range(samples):
        t0 = time.perf_counter()
        await asyncio.to_thread(book.report, finding(model=f"m{i}"), detector=f"d{i}")
        await receiver.wait_for(i + 1)
        out.append(time.perf_counter() - t0)
    await service.stop()
    book.close()
    await receiver.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--delay-ms", type=float, default=20.0, help="receiver latency per request")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--samples", type=int, default=30)
    args = ap.parse_args(argv)
    delay = args.delay_ms / 1000
    with tempfile.TemporaryDirectory() as tmp:
        ours = asyncio.run(outbox_throughput(args.messages, delay, args.concurrency, Path(tmp) / "a"))
        peer = asyncio.run(direct_throughput(args.messages, delay, args.concurrency))
        lat = asyncio.run(finding_latency(args.samples, Path(tmp) / "b"))
    bound = args.concurrency / delay
    print(
        f"receiver: {args.delay_ms:.0f} ms per request, {args.concurrency} in flight;",
        f"{args.messages} messages",
    )
    print(f"  physical bound (concurrency / latency): {bound:8.1f} notifications/s")
    print(f"  plain aiohttp, no outbox (peer):        {peer:8.1f} notifications/s")
    print(f"  mlvigil durable outbox:                 {ours:8.1f} notifications/s")
    print(f"  ratio outbox / peer: {ours / peer:.2f}   outbox / bound: {ours / bound:.2f}")
    q = statistics.quantiles(lat, n=20)
    print(
        f"Finding -> webhook delivered (group_wait 0, {len(lat)} samples): "
        f"p50 {statistics.median(lat) * 1000:.1f} ms, p95 {q[18] * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
