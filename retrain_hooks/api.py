"""API routes of the retrain component."""

from __future__ import annotations

from aiohttp import web

from retrain_hooks.engine import RetrainService


def routes(service: RetrainService) -> list[web.RouteDef]:
    async def list_triggers(request: web.Request) -> web.Response:
        q = request.query
        return web.json_response({"triggers": service.triggers(status=q.get("status"), model=q.get("model"))})

    async def decide(request: web.Request, approve: bool) -> web.Response:
        body: dict[str, str] = {}
        if request.can_read_body:
            try:
                raw = await request.json()
            except ValueError:
                return web.json_response({"error": "body must be JSON"}, status=400)
            body = raw if isinstance(raw, dict) else {}
        tid = request.match_info["trigger_id"]
        action = service.approve if approve else service.reject
        try:
            doc = action(tid, str(body.get("by", "")), str(body.get("note", "")))
        except KeyError:
            return web.json_response({"error": "no such trigger"}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return web.json_response(doc)

    async def approve(request: web.Request) -> web.Response:
        return await decide(request, True)

    async def reject(request: web.Request) -> web.Response:
        return await decide(request, False)

    return [
        web.get("/api/v1/retrain/triggers", list_triggers),
        web.post("/api/v1/retrain/triggers/{trigger_id}/approve", approve),
        web.post("/api/v1/retrain/triggers/{trigger_id}/reject", reject),
    ]
