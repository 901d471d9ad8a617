"""Everything a case page shows, read in one transaction: the request, its order and what
became of it (delivered, redeemed, credited, days used), the decision's reasons in plain
words, its versions (the automatic decision, then verdicts and appeals), its labels, the
appeal, the accounts linked to the buyer by a device, an IP or a payment account, and
earlier verdicts on similar cases (the same top reason code and product type).

The buyer's own history comes from ``serving.records.user_history``, as the API gives it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select
from sqlalchemy.orm import aliased

import features
from riskmodel.engine import entitlement
from riskmodel.policy import Policy
from riskmodel.store.schema import (
    EVENT_TABLES,
    appeals,
    decisions,
    outcomes,
    sightings,
)

__all__ = ["LINKED_SHOWN", "SIMILAR_SHOWN", "Case", "Reason", "read_case"]

LINKED_SHOWN = 30
"""Linked accounts listed on a case (a public IP links thousands; the count says so)."""
SIMILAR_SHOWN = 8

_requests = EVENT_TABLES["refund_requests"]
_orders = EVENT_TABLES["orders"]
_usage = EVENT_TABLES["usage"]
_labels = EVENT_TABLES["labels"]

_ENTITY_WORDS = {"device_id": "device", "ip": "IP", "payment_account": "payment account"}


@dataclass(frozen=True)
class Reason:
    """A reason of the decision, with the words a reviewer reads."""

    code: str
    kind: str
    message: str
    feature: str | None = None
    feature_doc: str | None = None
    value: Any = None
    contribution: float | None = None

    @property
    def direction(self) -> str:
        if self.contribution is None:
            return ""
        return "raised the risk" if self.contribution > 0 else "lowered the risk"


@dataclass
class Case:
    request_id: str
    request: dict[str, Any] | None
    order: dict[str, Any] | None
    decision: dict[str, Any] | None
    reasons: list[Reason] = field(default_factory=list)
    days_used_seen: int | None = None
    entitlement: int | None = None  # cents, memberships only
    versions: list[dict[str, Any]] = field(default_factory=list)
    labels: list[dict[str, Any]] = field(default_factory=list)
    appeal: dict[str, Any] | None = None
    linked: list[dict[str, Any]] = field(default_factory=list)
    linked_total: int = 0
    similar: list[dict[str, Any]] = field(default_factory=list)
    waiting: str | None = None  # review | appeal, when it awaits a decision

    @property
    def top_code(self) -> str | None:
        return self.reasons[0].code if self.reasons else None


def _reasons(text: str) -> list[Reason]:
    found = []
    for item in json.loads(text):
        name = item.get("feature")
        spec = features.CATALOG.get(name) if name else None
        found.append(
            Reason(
                code=str(item.get("code", "")),
                kind=str(item.get("kind", "")),
                message=str(item.get("message", "")),
                feature=name,
                feature_doc=None if spec is None else spec.doc,
                value=item.get("value"),
                contribution=item.get("contribution"),
            )
        )
    return found


def _one(conn: Connection, statement: Any) -> dict[str, Any] | None:
    row = conn.execute(statement).first()
    return None if row is None else dict(row._mapping)


def read_case(
    engine: Engine, request_id: str, policy: Policy | None, waiting: str | None = None
) -> Case | None:
    """The case of ``request_id``; None when the store has neither a request nor a
    decision of that id."""
    with engine.begin() as conn:
        request = _one(conn, select(_requests).where(_requests.c.request_id == request_id))
        decision = _one(conn, select(decisions).where(decisions.c.request_id == request_id))
        if request is None and decision is None:
            return None
        case = Case(request_id, request, None, decision, waiting=waiting)
        if decision is not None:
            case.reasons = _reasons(decision["reasons"])
        if request is not None:
            _order_part(conn, case, request, policy)
            _linked(conn, case, str(request["user_id"]))
        case.versions = [
            dict(r._mapping)
            for r in conn.execute(
                select(outcomes)
                .where(outcomes.c.request_id == request_id)
                .order_by(outcomes.c.version)
            )
        ]
        case.labels = [
            dict(r._mapping)
            for r in conn.execute(
                select(_labels)
                .where(_labels.c.request_id == request_id)
                .order_by(_labels.c.labeled_at)
            )
        ]
        for label in case.labels:
            extra = label.get("extra")
            label["extra"] = json.loads(extra) if extra else {}
        case.appeal = _one(conn, select(appeals).where(appeals.c.request_id == request_id))
        _similar(conn, case)
    return case


def _order_part(
    conn: Connection, case: Case, request: dict[str, Any], policy: Policy | None
) -> None:
    order = _one(conn, select(_orders).where(_orders.c.order_id == request["order_id"]))
    case.order = order
    if order is None or order["product_type"] != "membership":
        return
    # The days the platform saw the membership used, up to the request.
    case.days_used_seen = int(
        conn.execute(
            select(func.count()).where(
                _usage.c.order_id == order["order_id"],
                _usage.c.used_at <= request["requested_at"],
            )
        ).scalar_one()
    )
    days = order.get("service_days")
    if policy is not None and days:
        seen = case.days_used_seen
        case.entitlement = entitlement(int(order["amount"]), int(days), seen, policy)


def _linked(conn: Connection, case: Case, user_id: str) -> None:
    mine = aliased(sightings)
    theirs = aliased(sightings)
    joined = mine.join(
        theirs,
        and_(
            theirs.c.entity_kind == mine.c.entity_kind,
            theirs.c.entity == mine.c.entity,
            theirs.c.user_id != user_id,
        ),
    )
    where = mine.c.user_id == user_id
    case.linked_total = int(
        conn.execute(
            select(func.count(func.distinct(theirs.c.user_id))).select_from(joined).where(where)
        ).scalar_one()
    )
    rows = conn.execute(
        select(theirs.c.user_id, theirs.c.entity_kind, theirs.c.entity, theirs.c.first_seen_at)
        .select_from(joined)
        .where(where)
        .order_by(theirs.c.user_id, theirs.c.entity_kind)
        .limit(LINKED_SHOWN)
    ).all()
    case.linked = [
        {**r._mapping, "kind_words": _ENTITY_WORDS.get(r.entity_kind, r.entity_kind)} for r in rows
    ]


def _similar(conn: Connection, case: Case) -> None:
    """Earlier verdicts on other requests of the same product type whose decision had the
    same top reason code: how reviewers judged cases like this one."""
    code = case.top_code
    if code is None or case.order is None:
        return
    found = conn.execute(
        select(
            outcomes.c.request_id,
            outcomes.c.kind,
            outcomes.c.decision,
            outcomes.c.approved_amount,
            outcomes.c.is_abuse,
            outcomes.c.decided_by,
            outcomes.c.decided_at,
            _requests.c.amount,
        )
        .select_from(
            outcomes.join(decisions, decisions.c.request_id == outcomes.c.request_id)
            .join(_requests, _requests.c.request_id == outcomes.c.request_id)
            .join(_orders, _orders.c.order_id == _requests.c.order_id)
        )
        .where(
            outcomes.c.kind.in_(("verdict", "appeal")),
            outcomes.c.request_id != case.request_id,
            _orders.c.product_type == case.order["product_type"],
            decisions.c.reasons.startswith(f'[{{"code": "{code}"', autoescape=True),
        )
        .order_by(outcomes.c.decided_at.desc())
        .limit(SIMILAR_SHOWN)
    ).all()
    case.similar = [dict(r._mapping) for r in found]
