"""API routes of the alerts component (JSON under /api/v1/alerts).

Requests are validated by the models below (``mlvigil.core.endpoint``), which also describe the
routes in ``/openapi.json``.
"""

from __future__ import annotations

from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, Field, field_validator, model_validator

from alerts.pipeline import AlertService
from mlvigil.core.config import parse_duration
from mlvigil.core.endpoint import ApiError, BodyModel, QueryModel, Response, endpoint, json_response
from mlvigil.core.outbox import DELIVERED, DELIVERING, EXPIRED, FAILED, PENDING, Message

#: Most matchers in one mute, and the longest matcher (a regex is matched on every alert).
MAX_MATCHERS = 64
MAX_MATCHER_CHARS = 1024

OutboxState = Annotated[str, Field(pattern=f"^({PENDING}|{DELIVERING}|{DELIVERED}|{FAILED}|{EXPIRED})$")]


def _summary(msg: Message, with_payload: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": msg.id,
        "target": msg.target,
        "state": msg.state,
        "created_at": msg.created_at,
        "expires_at": msg.expires_at,
        "delivered_at": msg.delivered_at,
        "meta": msg.meta,
        "next_attempt_at": msg.next_attempt_at if msg.state == PENDING else None,
        "attempts": [a.to_doc() for a in msg.attempts],
    }
    if with_payload:
        out["payload"] = msg.payload
    return out


class AlertsQuery(QueryModel):
    state: OutboxState | None = Field(None, description="Only notifications in this delivery state.")
    receiver: str | None = Field(None, max_length=256, description="Only notifications to this receiver.")
    limit: int = Field(200, ge=1, le=10_000, description="Most notifications returned, newest first.")
    payload: bool = Field(False, description="Include each notification's payload.")


class MutesQuery(QueryModel):
    expired: bool = Field(False, description="Include mutes that have ended.")


class MatcherObject(BodyModel):
    """An Alertmanager API v2 matcher."""

    name: str = Field(max_length=256)
    value: str = Field(max_length=MAX_MATCHER_CHARS)
    isRegex: bool = False  # Alertmanager's field names
    isEqual: bool = True


Matcher = Annotated[str, Field(max_length=MAX_MATCHER_CHARS)] | MatcherObject


class MuteIn(BodyModel):
    """A mute: matchers and either a duration or an end time."""

    matchers: list[Matcher] = Field(
        min_length=1,
        max_length=MAX_MATCHERS,
        description='Label matchers such as model="fraud" or service=~"api-.*", or Alertmanager objects.',
    )
    duration: str | float | None = Field(None, description="How long, e.g. 30m or 2h.")
    ends_at: float | None = Field(None, description="End, epoch seconds (instead of duration).")
    starts_at: float | None = Field(None, description="Start, epoch seconds (default: now).")
    comment: str = Field("", max_length=4096)
    created_by: str = Field("", max_length=256)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_duration(value)  # a ValueError here names the accepted forms
        return value

    @model_validator(mode="after")
    def _one_end(self) -> MuteIn:
        if self.duration is not None and self.ends_at is not None:
            raise ValueError("give duration or ends_at, not both")
        return self


class MutePath(BaseModel):
    mute_id: str = Field(min_length=1, max_length=128)


def routes(service: AlertService) -> list[web.RouteDef]:
    @endpoint("Firing alerts and recent notifications with their delivery state.", query=AlertsQuery)
    async def list_alerts(request: web.Request, query: AlertsQuery) -> web.Response:
        notifications = service.outbox.messages(state=query.state, target=query.receiver, limit=query.limit)
        return json_response(
            {
                "alerts": service.current_alerts(),
                "notifications": [_summary(d, query.payload) for d in notifications],
                "counts": service.outbox.counts(),
            }
        )

    @endpoint("Active mutes (and ended ones with expired=true).", query=MutesQuery)
    async def list_mutes(request: web.Request, query: MutesQuery) -> web.Response:
        return json_response({"mutes": service.mutes(include_expired=query.expired)})

    @endpoint(
        "Mute alerts whose labels match every matcher, for a duration or until ends_at.",
        body=MuteIn,
        ok={201: Response("The mute.")},
    )
    async def create_mute(request: web.Request, body: MuteIn) -> web.Response:
        matchers = [m.model_dump() if isinstance(m, MatcherObject) else m for m in body.matchers]
        try:
            mute = service.add_mute(
                matchers,
                duration=None if body.duration is None else parse_duration(body.duration),
                ends_at=body.ends_at,
                starts_at=body.starts_at,
                comment=body.comment,
                created_by=body.created_by,
            )
        except (ValueError, TypeError) as exc:
            raise ApiError(400, f"body: {exc}") from None
        return json_response(mute.to_dict(), status=201)

    @endpoint("Delete a mute.", path=MutePath, errors=(404,))
    async def delete_mute(request: web.Request, path: MutePath) -> web.Response:
        if service.delete_mute(path.mute_id):
            return json_response({"deleted": path.mute_id})
        raise ApiError(404, f"no such mute {path.mute_id!r}; GET /api/v1/alerts/mutes lists them")

    return [
        web.get("/api/v1/alerts", list_alerts),
        web.get("/api/v1/alerts/mutes", list_mutes),
        web.post("/api/v1/alerts/mutes", create_mute),
        web.delete("/api/v1/alerts/mutes/{mute_id}", delete_mute),
    ]
