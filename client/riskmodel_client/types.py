"""What the service answers, as frozen dataclasses read from its JSON.

Amounts are ``decimal.Decimal`` (the service sends them as text with two decimals, so
nothing is lost), times are aware ``datetime`` in UTC.

    >>> d = Decision.from_json({"request_id": "r1", "decision": "approve", "score": 0.02,
    ...     "approved_amount": "30.00", "reasons": [], "review": None,
    ...     "decided_at": "2026-05-02T10:00:00+00:00", "stored": True, "replayed": False})
    >>> d.approved_amount, d.approved
    (Decimal('30.00'), True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar, cast

__all__ = [
    "FALLBACK_CODE",
    "Decision",
    "Outcome",
    "OutcomePage",
    "Reason",
    "Receipt",
    "Review",
    "UnreadableAnswer",
    "Verdict",
]

T = TypeVar("T")

Verdict = Literal["approve", "review", "block"]
_VERDICTS = ("approve", "review", "block")

FALLBACK_CODE = "CLIENT_FALLBACK"
"""The reason code of a review the client made itself, without the service's answer."""


class UnreadableAnswer(ValueError):
    """A body that is not the shape the API documents."""


@dataclass(frozen=True)
class Reason:
    """Why: a rule, a list, the model (with its feature, value and contribution) or the
    policy (including the client's own ``CLIENT_FALLBACK``)."""

    code: str
    kind: str
    message: str
    feature: str | None = None
    value: float | str | None = None
    contribution: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reason:
        return cls(
            code=_text(data, "code"),
            kind=_text(data, "kind"),
            message=_text(data, "message"),
            feature=_optional(data, "feature", str),
            value=cast("float | str | None", data.get("value")),
            contribution=_optional(data, "contribution", float),
        )


@dataclass(frozen=True)
class Review:
    """The human queue a review goes to, and its deadline."""

    queue: str
    due_at: datetime


