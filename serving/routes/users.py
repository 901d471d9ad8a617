"""``GET /v1/users/{user_id}/history``: what support staff see of a user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from serving.deps import CurrentRuntime, Reviewer
from serving.errors import documented_errors
from serving.records import user_history
from serving.routes.params import PathId

__all__ = ["history", "router"]

router = APIRouter(prefix="/v1", tags=["history"])


@router.get(
    "/users/{user_id}/history",
    responses=documented_errors(
        401, 403, 404, 422, 503, meanings={404: "no history for this user"}
    ),
)
def history(
    user_id: PathId,
    runtime: CurrentRuntime,
    _: Reviewer,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """A page of the user's orders, refund requests, decisions and labels, each newest
    first, and how many of each there are in all (``totals``) (role review)."""
    return user_history(runtime, user_id, limit, offset)
