"""A recording HTTP receiver on 127.0.0.1 that can be taken down, slowed or made to fail."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RecordingReceiver:
    """Accepts POSTs on any path; ``status`` is what it answers (503 while "down")."""

    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    refused: int = 0
    _runner: web.AppRunner | None = None
    _event: asyncio.Event | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status >= 300:
            self.refused += 1
            return web.Response(status=self.status, text="down")
        self.received.append(Received(request.path, dict(request.headers), body))
        if self._event:
            self._event.set()
        return web.Response(status=self.status, text="ok")

    async def start(self) -> RecordingReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._event = asyncio.Event()
        return self

    async def stop(self) -> None:
        if self._runner:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until ``count`` requests were accepted (or fail at the deadline)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self._event is not None
        while len(self.received) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"expected {count} deliveries, got {len(self.received)} in {timeout}s")
            self._event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), timeout=min(remaining, 0.2))
        return self.received