@dataclass(frozen=True)
class Decision:
    """One refund request's decision. ``approved_amount`` is what may be paid (for a
    membership, at most the unused days); ``stored`` False: a provisional review, not
    recorded (send the same request again later); ``is_fallback``: the client's own review,
    made because the service did not answer in time."""

    request_id: str
    decision: Verdict
    score: float | None
    approved_amount: Decimal
    reasons: tuple[Reason, ...]
    review: Review | None
    decided_at: datetime
    stored: bool
    replayed: bool
    model_version: str | None = None
    policy_version: str | None = None
    policy_hash: str | None = None
    feature_version: str | None = None

    @property
    def approved(self) -> bool:
        return self.decision == "approve"

    @property
    def is_fallback(self) -> bool:
        return any(reason.code == FALLBACK_CODE for reason in self.reasons)

    @classmethod
    def from_json(cls, data: Any) -> Decision:
        """The API's decision body; ``UnreadableAnswer`` if it is not one."""
        try:
            review = data.get("review")
            return cls(
                request_id=_text(data, "request_id"),
                decision=_verdict(data["decision"]),
                score=_optional(data, "score", float),
                approved_amount=_amount(data["approved_amount"]),
                reasons=tuple(Reason.from_json(r) for r in data["reasons"]),
                review=None
                if review is None
                else Review(queue=_text(review, "queue"), due_at=_time(review["due_at"])),
                decided_at=_time(data["decided_at"]),
                stored=_flag(data, "stored"),
                replayed=_flag(data, "replayed"),
                model_version=_optional(data, "model_version", str),
                policy_version=_optional(data, "policy_version", str),
                policy_hash=_optional(data, "policy_hash", str),
                feature_version=_optional(data, "feature_version", str),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UnreadableAnswer(f"not a decision: {exc!r}") from exc


@dataclass(frozen=True)
class Outcome:
    """One entry of the outcomes feed (or one webhook delivery): a request's final
    outcome at ``version`` (the automatic decision, a reviewer's verdict or an appeal's),
    at position ``seq``; ``note`` is the reviewer's, ``due_at`` the deadline a verdict or
    appeal had (``late`` when it came after it)."""

    seq: int
    event_id: str
    request_id: str
    version: int
    kind: Literal["automatic", "verdict", "appeal"]
    decision: Literal["approve", "block", "refuse"]
    approved_amount: Decimal
    is_abuse: bool | None
    decided_at: datetime
    decided_by: str | None
    late: bool
    note: str | None = None
    due_at: datetime | None = None

    @classmethod
    def from_json(cls, data: Any) -> Outcome:
        try:
            kind, decision = data["kind"], data["decision"]
            if kind not in ("automatic", "verdict", "appeal"):
                raise UnreadableAnswer(f"unknown outcome kind {kind!r}")
            if decision not in ("approve", "block", "refuse"):
                raise UnreadableAnswer(f"unknown outcome decision {decision!r}")
            is_abuse = data.get("is_abuse")
            if is_abuse is not None and not isinstance(is_abuse, bool):
                raise UnreadableAnswer(f"is_abuse {is_abuse!r} is not true, false or null")
            return cls(
                seq=_integer(data, "seq"),
                event_id=_text(data, "event_id"),
                request_id=_text(data, "request_id"),
                version=_integer(data, "version"),
                kind=kind,
                decision=decision,
                approved_amount=_amount(data["approved_amount"]),
                is_abuse=is_abuse,
                decided_at=_time(data["decided_at"]),
                decided_by=_optional(data, "decided_by", str),
                late=_flag(data, "late"),
                note=_optional(data, "note", str),
                due_at=None if data.get("due_at") is None else _time(data["due_at"]),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UnreadableAnswer(f"not an outcome: {exc!r}") from exc


@dataclass(frozen=True)
class OutcomePage:
    """One answer of the feed: its outcomes in order, and ``last``, the ``after`` to
    ask with next (equal to the ``after`` asked with when there was nothing new)."""

    outcomes: tuple[Outcome, ...]
    last: int

    @classmethod
    def from_json(cls, data: Any) -> OutcomePage:
        try:
            outcomes = tuple(Outcome.from_json(item) for item in data["outcomes"])
            return cls(outcomes=outcomes, last=_integer(data, "last"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise UnreadableAnswer(f"not a page of outcomes: {exc!r}") from exc


@dataclass(frozen=True)
class Receipt:
    """What a history or label batch did: rows received, rows new or changed."""

    table: str
    received: int
    written: int

    @classmethod
    def from_json(cls, data: Any) -> Receipt:
        try:
            return cls(
                table=_text(data, "table"),
                received=_integer(data, "received"),
                written=_integer(data, "written"),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise UnreadableAnswer(f"not a receipt: {exc!r}") from exc


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise UnreadableAnswer(f"{name} {value!r} is not a text")
    return value


def _integer(data: Mapping[str, Any], name: str) -> int:
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise UnreadableAnswer(f"{name} {value!r} is not a whole number")
    return value


def _flag(data: Mapping[str, Any], name: str) -> bool:
    value = data[name]
    if not isinstance(value, bool):
        raise UnreadableAnswer(f"{name} {value!r} is not true or false")
    return value


def _optional(data: Mapping[str, Any], name: str, kind: type[T]) -> T | None:
    value = data.get(name)
    if value is None:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return cast("T", float(value))
    if not isinstance(value, kind) or isinstance(value, bool):
        raise UnreadableAnswer(f"{name} {value!r} is not a {kind.__name__}")
    return value


def _verdict(value: Any) -> Verdict:
    if value not in _VERDICTS:
        raise UnreadableAnswer(f"unknown decision {value!r}")
    return cast("Verdict", value)


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise UnreadableAnswer(f"amount {value!r} is not a decimal text")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise UnreadableAnswer(f"amount {value!r} is not a decimal text") from None
    if not amount.is_finite() or amount < 0:
        raise UnreadableAnswer(f"amount {value!r} is not an amount")
    return amount


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise UnreadableAnswer(f"time {value!r} is not a text")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UnreadableAnswer(f"time {value!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise UnreadableAnswer(f"time {value!r} has no offset")
    return moment
