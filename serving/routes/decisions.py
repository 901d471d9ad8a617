"""``POST /v1/decisions``, ``POST /v1/decisions:batch``, ``GET /v1/decisions/{request_id}``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from riskmodel.store import reading, stored_decision
from serving.decide import decide_one
from serving.deps import CurrentRuntime, Decider, Reader
from serving.errors import (
    AheadOfClock,
    Conflict,
    NotFound,
    PayloadTooLarge,
    documented_errors,
    error_body,
)
from serving.record import DecisionRecord
from serving.routes.params import PathId
from serving.schemas import BatchIn, BatchOut, DecisionIn, DecisionOut, StoredDecisionOut
from serving.verdicts import versions_of

__all__ = ["decide", "decide_batch", "lookup", "router"]

router = APIRouter(prefix="/v1", tags=["decisions"])

# A decision never answers 503: without its store it answers a degraded review.
_AHEAD = (
    "the body fails validation, one entry per field (invalid_request), or requested_at "
    "lies ahead of the service's clock (ahead_of_clock)"
)
_DECIDE = documented_errors(
    400,
    401,
    403,
    409,
    413,
    422,
    meanings={409: "request_id already used for another request", 422: _AHEAD},
)
# A conflict or a date ahead of the clock inside a batch is that item's answer, not the
# batch's.
_BATCH = documented_errors(400, 401, 403, 413, 422)
_LOOKUP = documented_errors(
    401, 403, 404, 422, 503, meanings={404: "no decision for this request_id"}
)


@router.post("/decisions", response_model=DecisionOut, responses=_DECIDE)
async def decide(body: DecisionIn, runtime: CurrentRuntime, _: Decider) -> JSONResponse:
    """Decide one refund request: approve, review or block, recorded before this answers.

    The same request_id sent again returns the stored decision (``replayed``).
    """
    # On SQLite the reads and the model run inline, not in a thread: a millisecond of
    # CPU, where a thread hop costs more than it frees; on PostgreSQL they run on a
    # thread (serving.decide). The write waits for its group's commit on the writer's
    # thread (serving.writer), so the loop goes on.
    return JSONResponse((await decide_one(runtime, body)).body)


@router.post("/decisions:batch", response_model=BatchOut, responses=_BATCH)
async def decide_batch(body: BatchIn, runtime: CurrentRuntime, _: Decider) -> JSONResponse:
    """Decide many requests; each is decided and recorded on its own, as if sent alone."""
    limit = runtime.settings.max_batch
    if len(body.requests) > limit:
        raise PayloadTooLarge(f"{len(body.requests)} requests in one batch; at most {limit}")
    # Side by side, in order: requests that share nothing are written in one group, and a
    # request sharing a user (or another counted entity) with an earlier one waits for it.
    answers = await asyncio.gather(
        *(decide_one(runtime, request) for request in body.requests), return_exceptions=True
    )
    results = []
    for request, answer in zip(body.requests, answers, strict=True):
        if isinstance(answer, Conflict | AheadOfClock):
            results.append(
                {
                    "request_id": request.request_id,
                    "status": answer.status,
                    "decision": None,
                    "error": error_body(answer.code, answer.message, answer.fields)["error"],
                }
            )
        elif isinstance(answer, BaseException):
            raise answer
        else:
            results.append(
                {
                    "request_id": request.request_id,
                    "status": 200,
                    "decision": answer.body,
                    "error": None,
                }
            )
    return JSONResponse({"results": results})


@router.get("/decisions/{request_id}", response_model=StoredDecisionOut, responses=_LOOKUP)
async def lookup(request_id: PathId, runtime: CurrentRuntime, _: Reader) -> JSONResponse:
    """A stored decision with its reasons, and the versions that settled it: the automatic
    approval or block, or a reviewer's verdict, then an appeal's (roles decide or review).
    The last version is what may be paid."""
    with reading(runtime.store.required()) as conn:
        row = stored_decision(conn, request_id)
        settled = versions_of(conn, request_id)
    if row is None:
        raise NotFound(f"no decision for request_id {request_id!r}")
    body = DecisionRecord.from_row(row).render(stored=True, replayed=True)
    return JSONResponse({**body, "versions": settled})
