"""Following what is live: every worker of every replica reads the store's live settings
(``riskmodel.store.operations``) every ``FOLLOW_SECONDS`` and, when they changed, loads the
policy from the archive and the model from the registry, then swaps them in whole.

A change that cannot be loaded (an archive that does not match its hash, a model missing
from this replica's registry) leaves the worker on the last good one, and ``/readyz`` says
so. Before any deploy the store holds no live setting, and the service runs the policy
file and the registry's champion, as a fresh install does.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from riskmodel.errors import RiskModelError
from riskmodel.policy import Policy
from riskmodel.store import reading
from riskmodel.store.operations import (
    ArchivedPolicy,
    LiveSetting,
    archive,
    archived_policy,
    live_now,
    set_live,
)
from serving.errors import Refused
from serving.runtime import Models, Runtime, load_models, load_policy_file
from serving.warm import rehearse

__all__ = [
    "FOLLOW_SECONDS",
    "Change",
    "apply",
    "archived",
    "deploy_model",
    "deploy_policy",
    "follow",
    "keep_policy",
    "policy_of",
    "read_change",
    "set_switch",
]

log = logging.getLogger("serving")

FOLLOW_SECONDS = 1.0
"""How often a worker reads what is live: a change reaches every worker within about this
long, plus the time to load it."""


def archived(policy: Policy) -> ArchivedPolicy:
    """``policy`` as the archive keeps it."""
    return ArchivedPolicy(policy.sha256, policy.version, policy.text, policy.list_files, 0)


def deploy_policy(engine: Engine, policy: Policy, *, who: str, reason: str | None) -> None:
    """Make a validated ``policy`` live everywhere (archived under its hash)."""
    set_live(engine, "policy", policy.sha256, who=who, reason=reason, policy=archived(policy))


def deploy_model(engine: Engine, version: str, *, who: str, reason: str | None) -> None:
    """Make the model ``version`` (loaded and checked by the caller) live everywhere."""
    set_live(engine, "model", version, who=who, reason=reason)


def set_switch(engine: Engine, mode: str, *, who: str, reason: str | None) -> None:
    """Set the kill switch everywhere: off, review or rules (``SWITCH_MODES``)."""
    set_live(engine, "switch", mode, who=who, reason=reason)


def keep_policy(runtime: Runtime) -> None:
    """Archive the policy the worker starts with (its file, before any deploy), so that
    every decision's ``policy_hash`` finds its text (``serving.replay``)."""
    engine = runtime.store.available()
    if engine is None or runtime.policy is None:
        return
    try:
        with engine.begin() as conn:
            archive(conn, archived(runtime.policy))
    except DBAPIError as exc:  # two workers starting at once: the other one kept it
        log.info("policy not archived at start: %s", exc.orig or exc)


def policy_of(kept: ArchivedPolicy) -> Policy:
    """The archived policy, loaded as a file is (its list files beside it) and checked
    against its hash: a tampered archive is refused (``Refused``)."""
    with tempfile.TemporaryDirectory(prefix="riskmodel-policy-") as folder:
        root = Path(folder)
        path = root / "policy.yaml"
        path.write_text(kept.text, encoding="utf-8")
        for name, text in kept.list_files.items():
            target = (root / name).resolve()
            if not target.is_relative_to(root.resolve()):
                raise Refused(f"archived policy {kept.sha256[:12]}: list file {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        policy = load_policy_file(path)
    if policy.sha256 != kept.sha256:
        raise Refused(
            f"archived policy {kept.sha256[:12]} does not match its hash "
            f"({policy.sha256[:12]}): the archive was changed; the policy in service stays"
        )
    return policy


@dataclass(frozen=True)
class Change:
    """What a worker loaded of a change: the new policy and models (None: unchanged)."""

    seen: Mapping[str, LiveSetting]
    policy: Policy | None = None
    models: Models | None = None
    problem: str | None = None


def read_change(runtime: Runtime) -> Change | None:
    """The live settings, and what must be loaded for them, when they differ from what the
    worker last applied; None when nothing changed. Blocking: run it off the event loop."""
    engine = runtime.store.available()
    if engine is None:
        return None
    with reading(engine) as conn:
        seen = live_now(conn)
        if seen in (runtime.live, runtime.live_refused):
            return None  # nothing new: a refused change is not loaded again every second
        policy = models = None
        problem = None
        try:
            wanted = seen.get("policy")
            if wanted is not None and wanted != runtime.live.get("policy"):
                archived = archived_policy(conn, wanted.value)
                if archived is None:
                    raise Refused(f"live policy {wanted.value[:12]} is not in the archive")
                policy = policy_of(archived)
        except (RiskModelError, Refused) as exc:
            problem = f"cannot load the live policy: {exc}"
    wanted = seen.get("model")
    if wanted is not None and wanted != runtime.live.get("model"):
        models = load_models(runtime.settings.registry, wanted.value)
        if models.champion is None:
            problem = f"cannot load the live model {wanted.value}: {models.problem}"
            models = None
    return Change(seen, policy, models, problem)


def apply(runtime: Runtime, change: Change) -> None:
    """Swap in what ``change`` loaded (on the event loop: attribute assignments only)."""
    if change.problem is not None:
        if change.problem != runtime.live_problem:
            log.error("%s", change.problem)
        runtime.live_problem = change.problem
        runtime.live_refused = dict(change.seen)
        return  # the last good policy and model keep serving
    if change.policy is not None:
        runtime.policy, runtime.policy_problem = change.policy, None
        log.info("policy %s (%s) live", change.policy.version, change.policy.sha256[:12])
    if change.models is not None:
        runtime.models = change.models
        log.info(
            "model %s live",
            None if change.models.champion is None else change.models.champion.version,
        )
    runtime.live = dict(change.seen)
    runtime.live_problem = None
    runtime.note_state()


async def follow(runtime: Runtime, every: float = FOLLOW_SECONDS) -> None:
    """Read what is live every ``every`` seconds and apply changes, until cancelled (the
    first look is ``every`` after the start, which read it already)."""
    while True:
        await asyncio.sleep(every)
        try:
            change = await asyncio.to_thread(read_change, runtime)
            if change is not None:
                if change.models is not None:
                    await asyncio.to_thread(_warm, runtime, change.models)
                apply(runtime, change)
        except DBAPIError as exc:
            runtime.live_problem = f"cannot read what is live: {exc.orig or exc}"
        except Exception:  # a bug must not stop the worker following: logged, retried
            log.exception("following what is live failed")


def _warm(runtime: Runtime, models: Models) -> None:
    """The new models' first scores, before they decide."""
    rehearse(runtime, models)
