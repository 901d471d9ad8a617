"""``/v1/webhooks``: receivers of the outcome feed, their deliveries, replays (role admin)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from riskmodel import units
from riskmodel.store import (
    add_webhook,
    deliveries,
    list_webhooks,
    outcomes,
    reading,
    replay_from,
    stop_webhook,
    webhook,
)
from serving.deps import Admin, CurrentRuntime
from serving.errors import NotFound, documented_errors
from serving.schemas import DeliveriesOut, ReplayIn, WebhookIn, WebhookOut, WebhooksOut

__all__ = ["deliveries_of", "register", "replay", "router", "stop", "webhooks"]

router = APIRouter(prefix="/v1", tags=["outcomes"])

HookId = Annotated[int, Path(ge=1, le=2**31 - 1)]
_ONE = documented_errors(401, 403, 404, 422, 503, meanings={404: "no such webhook"})


def _render(row: dict[str, Any], *, secret: bool = False) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "secret": row["secret"] if secret else None,
        "created_at": units.stamp(row["created_at"]),
        "created_by": row["created_by"],
        "delivered_through": row["delivered_through"],
        "attempts": row["attempts"],
        "next_attempt_at": units.stamp(row["next_attempt_at"]),
        "last_error": row["last_error"],
        "disabled_at": units.stamp(row["disabled_at"]),
    }


def _now() -> int:
    return units.micros(datetime.now(UTC))


@router.post(
    "/webhooks",
    response_model=WebhookOut,
    status_code=201,
    responses=documented_errors(400, 401, 403, 413, 422, 503),
)
async def register(body: WebhookIn, runtime: CurrentRuntime, caller: Admin) -> JSONResponse:
    """Register a receiver of the outcome feed. Its secret, for checking each delivery's
    signature, is in this answer only."""
    engine = runtime.store.required()
    with engine.begin() as conn:
        after = body.after
        if after is None:
            after = conn.execute(select(func.coalesce(func.max(outcomes.c.seq), 0))).scalar_one()
        hook_id = add_webhook(conn, body.url, secrets.token_hex(32), caller.name, _now(), after)
        row = webhook(conn, hook_id)
    assert row is not None
    runtime.webhooks_changed.set()
    return JSONResponse(_render(row, secret=True), status_code=201)


@router.get("/webhooks", response_model=WebhooksOut, responses=documented_errors(401, 403, 503))
async def webhooks(runtime: CurrentRuntime, _: Admin) -> JSONResponse:
    """Every receiver: where it stands in the feed and why its last attempt failed."""
    with reading(runtime.store.required()) as conn:
        found = list_webhooks(conn)
    return JSONResponse({"webhooks": [_render(row) for row in found]})


@router.get("/webhooks/{hook_id}/deliveries", response_model=DeliveriesOut, responses=_ONE)
async def deliveries_of(
    hook_id: HookId,
    runtime: CurrentRuntime,
    _: Admin,
    failed: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JSONResponse:
    """The receiver's latest attempts, newest first; ``failed``: only those not answered 2xx."""
    with reading(runtime.store.required()) as conn:
        if webhook(conn, hook_id) is None:
            raise NotFound(f"no webhook {hook_id}")
        found = deliveries(conn, hook_id, failed_only=failed, limit=limit)
    return JSONResponse(
        {
            "deliveries": [
                {
                    "seq": row["seq"],
                    "attempted_at": units.stamp(row["attempted_at"]),
                    "status": row["status"],
                    "error": row["error"],
                    "duration_ms": row["duration_us"] / 1000,
                }
                for row in found
            ]
        }
    )


@router.post("/webhooks/{hook_id}/replay", response_model=WebhookOut, responses=_ONE)
async def replay(
    hook_id: HookId, body: ReplayIn, runtime: CurrentRuntime, _: Admin
) -> JSONResponse:
    """Deliver again every outcome after ``after``, starting now (a stopped receiver starts
    again too)."""
    with runtime.store.required().begin() as conn:
        if not replay_from(conn, hook_id, body.after, _now()):
            raise NotFound(f"no webhook {hook_id}")
        row = webhook(conn, hook_id)
    assert row is not None
    runtime.webhooks_changed.set()
    return JSONResponse(_render(row))


@router.post("/webhooks/{hook_id}/stop", response_model=WebhookOut, responses=_ONE)
async def stop(hook_id: HookId, runtime: CurrentRuntime, _: Admin) -> JSONResponse:
    """Stop delivering to the receiver; it is kept, with its deliveries, and a replay
    starts it again."""
    with runtime.store.required().begin() as conn:
        if webhook(conn, hook_id) is None:
            raise NotFound(f"no webhook {hook_id}")
        stop_webhook(conn, hook_id, _now())
        row = webhook(conn, hook_id)
    assert row is not None
    return JSONResponse(_render(row))
