"""``POST /v1/appeals``: a buyer's appeal of a block or a refusal."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import CurrentRuntime, Reader
from serving.errors import documented_errors
from serving.schemas import AppealIn, AppealOut
from serving.verdicts import file_appeal

__all__ = ["appeal", "router"]

router = APIRouter(prefix="/v1", tags=["reviews"])

_APPEAL = documented_errors(
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
        409: "nothing to appeal (awaiting a verdict, or approved), or appealed already",
    },
)


@router.post("/appeals", response_model=AppealOut, status_code=201, responses=_APPEAL)
def appeal(body: AppealIn, runtime: CurrentRuntime, caller: Reader) -> JSONResponse:
    """Appeal a block or a refusal on the buyer's behalf (roles decide or review): the
    request goes to the disputes queue (``GET /v1/reviews``), to be decided within its
    deadline by another reviewer than the one who refused. One appeal a request."""
    found = file_appeal(runtime, body.request_id, body.statement, body.channel, caller.name)
    return JSONResponse(found, status_code=201)
