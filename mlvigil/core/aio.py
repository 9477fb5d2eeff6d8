"""Small asyncio helpers for background loops that must stop promptly and never hang.

On Python 3.11 ``asyncio.wait_for(event.wait(), t)`` swallows a cancellation that arrives
in the same loop iteration as the event being set (it returns the inner result instead of
raising), so a loop that waits that way and is stopped by ``task.cancel()`` can run on
forever. ``wait_event`` uses ``asyncio.timeout`` instead, which always delivers the
cancellation; ``stop_task`` does not rely on cancellation alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True if it is set.

    A cancellation of the caller is always raised, even when the event is set at the same
    moment (the case ``asyncio.wait_for`` gets wrong on 3.11).
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(timeout, 0.0)):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


async def stop_task(task: asyncio.Task[Any] | None, *, grace: float = 10.0) -> None:
    """Cancel ``task`` and wait for it to end, re-cancelling until it does.

    The loop should also check a stop flag of its own after every wake; this is the backstop
    for code that swallows one cancellation (a library, a ``wait_for`` on 3.11): the task is
    cancelled again each time it is seen still running, so ``stop`` cannot hang on it.
    """
    if task is None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=min(0.1, max(deadline - loop.time(), 0.0)))
        if loop.time() >= deadline and not task.done():
            log.error("task %s did not stop within %.1fs of being cancelled", task.get_name(), grace)
            return
    if not task.cancelled():
        exc = task.exception()
        if exc is not None:
            log.error("task %s ended with an error", task.get_name(), exc_info=exc)
