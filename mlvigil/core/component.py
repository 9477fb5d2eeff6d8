"""The lifecycle every component of the service follows."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Component(Protocol):
    """Started once, stopped once, in the order the service builds them (stopped in reverse)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
