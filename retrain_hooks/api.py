"""API routes of the retrain component; requests validated by the models below (``mlvigil.core.endpoint``)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, Field

from mlvigil.core.endpoint import ApiError, BodyModel, QueryModel, endpoint, json_response
from retrain_hooks.service import RetrainService


class TriggersQuery(QueryModel):
    status: str | None = Field(
        None, pattern=r"^[a-z_]{1,32}$", description="Only triggers in this status, e.g. pending_approval."
    )
    model: str | None = Field(None, max_length=256, description="Only triggers of this model.")


class TriggerPath(BaseModel):
    trigger_id: str = Field(min_length=1, max_length=128)


class Decision(BodyModel):
    """Who decided and why (both optional; the body may be omitted)."""

    by: str = Field("", max_length=256)
    note: str = Field("", max_length=4096)


def routes(service: RetrainService) -> list[web.RouteDef]:
    @endpoint("Retrain triggers, newest first, with their history.", query=TriggersQuery)
    async def list_triggers(request: web.Request, query: TriggersQuery) -> web.Response:
        return json_response({"triggers": service.triggers(status=query.status, model=query.model)})

    async def decide(path: TriggerPath, body: Decision | None, approve: bool) -> web.Response:
        decision = body or Decision(by="", note="")
        action = service.approve if approve else service.reject
        try:
            doc = action(path.trigger_id, decision.by, decision.note)
        except KeyError:
            raise ApiError(404, f"no such trigger {path.trigger_id!r}") from None
        except ValueError as exc:
            raise ApiError(409, str(exc)) from None
        return json_response(doc)

    @endpoint(
        "Approve a trigger waiting for approval.",
        path=TriggerPath,
        body=Decision,
        body_required=False,
        errors=(404, 409),
    )
    async def approve(request: web.Request, path: TriggerPath, body: Decision | None) -> web.Response:
        return await decide(path, body, True)

    @endpoint(
        "Reject a trigger waiting for approval.",
        path=TriggerPath,
        body=Decision,
        body_required=False,
        errors=(404, 409),
    )
    async def reject(request: web.Request, path: TriggerPath, body: Decision | None) -> web.Response:
        return await decide(path, body, False)

    return [
        web.get("/api/v1/retrain/triggers", list_triggers),
        web.post("/api/v1/retrain/triggers/{trigger_id}/approve", approve),
        web.post("/api/v1/retrain/triggers/{trigger_id}/reject", reject),
    ]
