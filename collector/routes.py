"""The collector's API routes: KServe / Seldon CloudEvents and label feedback.

Both hold an in-flight place like every other write (``OtlpIngest.admit``: 429 beyond
``ingest.max_requests_in_flight``) and answer 202 once what they carried is durable. The
API's middleware checks the token and the body limit for them as for every route.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import BaseModel, Field, JsonValue

from collector.cloudevents import ingest_event
from collector.labels import label_batch
from mlvigil.core.endpoint import (
    MAX_JSON_DEPTH,
    THREAD_PARSE_BYTES,
    ApiError,
    BodyModel,
    EpochSeconds,
    ListBody,
    Response,
    ShortText,
    endpoint,
    json_depth_exceeds,
    json_response,
)
from mlvigil.core.http_body import read_body

if TYPE_CHECKING:
    from collector.otlp_ingest import OtlpIngest
    from collector.pipeline import IngestPipeline
    from mlvigil.core.config import IngestConfig

#: Most labels accepted in one POST /api/v1/labels.
MAX_LABELS_PER_REQUEST = 10_000


class LabelIn(BodyModel):
    request_id: str = Field(min_length=1, max_length=256, description="The prediction's request id.")
    label: JsonValue = Field(description="The ground truth: any JSON value.")
    ts: EpochSeconds | None = Field(None, description="When the label was known (default: now).")
    service: ShortText | None = None
    model: ShortText | None = None


class LabelsBody(ListBody):
    """``{"labels": [...]}`` or the bare list."""

    list_key = "labels"
    labels: list[LabelIn] = Field(min_length=1, max_length=MAX_LABELS_PER_REQUEST)


class AcceptedOut(BaseModel):
    accepted: int


def routes(ingest: OtlpIngest, pipeline: IngestPipeline, limits: IngestConfig) -> list[web.RouteDef]:
    @endpoint(
        "KServe / Seldon payload-logger CloudEvents (binary or structured mode).",
        description="The body is the CloudEvent's data (binary mode, ce-* headers) or the whole event"
        " (structured mode, application/cloudevents+json).",
        ok={202: Response("Stored.", AcceptedOut)},
        errors=(400, 413, 415, 429, 503),
        raw_body={
            "application/json": {"description": "KServe V1/V2 or Seldon payload (binary mode)."},
            "application/cloudevents+json": {"type": "object", "description": "A structured CloudEvent."},
        },
    )
    async def cloudevents(request: web.Request) -> web.Response:
        with ingest.admit():
            body = await read_body(request, limits.max_request_bytes, limits.read_timeout)
            too_deep = (
                await asyncio.to_thread(json_depth_exceeds, body, MAX_JSON_DEPTH)
                if len(body) > THREAD_PARSE_BYTES
                else json_depth_exceeds(body, MAX_JSON_DEPTH)
            )
            if too_deep:
                raise ApiError(400, f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
            accepted = await ingest_event(ingest, request.headers, body, time.time())
        return json_response({"accepted": accepted}, 202)

    @endpoint(
        "Label feedback: ground truth joined later to predictions by request id.",
        body=LabelsBody,
        ok={202: Response("Stored.", AcceptedOut)},
        errors=(429, 503),
    )
    async def labels(request: web.Request, body: LabelsBody) -> web.Response:
        # Overloaded (429) and ShuttingDown (503) answer through error_response.
        with ingest.admit():
            await pipeline.submit(label_batch(body.labels, time.time()))
        return json_response({"accepted": len(body.labels)}, 202)

    return [
        web.post("/api/v1/ingest/cloudevents", cloudevents),
        web.post("/api/v1/labels", labels),
    ]
