"""``mlvigil serve``: receivers -> normalise -> store -> detectors -> exporters, in one process."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import signal
import sys
import time
from typing import Any

import pyarrow as pa

from collector.native import NotBuilt
from mlvigil.app.api import Api
from mlvigil.app.plugins import PLUGINS
from mlvigil.core.aio import stop_task
from mlvigil.core.component import Component
from mlvigil.core.config import Config, ConfigError
from mlvigil.core.context import ServiceContext
from mlvigil.core.detector import Detector
from mlvigil.core.detector_loop import DetectorLoop
from mlvigil.core.finding_book import FindingBook
from mlvigil.core.metrics import Telemetry
from mlvigil.core.store import Store, open_configured

log = logging.getLogger("mlvigil")


class RetentionTask:
    name = "retention"

    def __init__(self, store: Store, retention: dict[str, float], interval: float) -> None:
        self._store = store
        self._retention = retention
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def run_once(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        return self._store.apply_retention({t: now - keep for t, keep in self._retention.items()})

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except Exception:
                log.exception("retention pass failed")
            await asyncio.sleep(self._interval)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.telemetry = Telemetry()
        self.store: Store | None = None
        self.components: list[Component] = []
        self.ctx: ServiceContext | None = None
        self.api: Api | None = None

    async def start(self) -> None:
        cfg = self.config
        store = open_configured(cfg.storage)
        self.store = store
        coordinator = None
        if cfg.storage.backend == "postgres":
            from mlvigil.core.coordination import Coordinator

            # Replicas share the store: each runs its leased share of the detectors and claims
            # outbox messages before sending them (docs/scale-out.md).
            coordinator = Coordinator(store, cfg.storage.lease_ttl)  # type: ignore[arg-type]
            store.coordinator = coordinator  # type: ignore[attr-defined]
        book = FindingBook(store, self.telemetry)
        loop = DetectorLoop(
            store, book, [], cfg.detectors.interval, workers=cfg.detectors.workers, telemetry=self.telemetry
        )
        if coordinator is not None:
            loop.share(coordinator)
        ctx = ServiceContext(config=cfg, store=store, telemetry=self.telemetry, book=book, detector_loop=loop)
        self.ctx = ctx
        # Each plugin's parts, from its section (validated once, when the config was loaded).
        extras: list[Component] = []
        for plugin in PLUGINS:
            if plugin.build is None:
                continue  # adds only commands
            try:
                built = plugin.build(plugin.section_of(cfg), ctx)
            except ValueError as exc:
                # A builder raises ValueError for a setting it cannot use (an unknown country,
                # codecarbon missing): a configuration error, reported in one line.
                raise ConfigError(f"config: {'.'.join(plugin.section)}: {exc}") from None
            for item in built:
                if isinstance(item, Detector):
                    loop.add(item)
                else:
                    extras.append(item)

        token = cfg.server.auth_token.resolve() if cfg.server.auth_token else None
        self.api = Api(ctx, ctx.services["pipeline"], token)
        retention = RetentionTask(store, cfg.storage.retention, cfg.storage.retention_interval)
        # Start order: each plugin's parts in registry order (the collector's pipeline and
        # write-ahead log first: the writers before anything that submits), the detector loop
        # and retention, the API, and the listeners (the OTLP receivers) last. Stop order is
        # the reverse: receivers first, then the API, the loop, and the plugins' parts (the
        # log drains what was acknowledged).
        ordered: list[Component] = [*extras, loop, retention, self.api, *ctx.listeners]
        if coordinator is not None:
            ordered.insert(0, coordinator)  # leases before the loop shares detectors by them
        for comp in ordered:
            await comp.start()
            self.components.append(comp)
        for callback in ctx.on_started:
            result = callback()
            if asyncio.iscoroutine(result):
                await result
        self.api.ready = True

    def addresses(self) -> dict[str, Any]:
        assert self.api and self.ctx
        return {
            "api": self.api.port,
            "otlp_http": self.ctx.services["otlp_http"].port,
            "otlp_grpc": self.ctx.services["otlp_grpc"].port,
            "data_dir": str(self.config.storage.data_dir),
        }

    async def stop(self) -> None:
        """Stop taking data, commit all that was acknowledged, then stop the rest."""
        if self.api:
            self.api.ready = False
        for comp in reversed(self.components):
            try:
                await comp.stop()
            except Exception:
                log.exception("stopping %s failed", getattr(comp, "name", comp))
        self.components.clear()
        if self.store:
            self.store.close()
            self.store = None


def tune_allocator() -> None:
    """Keep glibc from trimming the heap / mmapping afresh for each ~1 MB request buffer
    (it swings the per-request cost 3-4x): trim only above 256 MiB free, mmap only above
    32 MiB (glibc's largest). A no-op off glibc. pyarrow allocates from the same tuned heap
    (its system pool) instead of its bundled mimalloc, which handed pages back and faulted
    them in again each load: the server's CPU per request 10.3 ms against 11.3 on average
    over 4 alternated pairs (bench/ingest/RESULTS.txt), the same peak RSS under overload."""
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_trim_threshold, 256 * 1024 * 1024)
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)


async def serve(config: Config) -> int:
    tune_allocator()
    service = Service(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await service.start()
    except (OSError, NotBuilt) as exc:
        print(f"mlvigil: cannot start: {exc}", file=sys.stderr)
        await service.stop()
        return 2
    except ConfigError as exc:
        print(f"mlvigil: invalid configuration:\n{exc}", file=sys.stderr)
        await service.stop()
        return 2
    # One machine-readable line so supervisors and tests learn the bound ports.
    print("MLVIGIL_READY " + json.dumps(service.addresses()), flush=True)
    log.info("mlvigil serving: %s", service.addresses())
    await stop.wait()
    log.info("shutting down: draining acknowledged data")
    await service.stop()
    return 0
