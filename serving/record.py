"""One decision as the store keeps it and the API answers it.

A ``DecisionRecord``'s fields are the columns of the ``decisions`` table
(``riskmodel.store.DECISION_COLUMNS``): it is built from the engine's outcome
(``DecisionRecord.of``) or as a provisional review that is not stored
(``DecisionRecord.provisional``), read back from a stored row (``from_row``), written as one
(``row``), and it renders the API's decision body (``render``). A fresh answer and its replay
render the same record, so they are the same decision, byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import features
from riskmodel import units
from riskmodel.domain import Decision
from riskmodel.engine import Outcome
from riskmodel.policy import Policy
from riskmodel.store import DECISION_COLUMNS

__all__ = ["DecisionRecord"]


@dataclass(frozen=True)
class DecisionRecord:
    """A decision in store units (money in cents, times in microseconds, reasons and
    the challenger's shadow score as JSON text)."""

    request_id: str
    decision: str
    score: float | None
    approved_amount: int
    reasons: str
    review_queue: str | None
    review_due_at: int | None
    model_version: str | None
    policy_version: str | None
    policy_hash: str | None
    feature_version: str
    decided_at: int
    request_hash: str | None = None  # None: provisional, never stored
    shadow: str | None = None

    @classmethod
    def of(cls, outcome: Outcome, request_hash: str, shadow: str | None) -> DecisionRecord:
        """The engine's decision of a request whose SHA-256 is ``request_hash``."""
        review = outcome.review
        return cls(
            request_id=outcome.request_id,
            decision=outcome.decision.value,
            score=outcome.score,
            approved_amount=outcome.approved_cents,
            reasons=json.dumps([r.as_dict() for r in outcome.reasons], allow_nan=False),
            review_queue=None if review is None else review.queue,
            review_due_at=None if review is None else review.due_at_us,
            model_version=outcome.model_version,
            policy_version=outcome.policy_version,
            policy_hash=outcome.policy_hash,
            feature_version=str(features.FEATURE_VERSION),
            decided_at=units.micros(outcome.decided_at),
            request_hash=request_hash,
            shadow=shadow,
        )

    @classmethod
    def provisional(
        cls,
        request_id: str,
        policy: Policy | None,
        model_version: str | None,
        code: str,
        message: str,
        now: datetime,
    ) -> DecisionRecord:
        """A review made without what a decision needs (reason ``code``), not stored: in
        the policy's default queue, with its deadline, when there is a policy."""
        queue = due = None
        if policy is not None:
            spec = policy.spec.review
            hours = next(q.deadline_hours for q in spec.queues if q.name == spec.default_queue)
            queue, due = spec.default_queue, units.micros(now + timedelta(hours=hours))
        reason = {"code": code, "kind": "policy", "message": message}
        return cls(
            request_id=request_id,
            decision=Decision.REVIEW.value,
            score=None,
            approved_amount=0,
            reasons=json.dumps([reason]),
            review_queue=queue,
            review_due_at=due,
            model_version=model_version,
            policy_version=None if policy is None else policy.version,
            policy_hash=None if policy is None else policy.sha256,
            feature_version=str(features.FEATURE_VERSION),
            decided_at=units.micros(now),
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DecisionRecord:
        """A stored decisions row."""
        return cls(**{column: row[column] for column in DECISION_COLUMNS})

    def row(self) -> dict[str, Any]:
        """The decisions row to store."""
        return {column: getattr(self, column) for column in DECISION_COLUMNS}

    def render(self, *, stored: bool, replayed: bool) -> dict[str, Any]:
        """The API's decision body."""
        queue, due = self.review_queue, self.review_due_at
        return {
            "request_id": self.request_id,
            "decision": self.decision,
            "score": self.score,
            "approved_amount": units.money(self.approved_amount),
            "reasons": json.loads(self.reasons),
            "review": None
            if queue is None or due is None
            else {"queue": queue, "due_at": units.moment(due).isoformat()},
            "model_version": self.model_version,
            "policy_version": self.policy_version,
            "policy_hash": self.policy_hash,
            "feature_version": self.feature_version,
            "decided_at": units.moment(self.decided_at).isoformat(),
            "stored": stored,
            "replayed": replayed,
        }
