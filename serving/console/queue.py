"""The console's queue: open cases by deadline, filtered, counted and paged in SQL, and
who holds which case (claims).

An open case is either a review (a ``decisions`` row with ``decision = 'review'`` and no
final outcome yet: no ``outcomes`` row of version 2 or above) or an open appeal (an
``appeals`` row with ``decided_version`` NULL). Both are read as one list (``UNION ALL``)
with the request's and the order's columns the filters need; the filters are applied
inside each half, so each half uses its own index (``ix_decisions_queue``,
``ix_appeals_open``). Only one page of rows leaves the database, and the counts per queue
are one ``GROUP BY``: with 10,000 open cases the page is still one short query
(``benchmarks/console_queue.py``).

A claim marks a case as one reviewer's: others see who holds it and cannot take it while
the holder is active. It lapses when its holder has loaded no console page for the idle
time (``accounts.last_seen_at``), or is disabled; then the next reviewer to claim it gets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    case,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from riskmodel.store.schema import (
    EVENT_TABLES,
    accounts,
    appeals,
    claims,
    decisions,
    outcomes,
)

__all__ = [
    "BANDS",
    "Filters",
    "QueueItem",
    "QueuePage",
    "claim",
    "holder",
    "is_open",
    "open_cases",
    "queue_page",
    "release",
]

_requests = EVENT_TABLES["refund_requests"]
_orders = EVENT_TABLES["orders"]

BANDS: Mapping[str, tuple[str, int, int | None]] = {
    "small": ("under 50", 0, 5_000),
    "medium": ("50 to 300", 5_000, 30_000),
    "large": ("300 and over", 30_000, None),
}
"""Amount bands of the queue's filter: (label, from cents inclusive, below cents)."""


@dataclass(frozen=True)
class Filters:
    """The queue's filters, as the page's query parameters (so a filtered queue is a link).
    ``reason``: the buyer's refund reason; ``code``: a reason code of the decision."""

    queue: str | None = None
    product_type: str | None = None
    band: str | None = None
    reason: str | None = None
    code: str | None = None

    def query(self, **more: Any) -> dict[str, Any]:
        """The filters (and ``more``) as query parameters, the empty ones left out."""
        values = {
            "queue": self.queue,
            "product_type": self.product_type,
            "band": self.band,
            "reason": self.reason,
            "code": self.code,
            **more,
        }
        return {k: v for k, v in values.items() if v not in (None, "")}


@dataclass(frozen=True)
class QueueItem:
    request_id: str
    kind: str  # review | appeal
    queue: str | None
    due_at: int | None
    entered_at: int
    score: float | None
    user_id: str | None
    amount: int | None
    reason: str | None
    product_type: str | None
    claimed_by: str | None
    claim_active: bool

    def overdue(self, now: int) -> bool:
        return self.due_at is not None and self.due_at < now


@dataclass(frozen=True)
class QueuePage:
    items: list[QueueItem]
    counts: dict[str, int]  # per queue, the other filters applied
    total: int  # cases matching every filter
    page: int
    pages: int
    page_size: int


def _halves(filters: Filters) -> tuple[Select[Any], Select[Any]]:
    """The open reviews and the open appeals matching ``filters``, as two selects of the
    same columns. The request and its order are joined only when a filter reads them:
    the page's other columns are read for its own rows alone (``queue_page``)."""
    by_request = bool(filters.product_type or filters.reason or filters.band in BANDS)
    decided_later = exists().where(
        and_(outcomes.c.request_id == decisions.c.request_id, outcomes.c.version >= 2)
    )
    reviewed: Any = decisions
    if by_request:
        reviewed = reviewed.join(_requests, _requests.c.request_id == decisions.c.request_id)
        reviewed = reviewed.join(_orders, _orders.c.order_id == _requests.c.order_id)
    reviews = (
        select(
            decisions.c.request_id.label("request_id"),
            literal_column("'review'").label("kind"),
            decisions.c.review_queue.label("queue"),
            decisions.c.review_due_at.label("due_at"),
            decisions.c.decided_at.label("entered_at"),
        )
        .select_from(reviewed)
        .where(decisions.c.decision == "review", ~decided_later)
    )
    appealed_from: Any = appeals
    if filters.code:
        appealed_from = appealed_from.join(
            decisions, decisions.c.request_id == appeals.c.request_id
        )
    if by_request:
        appealed_from = appealed_from.join(
            _requests, _requests.c.request_id == appeals.c.request_id
        ).join(_orders, _orders.c.order_id == _requests.c.order_id)
    appealed = (
        select(
            appeals.c.request_id.label("request_id"),
            literal_column("'appeal'").label("kind"),
            appeals.c.queue.label("queue"),
            appeals.c.due_at.label("due_at"),
            appeals.c.filed_at.label("entered_at"),
        )
        .select_from(appealed_from)
        .where(appeals.c.decided_version.is_(None))
    )
    return _filtered(reviews, filters, decisions.c.review_queue), _filtered(
        appealed, filters, appeals.c.queue
    )


def _filtered(statement: Select[Any], filters: Filters, queue_column: Any) -> Select[Any]:
    if filters.queue:
        statement = statement.where(queue_column == filters.queue)
    if filters.product_type:
        statement = statement.where(_orders.c.product_type == filters.product_type)
    if filters.reason:
        statement = statement.where(_requests.c.reason == filters.reason)
    if filters.band is not None and filters.band in BANDS:
        _, low, high = BANDS[filters.band]
        statement = statement.where(_requests.c.amount >= low)
        if high is not None:
            statement = statement.where(_requests.c.amount < high)
    if filters.code:
        # The reasons are a JSON list written by json.dumps ("code": "X"); escaped, so a
        # code's underscore matches an underscore, not any character.
        statement = statement.where(
            decisions.c.reasons.contains(f'"code": "{filters.code}"', autoescape=True)
        )
    return statement


