"""``/healthz`` (the process answers), ``/readyz`` (it can decide), ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.auth import Role, presented_key
from serving.deps import CurrentRuntime
from serving.runtime import Runtime

__all__ = ["healthz", "metrics", "readyz", "router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Always 200 while the process serves: for restarts, not for traffic."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready, with every reason"}})
async def readyz(request: Request, runtime: CurrentRuntime) -> JSONResponse:
    """200 when the store answers and a champion model and a policy are loaded; else 503
    with the problems. Decisions are still answered while not ready: review, degraded.

    The call is open, so each problem names only what is missing (``database
    unreachable``); the reason (a driver's message, a file's path) goes to the log, and to
    a caller presenting an admin key.
    """
    problems = runtime.problems()
    if not _is_admin(request, runtime):
        problems = [problem.partition(":")[0] for problem in problems]
    models, policy = runtime.models, runtime.policy
    body: dict[str, Any] = {
        "ready": not problems,
        "problems": problems,
        "model_version": None if models.champion is None else models.champion.version,
        "challenger_version": None if models.challenger is None else models.challenger.version,
        "policy_version": None if policy is None else policy.version,
        "policy_hash": None if policy is None else policy.sha256,
        "switch": runtime.switch,
    }
    if models.challenger_problem:
        body["warnings"] = [models.challenger_problem.partition(":")[0]]
    return JSONResponse(body, status_code=503 if problems else 200)


def _is_admin(request: Request, runtime: Runtime) -> bool:
    key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    caller = None if key is None else runtime.keys.authenticate(key)
    return caller is not None and caller.may(Role.ADMIN)


@router.get("/metrics", response_class=Response)
async def metrics(runtime: CurrentRuntime) -> Response:
    """Prometheus text format."""
    runtime.note_state()
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
