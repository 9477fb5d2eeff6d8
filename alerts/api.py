"""API routes of the alerts component (JSON under /api/v1/alerts)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from alerts.engine import AlertService
from mlvigil.config import parse_duration


def _summary(doc: dict[str, Any], with_payload: bool) -> dict[str, Any]:
    out = {k: doc[k] for k in ("id", "target", "state", "created_at", "expires_at", "delivered_at", "meta")}
    out["next_attempt_at"] = doc["next_attempt_at"] if doc["state"] == "pending" else None
    out["attempts"] = doc["attempts"]
    if with_payload:
        out["payload"] = doc["payload"]
    return out


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


def routes(service: AlertService) -> list[web.RouteDef]:
    async def list_alerts(request: web.Request) -> web.Response:
        q = request.query
        try:
            limit = int(q.get("limit", "200"))
        except ValueError:
            return _bad("limit must be an integer")
        notifications = service.outbox.messages(state=q.get("state"), target=q.get("receiver"), limit=limit)
        with_payload = q.get("payload", "false").lower() in ("1", "true", "yes")
        return web.json_response(
            {
                "alerts": service.current_alerts(),
                "notifications": [_summary(d, with_payload) for d in notifications],
                "counts": service.outbox.counts(),
            }
        )

    async def list_mutes(request: web.Request) -> web.Response:
        expired = request.query.get("expired", "false").lower() in ("1", "true", "yes")
        return web.json_response({"mutes": service.mutes(include_expired=expired)})

    async def create_mute(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _bad("body must be JSON")
        if not isinstance(body, dict) or not isinstance(body.get("matchers"), list):
            return _bad('expected {"matchers": [...], "duration": "1h" | "ends_at": <epoch seconds>}')
        try:
            duration = parse_duration(body["duration"]) if "duration" in body else None
            ends_at = float(body["ends_at"]) if body.get("ends_at") is not None else None
            starts_at = float(body["starts_at"]) if body.get("starts_at") is not None else None
            mute = service.add_mute(
                body["matchers"],
                duration=duration,
                ends_at=ends_at,
                starts_at=starts_at,
                comment=str(body.get("comment", "")),
                created_by=str(body.get("created_by", "")),
            )
        except (ValueError, TypeError) as exc:
            return _bad(str(exc))
        return web.json_response(mute.to_dict(), status=201)

    async def delete_mute(request: web.Request) -> web.Response:
        if service.delete_mute(request.match_info["mute_id"]):
            return web.json_response({"deleted": request.match_info["mute_id"]})
        return web.json_response({"error": "no such mute"}, status=404)

    return [
        web.get("/api/v1/alerts", list_alerts),
        web.get("/api/v1/alerts/mutes", list_mutes),
        web.post("/api/v1/alerts/mutes", create_mute),
        web.delete("/api/v1/alerts/mutes/{mute_id}", delete_mute),
    ]
