"""``GET /v1/reviews`` (the queue by deadline, appeals included) and
``POST /v1/reviews/{request_id}`` (a verdict)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from serving.deps import CurrentRuntime, Reviewer
from serving.errors import documented_errors
from serving.routes.params import PathId
from serving.schemas import NO_NUL, OutcomeOut, VerdictIn, storable
from serving.verdicts import decide_case, review_queue

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
        403: "the caller lacks the role review, or refused the request whose appeal this is",
        404: "no decision for this request_id",
        409: "the request is not awaiting a verdict (settled, or never sent to review)",
        422: "the body fails validation, or approves more than was asked",
    },
)


@router.get("/reviews", responses=_QUEUE)
def queue(
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


@router.post("/reviews/{request_id}", response_model=OutcomeOut, responses=_VERDICT)
def verdict(
    request_id: PathId, body: VerdictIn, runtime: CurrentRuntime, caller: Reviewer
) -> JSONResponse:
    """A reviewer's verdict on a request under review or on its open appeal: approve in
    full, approve an amount, or refuse. It is the request's final outcome (a new version of
    its decision; the automatic one is kept), a label (source ``review``, or ``dispute`` for
    an appeal) and an event of ``GET /v1/outcomes``. A settled request is reopened only by
    an appeal, which another reviewer than the one who refused decides. A verdict after the
    deadline is accepted and recorded as late."""
    return JSONResponse(decide_case(runtime, request_id, body, caller.name))
