"""Deciding a stored request again, with what it was decided with, to show any difference.

``replay(engine, registry, request_id)`` reads the stored request and its decision, the
policy of its ``policy_hash`` from the archive (``riskmodel.store.operations``), the model
of its ``model_version`` from the registry, and decides it again as the service does
(``serving.decide.evaluate``): features as of the request's own time, from the store as it
is now, and the kill switch and the late-date review as the stored reasons say they were.
It counts what is dated before the request (as in time order): a decision whose policy
also counted requests dated after it, that had arrived first (``stored_view``), can
differ there. Otherwise the two answers should be the same; a difference means the store
or the archive changed since (history written later but dated before the request, or a
tampered row), and each is listed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine

from riskmodel import units
from riskmodel.domain import RefundRequest
from riskmodel.engine import Reason, ReasonKind
from riskmodel.errors import RiskModelError
from riskmodel.registry import Registry
from riskmodel.store import (
    REQUEST_COLUMNS,
    RequestContext,
    decision_context,
    fetch_one,
    reading,
    stored_decision,
)
from riskmodel.store.operations import archived_policy
from serving.decide import evaluate
from serving.live import policy_of
from serving.record import DecisionRecord

__all__ = ["ReplayError", "Replayed", "replay"]


class ReplayError(RiskModelError):
    """The request cannot be decided again: the message says what is missing."""


@dataclass(frozen=True)
class Replayed:
    """The stored decision and the same request decided again; ``differences``, each in
    words, empty when they agree."""

    stored: DecisionRecord
    again: DecisionRecord
    differences: tuple[str, ...]


def replay(engine: Engine, registry: Path, request_id: str) -> Replayed:
    """Decide the stored request ``request_id`` again (see the module docstring)."""
    with reading(engine) as conn:
        found = stored_decision(conn, request_id)
        if found is None:
            raise ReplayError(f"no decision is stored for request_id {request_id!r}")
        stored = DecisionRecord.from_row(found)
        values = fetch_one(
            conn,
            f"SELECT {', '.join(REQUEST_COLUMNS)} FROM refund_requests WHERE request_id = "
            f"{'%s' if conn.dialect.name == 'postgresql' else '?'}",
            (request_id,),
        )
        if values is None:
            raise ReplayError(f"the request {request_id!r} is not in the history")
        row = dict(zip(REQUEST_COLUMNS, values, strict=True))
        kept = None if stored.policy_hash is None else archived_policy(conn, stored.policy_hash)
        if kept is None:
            raise ReplayError(f"the policy {stored.policy_hash} is not in the archive")
        policy = policy_of(kept)
        context = decision_context(conn, row, again=True)
        if not isinstance(context, RequestContext):
            raise ReplayError(f"the request {request_id!r} no longer fits the history")
        champion = None
        if stored.model_version is not None:
            champion = Registry(registry).load(stored.model_version)
        reasons = json.loads(stored.reasons)
        codes = {reason["code"] for reason in reasons}
        outcome, _, _ = evaluate(
            conn,
            _request(row),
            row,
            context,
            policy,
            champion,
            holds=[
                Reason(r["code"], ReasonKind(r["kind"]), r["message"])
                for r in reasons
                if r["code"] in _HOLDS
            ],
            rules_only="RULES_ONLY" in codes,
            now=units.moment(stored.decided_at),
            later_stored=False,
        )
    again = DecisionRecord.of(outcome, str(stored.request_hash), stored.shadow)
    return Replayed(stored, again, tuple(_differences(stored, again)))


def _request(row: dict[str, object]) -> RefundRequest:
    return RefundRequest.model_validate(
        {
            **row,
            "requested_at": units.moment(int(str(row["requested_at"]))),
            "amount": Decimal(int(str(row["amount"]))) / units.CENTS,
        }
    )


# Reviews the service adds from outside the policy: taken from the stored reasons as they
# were, since what made them (the switch, what the store held then) is not replayed.
_HOLDS = frozenset({"KILL_SWITCH", "DATED_BEFORE_STORED"})


def _differences(stored: DecisionRecord, again: DecisionRecord) -> list[str]:
    found = []
    if stored.decision != again.decision:
        found.append(f"decision: stored {stored.decision}, again {again.decision}")
    if stored.approved_amount != again.approved_amount:
        found.append(
            f"approved amount: stored {units.money(stored.approved_amount)}, "
            f"again {units.money(again.approved_amount)}"
        )
    if not _same_score(stored.score, again.score):
        found.append(f"score: stored {stored.score}, again {again.score}")
    before = [r["code"] for r in json.loads(stored.reasons)]
    after = [r["code"] for r in json.loads(again.reasons)]
    if before != after:
        found.append(f"reasons: stored {', '.join(before)}; again {', '.join(after)}")
    if (stored.review_queue, stored.review_due_at) != (again.review_queue, again.review_due_at):
        found.append(
            f"review: stored {stored.review_queue} due {stored.review_due_at}, again "
            f"{again.review_queue} due {again.review_due_at}"
        )
    if stored.policy_hash != again.policy_hash:
        found.append(f"policy: stored {stored.policy_hash}, again {again.policy_hash}")
    return found


def _same_score(first: float | None, second: float | None) -> bool:
    if first is None or second is None:
        return first is second
    return math.isclose(first, second, rel_tol=1e-9, abs_tol=1e-12)
