"""The ``ingest`` section's plugin: the ingest path and the OTLP receivers.

``build`` makes the ingest pipeline (the writer every receiver submits to), the write-ahead
log and its loader thread (embedded DuckDB store only, see ``collector.loader.loader_for``:
PostgreSQL replicas share no local log), and the OTLP/HTTP and OTLP/gRPC receivers on
``server.otlp_http_addr`` / ``server.otlp_grpc_addr``, and adds the CloudEvents and label
routes to the API (``collector.routes``). Its section is the existing ``ingest`` one (model
``IngestConfig``, in the kernel's config beside ``server``).

Order: the pipeline and the log are returned as components, so they start with the other
plugins' parts and before anything that submits (the GPU agent, the API with the CloudEvents
and label routes); the receivers go on ``ctx.listeners``, which the service starts after every
component and the API, and stops first, so nothing is received after the log is drained.
Shared with the rest of the service: ``ctx.services["ingest"]`` (``OtlpIngest``: admission,
CloudEvents, in-process metrics), ``["pipeline"]`` and the receivers ``["otlp_http"]`` and
``["otlp_grpc"]`` (their bound ports).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from mlvigil.core.plugin import Plugin

if TYPE_CHECKING:
    from collector.llm_metrics import LlmTrafficMetrics
    from collector.loader import DuckDBLoader, IngestLog
    from collector.wal import WriteAheadLog
    from mlvigil.core.component import Component
    from mlvigil.core.config import IngestConfig
    from mlvigil.core.context import ServiceContext


def build(ingest: IngestConfig, ctx: ServiceContext) -> list[Component]:
    from collector.grpc_receiver import OtlpGrpcReceiver
    from collector.http_receiver import OtlpHttpReceiver
    from collector.llm_metrics import LlmTrafficMetrics
    from collector.loader import loader_for
    from collector.otlp_ingest import OtlpIngest
    from collector.pipeline import IngestPipeline
    from collector.routes import routes

    server = ctx.config.server
    token = server.auth_token.resolve() if server.auth_token else None
    llm_metrics = LlmTrafficMetrics(ctx.telemetry.registry)
    pipeline = IngestPipeline(
        ctx.store,
        ctx.telemetry,
        max_items=ingest.queue_max_items,
        retry_after=ingest.retry_after_seconds,
        on_committed=llm_metrics.observe,
    )
    parts: list[Component] = [pipeline]
    target = loader_for(ctx.store)
    if target is not None:
        # OTLP goes through the write-ahead log, loaded into the store by a loader thread.
        ingest_log, wal = _ingest_log(ingest, ctx, target, lambda: otlp.close(), llm_metrics)
        otlp = OtlpIngest(pipeline, ctx.telemetry, ingest, wal=wal)
        parts.append(ingest_log)
        ctx.readiness.append(wal.unavailable_reason)
    else:
        otlp = OtlpIngest(pipeline, ctx.telemetry, ingest)
    http = OtlpHttpReceiver(otlp, server.otlp_http_addr, ingest.max_request_bytes, token)
    grpc = OtlpGrpcReceiver(otlp, server.otlp_grpc_addr, ingest.max_request_bytes, token)
    ctx.services.update(ingest=otlp, pipeline=pipeline, otlp_http=http, otlp_grpc=grpc)
    ctx.listeners.extend([grpc, http])
    ctx.routes.extend(routes(otlp, pipeline, ingest))  # CloudEvents and labels, on the API
    return parts


def _ingest_log(
    ingest: IngestConfig,
    ctx: ServiceContext,
    target: DuckDBLoader,
    before_close: Callable[[], None],
    llm_metrics: LlmTrafficMetrics,
) -> tuple[IngestLog, WriteAheadLog]:
    from collector.loader import IngestLog, LoaderThread
    from collector.wal import PASSES, WriteAheadLog

    wal = WriteAheadLog(
        ingest.log_dir or ctx.config.storage.data_dir / "wal",
        segment_bytes=ingest.log_segment_bytes,
        max_bytes=ingest.log_max_bytes,
        retry_after=ingest.retry_after_seconds,
        consumers=tuple(PASSES),
    )
    written = ctx.telemetry.records_written

    def count(tables: Mapping[str, Any]) -> None:
        # On the loader thread, once per loaded group (up to loader_max_records requests):
        # the Arrow aggregation's fixed cost is paid per group, not per request.
        for name, table in tables.items():
            written.labels(table=name).inc(table.num_rows)
        llm_metrics.observe_arrow(tables)

    def loader() -> LoaderThread:
        return LoaderThread(
            wal,
            target,
            max_records=ingest.loader_max_records,
            registry=ctx.telemetry.registry,
            on_loaded=count,
        )

    return IngestLog(wal, loader, before_close), wal


PLUGIN = Plugin(name="collector", section=("ingest",), config="mlvigil.core.config:IngestConfig", build=build)
