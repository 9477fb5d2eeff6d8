"""Drift statistics in worker processes, so that evaluating monitors never takes the GIL (or
the CPU share) that ingest needs.

A monitor reads its window in the service (the store belongs to the service process), then
ships the window's feature values to a worker, which runs ``compare.feature_results`` (the
sorts, tests and counts) and sends the results back; the correction and the verdict are
decided in the service. A worker keeps the feature profiles it was sent (most recently used
first, ``MAX_WORKER_PROFILES``), so a steady evaluation ships only the window. Workers run
at a lower CPU priority (``calibration.WORKER_NICE``): on a small machine ingest keeps the
CPU and the statistics take what is left, before calibrations (idle scheduling class).

A worker that dies (killed, out of memory) costs one retry in a fresh pool; one that takes
longer than ``timeout`` is stopped with its pool and the evaluation fails (the monitor's
status says so, its findings stay as they were, the next interval tries again). Neither
stops the service.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from detectors.drift.calibration import worker_init, worker_nice
from detectors.drift.compare import FeaturePlan, FeatureResult, feature_results
from detectors.drift.min_p import Member
from detectors.drift.profile import FeatureProfile, ReferenceProfile

log = logging.getLogger(__name__)

#: Feature profiles a worker keeps (one per monitor reference; a 25-feature profile of a
#: 10k-row reference is ~2 MB). A monitor whose profile was dropped sends it again.
MAX_WORKER_PROFILES = 256
#: Evaluations waiting for or running in a worker, per worker; more wait in their thread.
QUEUE_PER_WORKER = 2

_MISSING_PROFILE = "missing-profile"
# In a worker: the feature profiles it was sent, by token.
_profiles: OrderedDict[str, Mapping[str, FeatureProfile]] = OrderedDict()


class StatisticsUnavailable(RuntimeError):
    """The statistics of one window could not be computed in a worker (timed out, or the
    worker died twice); the evaluation is tried again at the monitor's next interval."""


def _run(
    token: str,
    features: Mapping[str, FeatureProfile] | None,
    current: Mapping[str, Sequence[Any] | np.ndarray],
    plan: FeaturePlan,
) -> tuple[str, list[FeatureResult], list[Member], int]:
    """In a worker: the window's feature results, or ``_MISSING_PROFILE`` when this worker
    does not hold the profile (the caller sends it)."""
    if features is not None:
        _profiles[token] = features
        while len(_profiles) > MAX_WORKER_PROFILES:
            _profiles.popitem(last=False)
    held = _profiles.get(token)
    if held is None:
        return _MISSING_PROFILE, [], [], os.getpid()
    _profiles.move_to_end(token)
    results, family = feature_results(held, current, plan)
    return "", results, family, os.getpid()


class StatisticsWorkers:
    """A bounded pool of ``workers`` processes running the drift statistics of windows.

    ``run`` is what a monitor passes as ``CompareOptions.run_tests``. A component of the
    service: ``start`` starts the processes, ``stop`` ends them."""

    name = "drift-statistics"

    def __init__(self, workers: int, timeout: float = 120.0) -> None:
        self.workers = max(1, workers)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._queue = threading.BoundedSemaphore(self.workers * QUEUE_PER_WORKER)
        self._tokens = itertools.count()
        self._closed = False
        #: Pools replaced after a worker died or stalled (for status and tests).
        self.restarts = 0

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise StatisticsUnavailable("the statistics workers are stopped")
            if self._pool is None:
                # spawn, not fork: the service runs threads (DuckDB, the event loop) that a
                # forked child would inherit in whatever state they were.
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=worker_init,
                    initargs=(os.getpid(), worker_nice()),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Stop a pool whose worker died or stalled; the next call starts a fresh one."""
        with self._lock:
            if self._pool is not pool:
                return  # another thread replaced it already
            self._pool = None
            self.restarts += 1
        for proc in list((pool._processes or {}).values()):
            # A stalled worker never finishes its task: stop it rather than wait.
            proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def _token(self, profile: ReferenceProfile) -> str:
        # Kept on the profile: a new reference (a new profile) gets a new token.
        token: Any = profile.null_cache.get(("workers-token",))
        if token is None:
            token = f"{os.getpid()}:{next(self._tokens)}"
            profile.null_cache[("workers-token",)] = token
        return str(token)

    def run(
        self,
        profile: ReferenceProfile,
        current: Mapping[str, Sequence[Any] | np.ndarray],
        plan: FeaturePlan,
    ) -> tuple[list[FeatureResult], list[Member], int]:
        """``feature_results`` of one window in a worker, and that worker's process id."""
        token = self._token(profile)
        window = {name: current[name] for name in plan.names if name in current}
        if not self._queue.acquire(timeout=self.timeout):
            raise StatisticsUnavailable(f"no statistics worker free within {self.timeout:g} s")
        deadline = time.monotonic() + self.timeout
        try:
            for attempt in range(2):
                pool = self._executor()
                try:
                    missing, results, family, pid = self._call(pool, token, None, window, plan, deadline)
                    if missing:
                        features = {name: profile.features[name] for name in plan.names}
                        _, results, family, pid = self._call(pool, token, features, window, plan, deadline)
                    return results, family, pid
                except BrokenProcessPool:
                    # A worker died (killed, out of memory): once more in a fresh pool.
                    self._discard(pool)
                    if attempt:
                        raise StatisticsUnavailable("a statistics worker died twice on this window") from None
                    log.warning("a drift statistics worker died; its pool is restarted")
                except FutureTimeout:
                    self._discard(pool)
                    raise StatisticsUnavailable(
                        f"the statistics of this window took longer than {self.timeout:g} s "
                        "(detectors.drift.statistics_timeout); the worker was stopped"
                    ) from None
            raise AssertionError("unreachable")
        finally:
            self._queue.release()

    def _call(
        self,
        pool: ProcessPoolExecutor,
        token: str,
        features: Mapping[str, FeatureProfile] | None,
        window: Mapping[str, Sequence[Any] | np.ndarray],
        plan: FeaturePlan,
        deadline: float,
    ) -> tuple[str, list[FeatureResult], list[Member], int]:
        try:
            fut: Future[tuple[str, list[FeatureResult], list[Member], int]] = pool.submit(
                _run, token, features, window, plan
            )
        except RuntimeError as exc:  # shut down by another thread's _discard meanwhile
            raise BrokenProcessPool(str(exc)) from exc
        return fut.result(timeout=max(deadline - time.monotonic(), 0.0))

    def pids(self) -> list[int]:
        """The worker processes now running (for status and tests)."""
        with self._lock:
            pool = self._pool
        return sorted(p.pid for p in (pool._processes or {}).values() if p.pid) if pool else []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            for proc in list((pool._processes or {}).values()):
                proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["StatisticsUnavailable", "StatisticsWorkers"]
