"""``GET /v1/reviews`` (the queue by deadline) and ``POST /v1/reviews/{request_id}``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from serving.deps import CurrentRuntime, Reviewer
from serving.errors import documented_errors
from serving.records import record_verdict, review_queue
from serving.routes.params import PathId
from serving.schemas import NO_NUL, VerdictIn, storable

__all__ = ["queue", "router", "verdict"]

router = APIRouter(prefix="/v1", tags=["reviews"])

_QUEUE = documented_errors(401, 403, 422, 503)
_VERDICT = documented_errors(
    400,
    401,
    403,
    404,
    409,
    413,
    422,
    503,
    meanings={
        404: "no decision for this request_id",
        409: "the request was not sent to review",
    },
)


@router.get("/reviews", responses=_QUEUE)
async def queue(
    runtime: CurrentRuntime,
    _: Reviewer,
    queue: Annotated[
        Annotated[str, AfterValidator(storable)] | None,
        Query(max_length=64, json_schema_extra={"pattern": NO_NUL}),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Requests awaiting a verdict, the earliest deadline first (optionally one queue)."""
    return review_queue(runtime, queue, limit)


@router.post("/reviews/{request_id}", responses=_VERDICT)
async def verdict(
    request_id: PathId, body: VerdictIn, runtime: CurrentRuntime, caller: Reviewer
) -> dict[str, Any]:
    """A reviewer's verdict; it becomes a label (source ``review``) that features and
    training read. A later verdict on the same request corrects the earlier one."""
    return record_verdict(runtime, request_id, body.is_abuse, body.note, caller)
