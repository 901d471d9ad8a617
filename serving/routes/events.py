"""``POST /v1/events/{users|orders|usage}`` and ``POST /v1/labels``: history in batches."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter
from pydantic import BaseModel

from serving.deps import CurrentRuntime, Ingester
from serving.errors import PayloadTooLarge, documented_errors
from serving.records import write_rows
from serving.runtime import Runtime
from serving.schemas import EventsOut, LabelsIn, OrdersIn, UsageIn, UsersIn

__all__ = ["labels", "orders", "router", "usage", "users"]

router = APIRouter(prefix="/v1", tags=["history"])

_ERRORS = documented_errors(
    400,
    401,
    403,
    413,
    422,
    503,
    meanings={
        422: "a row fails validation (invalid_request, one entry per field) or breaks the "
        "dataset contract against the store (invalid: table, row, column)"
    },
)


def _write(runtime: Runtime, table: str, rows: Sequence[BaseModel]) -> EventsOut:
    limit = runtime.settings.max_batch * 10
    if len(rows) > limit:
        raise PayloadTooLarge(f"{len(rows)} rows in one batch; at most {limit}")
    written = write_rows(runtime, table, rows)
    return EventsOut(table=table, received=len(rows), written=written)


@router.post("/events/users", response_model=EventsOut, responses=_ERRORS)
def users(body: UsersIn, runtime: CurrentRuntime, _: Ingester) -> EventsOut:
    """Accounts, upserted by user_id (all or nothing)."""
    return _write(runtime, "users", body.rows)


@router.post("/events/orders", response_model=EventsOut, responses=_ERRORS)
def orders(body: OrdersIn, runtime: CurrentRuntime, _: Ingester) -> EventsOut:
    """Paid orders, upserted by order_id; each order's user must be known."""
    return _write(runtime, "orders", body.rows)


@router.post("/events/usage", response_model=EventsOut, responses=_ERRORS)
def usage(body: UsageIn, runtime: CurrentRuntime, _: Ingester) -> EventsOut:
    """Days a membership was used; each within its order's service period."""
    return _write(runtime, "usage", body.rows)


@router.post("/labels", response_model=EventsOut, responses=_ERRORS)
def labels(body: LabelsIn, runtime: CurrentRuntime, _: Ingester) -> EventsOut:
    """Outcomes learnt later (chargebacks, issuer reports, disputes, reviews)."""
    return _write(runtime, "labels", body.rows)
