"""Transport-independent ingest: admit, normalise off the loop, log durably, acknowledge.

Normalising runs on a small pool of worker threads (``ingest.decode_workers``), never on the
event loop that also serves the API, /healthz and the other receivers. With a write-ahead log
(the DuckDB store) each request goes: gunzip -> the native normaliser on the protobuf bytes
(OTLP/JSON is decoded and re-serialised to protobuf first, so there is one normaliser) ->
Arrow tables appended to the log (IPC encoding on the worker thread) -> acknowledged once the
log's group fdatasync covers it; a loader thread fills the store from the log. A request the
native side leaves to the Python reference (``Unsupported``) is normalised by it, counted in
``mlvigil_native_fallbacks_total``. Without a log (the PostgreSQL store: replicas on scratch
disks, docs/limits.md) the same native normaliser's tables are committed through
``IngestPipeline`` (binary COPY) and acknowledged at that commit.

How many requests hold memory at once is bounded by ``ingest.max_requests_in_flight``
(beyond it: ``Overloaded``, 429 / UNAVAILABLE with Retry-After), and how much of the log is
not loaded yet by ``ingest.log_max_bytes`` (beyond it: ``LogFull``, 503 / UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import Counter

from collector import native
from collector.normalize import Normalised, NormaliseOptions
from collector.otlp_decode import PROTOBUF, JsonLimits, decode, gunzip_limited
from collector.pipeline import IngestPipeline, Overloaded
from collector.wal import Payload, Position, WriteAheadLog, encode_parts, payload_of
from mlvigil.core.config import IngestConfig
from mlvigil.core.metrics import Telemetry
from mlvigil.core.os_thread import name_os_thread
from mlvigil.core.records import TABLES
from mlvigil.core.store import StoreUnavailable

T = TypeVar("T")


class Busy(Overloaded):
    """Every in-flight place is taken; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, in_flight: int) -> None:
        super().__init__(retry_after)
        self.args = (
            f"{in_flight} requests already in flight (ingest.max_requests_in_flight);"
            f" retry after {retry_after}s",
        )


@dataclass
class ExportResult:
    response: Message
    accepted: int
    rejected: int


def _response(signal: str, rejected: int, message: str) -> Message:
    if signal == "traces":
        resp: Message = ExportTraceServiceResponse()
        if rejected:
            resp.partial_success.rejected_spans = rejected
    elif signal == "metrics":
        resp = ExportMetricsServiceResponse()
        if rejected:
            resp.partial_success.rejected_data_points = rejected
    else:
        resp = ExportLogsServiceResponse()
        if rejected:
            resp.partial_success.rejected_log_records = rejected
    if rejected:
        resp.partial_success.error_message = message
    return resp


@dataclass
class _Logged:
    """One request normalised and queued for the log: ``durable`` is done at its fdatasync
    (None: no rows to log)."""

    result: Normalised
    durable: Future[Position] | None