def open_cases(filters: Filters) -> Any:
    """Every open case matching ``filters``, as a subquery (``cases``)."""
    reviews, appealed = _halves(filters)
    return union_all(reviews, appealed).subquery("cases")


def queue_page(
    engine: Engine, filters: Filters, page: int, page_size: int, *, now: int, idle_us: int
) -> QueuePage:
    """One page of the open cases matching ``filters``, the earliest deadline first, with
    the count per queue (every filter but the queue applied) and in all."""
    cases = open_cases(filters)
    per_queue = open_cases(Filters(**{**filters.__dict__, "queue": None}))
    holder_seen = accounts.c.last_seen_at
    active = and_(
        claims.c.reviewer.is_not(None),
        accounts.c.disabled_at.is_(None),
        holder_seen.is_not(None),
        holder_seen >= now - idle_us,
    )
    # The page's rows first (the sort reads only the cases' own columns), then what the
    # page shows of each: 50 lookups, not 10,000.
    rows_of_page = (
        select(cases)
        .order_by(cases.c.due_at, cases.c.request_id)
        .limit(page_size)
        .offset((page - 1) * page_size)
        .subquery("page")
    )
    statement = (
        select(
            rows_of_page,
            decisions.c.score,
            _requests.c.user_id,
            _requests.c.amount,
            _requests.c.reason,
            _orders.c.product_type,
            claims.c.reviewer.label("claimed_by"),
            case((active, True), else_=False).label("claim_active"),
        )
        .select_from(
            rows_of_page.outerjoin(decisions, decisions.c.request_id == rows_of_page.c.request_id)
            .outerjoin(_requests, _requests.c.request_id == rows_of_page.c.request_id)
            .outerjoin(_orders, _orders.c.order_id == _requests.c.order_id)
            .outerjoin(claims, claims.c.request_id == rows_of_page.c.request_id)
            .outerjoin(accounts, accounts.c.name == claims.c.reviewer)
        )
        .order_by(rows_of_page.c.due_at, rows_of_page.c.request_id)
    )
    counting = select(per_queue.c.queue, func.count()).group_by(per_queue.c.queue)
    with engine.begin() as conn:
        counts = {str(q): int(n) for q, n in conn.execute(counting).all()}
        rows = conn.execute(statement).all()
    total = counts.get(filters.queue, 0) if filters.queue else sum(counts.values())
    items = [
        QueueItem(
            request_id=r.request_id,
            kind=r.kind,
            queue=r.queue,
            due_at=r.due_at,
            entered_at=int(r.entered_at),
            score=r.score,
            user_id=r.user_id,
            amount=r.amount,
            reason=r.reason,
            product_type=r.product_type,
            claimed_by=r.claimed_by,
            claim_active=bool(r.claim_active),
        )
        for r in rows
    ]
    pages = max((total + page_size - 1) // page_size, 1)
    return QueuePage(items, dict(sorted(counts.items())), total, page, pages, page_size)


def is_open(conn: Connection, request_id: str) -> str | None:
    """``review`` or ``appeal`` when the request awaits a decision; else None."""
    reviews, appealed = _halves(Filters())
    found = conn.execute(
        union_all(
            reviews.where(decisions.c.request_id == request_id),
            appealed.where(appeals.c.request_id == request_id),
        )
    ).first()
    return None if found is None else str(found.kind)


def _holding(now: int, idle_us: int) -> Any:
    """Reviewers whose claims hold: active accounts seen within the idle time."""
    return select(accounts.c.name).where(
        accounts.c.disabled_at.is_(None),
        accounts.c.last_seen_at.is_not(None),
        accounts.c.last_seen_at >= now - idle_us,
    )


def holder(conn: Connection, request_id: str, *, now: int, idle_us: int) -> str | None:
    """The reviewer whose claim on the case holds, or None."""
    return conn.execute(
        select(claims.c.reviewer).where(
            claims.c.request_id == request_id, claims.c.reviewer.in_(_holding(now, idle_us))
        )
    ).scalar_one_or_none()


def claim(engine: Engine, request_id: str, reviewer: str, *, now: int, idle_us: int) -> str:
    """Claim the case for ``reviewer``; the reviewer who holds it afterwards (another one
    when their claim holds). One statement decides between two reviewers claiming at once:
    the conditional update or the insert, whichever the database lets through first."""
    for _ in range(2):
        with engine.begin() as conn:
            taken = conn.execute(
                update(claims)
                .where(
                    claims.c.request_id == request_id,
                    or_(
                        claims.c.reviewer == reviewer,
                        claims.c.reviewer.not_in(_holding(now, idle_us)),
                    ),
                )
                .values(reviewer=reviewer, claimed_at=now)
            ).rowcount
            if taken:
                return reviewer
            held = conn.execute(
                select(claims.c.reviewer).where(claims.c.request_id == request_id)
            ).scalar_one_or_none()
            if held is not None:
                return str(held)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(claims).values(request_id=request_id, reviewer=reviewer, claimed_at=now)
                )
            return reviewer
        except IntegrityError:
            continue  # claimed by another in between: look again
    raise RuntimeError(f"claim on {request_id!r} neither taken nor held")


def release(engine: Engine, request_id: str, reviewer: str | None = None) -> None:
    """Drop the claim on the case (only ``reviewer``'s, when given)."""
    statement = delete(claims).where(claims.c.request_id == request_id)
    if reviewer is not None:
        statement = statement.where(claims.c.reviewer == reviewer)
    with engine.begin() as conn:
        conn.execute(statement)
