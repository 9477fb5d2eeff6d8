"""What the service hands to its components: shared handles, never another component's insides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp import web

    from mlvigil.core.component import Component
    from mlvigil.core.config import Config
    from mlvigil.core.detector_loop import DetectorLoop
    from mlvigil.core.finding_book import FindingBook
    from mlvigil.core.metrics import Telemetry
    from mlvigil.core.store import Store


@dataclass
class ServiceContext:
    config: Config
    store: Store
    telemetry: Telemetry
    book: FindingBook
    detector_loop: DetectorLoop
    # Extra API routes contributed by components (alerts, retrain, monitors, ...).
    routes: list[web.RouteDef] = field(default_factory=list)
    # Named objects components expose to each other through the service (e.g. "ingest").
    services: dict[str, Any] = field(default_factory=dict)
    # Components that take data from outside (the OTLP receivers): started after every other
    # component and the API, stopped before them, so nothing arrives after the writers drain.
    listeners: list[Component] = field(default_factory=list)
    # Callbacks run by the service after all components started.
    on_started: list[Callable[[], Any]] = field(default_factory=list)
    # Why a component other than the store cannot take writes now (None: it can), read by
    # /readyz beside the store's own reason: the write-ahead log, which acknowledges ingest.
    # Called on a worker thread; must answer without waiting for writes in progress.
    readiness: list[Callable[[], str | None]] = field(default_factory=list)
