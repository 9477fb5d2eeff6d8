"""The lifecycle shared by the components that deliver through an outbox (alerts, retraining):
an HTTP client session, the outbox (mlvigil.core.outbox) and its dispatcher, and one
background loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp

from mlvigil.core.aio import stop_task, wait_event
from mlvigil.core.outbox import Dispatcher, Outbox
from mlvigil.core.store import Store

log = logging.getLogger(__name__)


class OutboxService:
    """The lifecycle shared by the components that deliver through an outbox (alerts,
    retraining): an HTTP client session, the outbox and its dispatcher, and one background
    loop that runs :meth:`step` when woken or after :meth:`next_wait` seconds.

    Subclasses set ``name`` and override :meth:`restore` (run once, on a thread, when
    started), :meth:`step` and :meth:`next_wait`; ``step_first`` says whether the loop steps
    before its first wait.
    """

    name = "outbox"
    step_first = True

    def __init__(self, store: Store, collection: str, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self.outbox = Outbox(store, collection, clock=clock)
        self.dispatcher = Dispatcher(self.outbox, name=self.name)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def session(self) -> aiohttp.ClientSession:
        """The HTTP session senders use; only while started."""
        if self._session is None:
            raise RuntimeError(f"{self.name} service is not started")
        return self._session

    def restore(self) -> None:
        """Rebuild in-memory state from the store after a (re)start (on a thread)."""

    async def step(self) -> None:
        """One pass of the background loop."""

    def next_wait(self) -> float:
        """Seconds until the next pass unless woken earlier."""
        return 1.0

    def wake(self) -> None:
        """Run the next pass now; safe from any thread."""
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._stopping = False
        self._session = aiohttp.ClientSession()
        await self.dispatcher.start()
        await asyncio.to_thread(self.restore)
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-loop")

    async def stop(self) -> None:
        # The flag ends the loop at its next wake even if a cancellation were lost.
        self._stopping = True
        self.wake()
        await stop_task(self._task)
        self._task = None
        await self.dispatcher.stop()
        if self._session:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        assert self._event is not None
        if not self.step_first:
            await wait_event(self._event, self.next_wait())
        while not self._stopping:
            self._event.clear()
            try:
                await self.step()
            except Exception:
                log.exception("%s: background pass failed", self.name)
            await wait_event(self._event, self.next_wait())
