"""``GET /v1/outcomes``: the feed of final outcomes the refund pipeline follows."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from serving.deps import CurrentRuntime, Reader
from serving.errors import documented_errors
from serving.schemas import OutcomesOut
from serving.verdicts import read_outcomes

__all__ = ["follow", "router"]

router = APIRouter(prefix="/v1", tags=["outcomes"])

POLL_SECONDS = 0.1
"""How often a waiting call looks again: the feed's delay, at most, after a commit."""


@router.get(
    "/outcomes", response_model=OutcomesOut, responses=documented_errors(401, 403, 422, 503)
)
async def follow(
    runtime: CurrentRuntime,
    _: Reader,
    after: Annotated[int, Query(ge=0, le=10**15)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    wait: Annotated[float, Query(ge=0, le=30)] = 0,
) -> JSONResponse:
    """Final outcomes after ``after`` in sequence (roles decide or review): automatic
    approvals and blocks, reviewers' verdicts, appeals' results. With none yet, the call
    waits up to ``wait`` seconds for one (long polling; the service may cap it lower).
    Pass ``last`` back as ``after``: a consumer that does so sees every outcome once, in
    order, across restarts of either side; ``event_id`` is unique, for consumers that
    store it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, runtime.settings.feed_wait_seconds)
    while True:
        found = await asyncio.to_thread(read_outcomes, runtime, after, limit)
        remaining = deadline - loop.time()
        if found or remaining <= 0:
            break
        await asyncio.sleep(min(POLL_SECONDS, remaining))
    return JSONResponse({"outcomes": found, "last": found[-1]["seq"] if found else after})
