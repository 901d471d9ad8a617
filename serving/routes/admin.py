"""``POST /v1/admin/reload``: put a new policy file or registry champion live, no restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictBool

from serving.deps import Admin, CurrentRuntime
from serving.errors import Refused, documented_errors
from serving.runtime import load_models, load_policy_file
from serving.warm import rehearse, settle_heap

__all__ = ["ReloadIn", "reload", "router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: StrictBool = True
    model: StrictBool = True


@router.post(
    "/reload",
    responses=documented_errors(
        400,
        401,
        403,
        413,
        422,
        meanings={
            422: "an invalid body (invalid_request), or a policy (invalid) or model (refused) "
            "that cannot go live; what was serving keeps serving"
        },
    ),
)
async def reload(runtime: CurrentRuntime, _: Admin, body: ReloadIn | None = None) -> dict[str, Any]:
    """Re-read the policy file and the registry's champion and challenger.

    Everything asked is loaded and validated first; if anything is wrong nothing changes
    (422 with every problem, placed) and the policy and model in service keep serving.
    """
    asked = body or ReloadIn()
    policy, models = runtime.policy, runtime.models
    if asked.policy:
        try:
            policy = load_policy_file(runtime.settings.policy)
        except Exception:
            runtime.metrics.reloads.labels("policy", "refused").inc()
            raise
    if asked.model:
        models = load_models(runtime.settings.registry)
        if models.champion is None:
            runtime.metrics.reloads.labels("model", "refused").inc()
            raise Refused(f"{models.problem}; the model in service keeps serving")
    runtime.policy, runtime.models = policy, models
    if asked.policy:
        runtime.policy_problem = None
        runtime.metrics.reloads.labels("policy", "done").inc()
    if asked.model:
        runtime.metrics.reloads.labels("model", "done").inc()
        rehearse(runtime)
        settle_heap()
    runtime.note_state()
    return {
        "policy_version": None if policy is None else policy.version,
        "policy_hash": None if policy is None else policy.sha256,
        "model_version": None if models.champion is None else models.champion.version,
        "challenger_version": None if models.challenger is None else models.challenger.version,
        "warnings": [p for p in (models.challenger_problem,) if p],
    }