class OtlpIngest:
    """Shared by the gRPC and HTTP receivers, the CloudEvents route and the in-process GPU agent."""

    def __init__(
        self,
        pipeline: IngestPipeline,
        telemetry: Telemetry,
        config: IngestConfig,
        *,
        wal: WriteAheadLog | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.telemetry = telemetry
        self.config = config
        self.wal = wal
        if wal is not None:
            native.require()
        self.fallbacks = Counter(
            "mlvigil_native_fallbacks",
            "OTLP requests the native normaliser left to the Python reference (rare shapes).",
            ["signal"],
            registry=telemetry.registry,
        )
        self.options = NormaliseOptions(
            keep_llm_content=config.keep_llm_content,
            keep_raw_spans=config.keep_raw_spans,
            max_content_chars=config.max_content_chars,
        )
        self.json_limits = JsonLimits(max_containers=config.max_json_containers)
        self._executor = ThreadPoolExecutor(
            config.decode_workers, thread_name_prefix="ingest-decode", initializer=name_os_thread
        )
        self._in_flight = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        """Hold one of the ``max_requests_in_flight`` places while a request is handled;
        Overloaded when none is free (and when the queue is full), before its body is read."""
        if self.pipeline.is_full():
            raise Overloaded(self.pipeline.retry_after)
        if self.wal is not None:
            self.wal.check_room()
        if self._in_flight >= self.config.max_requests_in_flight:
            raise Busy(self.pipeline.retry_after, self._in_flight)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a decode worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _durably(self, fn: Callable[..., Normalised | _Logged], *args: Any) -> Normalised | _Logged:
        """Run ``fn(*args)`` on a decode worker and, when it queued a log append, wait until
        that is durable too: one hop back to the loop for both (not one for the worker's
        result and another for the fdatasync). A client gone meanwhile cancels a job not yet
        started, never the log writer's future."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Normalised | _Logged] = loop.create_future()

        def settle(outcome: Normalised | _Logged | None, exc: BaseException | None) -> None:
            if waiter.cancelled():
                return
            if exc is not None:
                waiter.set_exception(exc)
            else:
                assert outcome is not None
                waiter.set_result(outcome)

        def hop(outcome: Normalised | _Logged | None, exc: BaseException | None) -> None:
            # The service's loop may be closed by the time a late group syncs: nobody waits then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, outcome, exc)

        def job() -> None:
            try:
                outcome = fn(*args)
            except BaseException as exc:  # every outcome reaches the waiter, or it waits forever
                hop(None, exc)
                return
            if isinstance(outcome, _Logged) and outcome.durable is not None:
                outcome.durable.add_done_callback(lambda _: hop(outcome, None))
            else:
                hop(outcome, None)

        started = self._executor.submit(job)
        waiter.add_done_callback(lambda w: w.cancelled() and started.cancel())
        return await waiter

    async def visible(self, timeout: float = 5.0, *, raw_spans: bool = True) -> None:
        """Wait (bounded) until the records of every request acknowledged so far are in the
        store: queries and evaluations read what was acknowledged before them. With
        ``raw_spans=False`` (a reader of the other tables) only for the log's primary loader
        pass, not the lower-priority one that loads the ``spans`` table."""
        if self.wal is None:
            return
        consumers = None if raw_spans else [self.wal.primary]
        if not self.wal.all_loaded(consumers):
            await asyncio.to_thread(self.wal.wait_loaded, timeout, consumers)

    def close(self) -> None:
        """Wait for the requests on the worker threads (their log appends) and stop them."""
        self._executor.shutdown(wait=True)

    def _decode_normalise(
        self, signal: str, chunks: bytes | list[bytes], content_type: str, gzipped: bool
    ) -> Normalised | _Logged:
        # A list: the chunks an HTTP body arrived in. Protobuf for the log goes to the native
        # normaliser as they are (it joins them without the GIL); otherwise joined here, off
        # the loop.
        if self.wal is not None and content_type == PROTOBUF and not gzipped:
            return self._log(signal, chunks, None)
        body = b"".join(chunks) if isinstance(chunks, list) else chunks
        if gzipped:
            body = gunzip_limited(body, self.config.max_request_bytes)
        if self.wal is not None:
            message = None
            if content_type != PROTOBUF:
                message = decode(signal, body, content_type, self.json_limits)
                body = message.SerializeToString()
            return self._log(signal, body, message)
        message = None
        if content_type != PROTOBUF:
            message = decode(signal, body, content_type, self.json_limits)
            body = message.SerializeToString()
        return self._direct(signal, body, message)

    def _normalise(self, signal: str, message: Message) -> Normalised | _Logged:
        if self.wal is not None:
            return self._log(signal, message.SerializeToString(), message)
        return self._direct(signal, message.SerializeToString(), message)

    def _direct(self, signal: str, body: bytes, message: Message | None) -> Normalised:
        """The path without a log (the PostgreSQL store; docs/limits.md says why): the same
        native normaliser, its Arrow tables as the rows ``IngestPipeline`` commits."""
        result, tables = self._native(signal, body, message)
        for name, table in tables.items():
            if not table.num_rows:
                continue
            cols = table.to_pydict()
            n = table.num_rows
            result.batch.columns[name] = {c.name: cols.get(c.name) or [None] * n for c in TABLES[name]}
        return result

    def _native(
        self, signal: str, body: bytes, message: Message | None
    ) -> tuple[Normalised, Mapping[str, Any]]:
        """Normalise protobuf ``body`` natively, or with the Python reference for a shape
        the native side leaves to it (counted); runs on a worker thread."""
        limit = self.config.max_items_per_request
        try:
            return native.scan(signal, body, self.options, limit)
        except Exception as exc:
            if not native.is_unsupported(exc):
                raise
            self.fallbacks.labels(signal=signal).inc()
            return native.reference(signal, message if message is not None else body, self.options, limit)

    def _native_log(
        self, signal: str, body: bytes | list[bytes], message: Message | None
    ) -> tuple[Normalised, Payload | None]:
        """``_native`` with the tables as one log record payload (None: no rows). Natively the
        payload is made in Rust (IPC and CRC without the GIL, no pyarrow objects); the
        reference's tables are encoded with pyarrow."""
        limit = self.config.max_items_per_request
        try:
            result, (data, crc) = native.scan_to_log(signal, body, self.options, limit)
            return result, payload_of(data, crc) if data else None
        except Exception as exc:
            if not native.is_unsupported(exc):
                raise
            self.fallbacks.labels(signal=signal).inc()
        source = message if message is not None else b"".join(body) if isinstance(body, list) else body
        result, tables = native.reference(signal, source, self.options, limit)
        tables = {name: t for name, t in tables.items() if t.num_rows}
        return result, encode_parts(tables) if tables else None

    def _log(self, signal: str, body: bytes | list[bytes], message: Message | None) -> _Logged:
        """Normalise protobuf ``body`` and queue its payload on the log; runs on a worker thread."""
        assert self.wal is not None
        result, payload = self._native_log(signal, body, message)
        del body
        if payload is None:
            return _Logged(result, None)
        return _Logged(result, self.wal.append(payload))

    async def export_bytes(
        self,
        signal: str,
        body: bytes | list[bytes],
        content_type: str,
        transport: str,
        *,
        gzipped: bool = False,
    ) -> ExportResult:
        """Decode, normalise and durably store one encoded export request (``body`` may be
        the chunks it arrived in: joined on the worker thread). Raises BadRequest,
        TooLarge, Overloaded/ShuttingDown, and StoreUnavailable (LogFull, a failed log write)."""
        t0 = time.perf_counter()
        result = await self._durably(self._decode_normalise, signal, body, content_type, gzipped)
        return await self._commit(signal, result, transport, t0)

    async def export(self, signal: str, request: Message, transport: str) -> ExportResult:
        """Normalise and durably store an already decoded ``request``."""
        t0 = time.perf_counter()
        result = await self._durably(self._normalise, signal, request)
        return await self._commit(signal, result, transport, t0)

    async def _commit(
        self, signal: str, outcome: Normalised | _Logged, transport: str, t0: float
    ) -> ExportResult:
        tel = self.telemetry
        result = outcome.result if isinstance(outcome, _Logged) else outcome
        tel.items_received.labels(signal=signal, transport=transport).inc(result.received)
        if isinstance(outcome, _Logged):
            if outcome.durable is not None:
                try:
                    # The acknowledgement point: the log's group fdatasync covering this request
                    # has returned (``_durably`` waited for it).
                    outcome.durable.result(timeout=0)
                except OSError as exc:
                    raise StoreUnavailable(
                        f"the write-ahead log could not be written: {exc}", self.config.retry_after_seconds
                    ) from None
        else:
            await self.pipeline.submit(result.batch, result.accepted)
        tel.items_accepted.labels(signal=signal, transport=transport).inc(result.accepted)
        for reason, n in result.reasons.items():
            tel.items_rejected.labels(signal=signal, transport=transport, reason=reason).inc(n)
        tel.request_duration.labels(signal=signal, transport=transport).observe(time.perf_counter() - t0)
        return ExportResult(
            _response(signal, result.rejected, result.error_message()), result.accepted, result.rejected
        )

    async def submit_metrics(self, request: Message) -> ExportResult:
        """For in-process producers (the GPU agent inside ``mlvigil serve``)."""
        return await self.export("metrics", request, "inprocess")
