"""``POST /v1/admin/reload``: make the policy file and the registry's champion live on
every worker; ``POST /v1/admin/switch``: the kill switch."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, StrictBool

from riskmodel.store import reading
from riskmodel.store.operations import live_now
from serving.deps import Admin, CurrentRuntime
from serving.errors import Refused, Unavailable, documented_errors
from serving.live import Change, apply, deploy_model, deploy_policy, set_switch
from serving.runtime import load_models, load_policy_file
from serving.schemas import Reason
from serving.warm import rehearse, settle_heap

__all__ = ["ReloadIn", "SwitchIn", "reload", "router", "switch"]

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
        503,
        meanings={
            422: "an invalid body (invalid_request), or a policy (invalid) or model (refused) "
            "that cannot go live; what was serving keeps serving"
        },
    ),
)
async def reload(
    runtime: CurrentRuntime, caller: Admin, body: ReloadIn | None = None
) -> dict[str, Any]:
    """Make the policy file and the registry's champion live, on every worker of every
    replica (they follow the store within about a second, ``serving.live``).

    Everything asked is loaded and validated first; if anything is wrong nothing changes
    anywhere (422 with every problem, placed) and the policy and model in service keep
    serving. The change is archived and written to the audit trail under the caller's name.
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
    engine = runtime.store.available()
    if engine is None:
        raise Unavailable(f"{runtime.store.problem}; nothing changed")
    who = caller.name
    if asked.policy and policy is not None:
        deploy_policy(engine, policy, who=who, reason="reload")
        runtime.metrics.reloads.labels("policy", "done").inc()
    if asked.model and models.champion is not None:
        deploy_model(engine, models.champion.version, who=who, reason="reload")
        runtime.metrics.reloads.labels("model", "done").inc()
        rehearse(runtime, models)
    # This worker at once; the others at their next look.
    with reading(engine) as conn:
        seen = live_now(conn)
    apply(runtime, Change(seen, policy if asked.policy else None, models if asked.model else None))
    settle_heap()
    return {
        "policy_version": None if policy is None else policy.version,
        "policy_hash": None if policy is None else policy.sha256,
        "model_version": None if models.champion is None else models.champion.version,
        "challenger_version": None if models.challenger is None else models.challenger.version,
        "warnings": [p for p in (models.challenger_problem,) if p],
    }


class SwitchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["off", "review", "rules"]
    reason: Reason


@router.post(
    "/switch",
    responses=documented_errors(400, 401, 403, 413, 422, 503),
)
async def switch(runtime: CurrentRuntime, caller: Admin, body: SwitchIn) -> dict[str, Any]:
    """The kill switch, on every worker of every replica within about a second: ``review``
    sends every new decision to review (reason ``KILL_SWITCH``), ``rules`` decides by the
    policy's rules and lists without the model (``RULES_ONLY``), ``off`` goes back to
    normal. Audited with the caller's name and the reason."""
    engine = runtime.store.available()
    if engine is None:
        raise Unavailable(f"{runtime.store.problem}; the switch is unchanged")
    set_switch(engine, body.mode, who=caller.name, reason=body.reason)
    with reading(engine) as conn:
        seen = live_now(conn)
    apply(runtime, Change(seen))
    return {"switch": runtime.switch, "reason": body.reason, "by": caller.name}
