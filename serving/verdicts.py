"""What people decide: reviewers' verdicts, appeals, the review queue, and the feed of
final outcomes the refund pipeline follows.

A verdict settles a request under review; an appeal reopens a block or a refusal once,
for another reviewer to decide. Either is a new version of the request's decision (the
automatic one is kept), a label for training (source ``review`` or ``dispute``) and an
event of the outcome feed, written in one transaction. The API (``serving.routes``) and
the console call the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import IntegrityError

from riskmodel import dataset, units
from riskmodel.dataset import EXTRA
from riskmodel.ingest import validate_references
from riskmodel.store import (
    EVENT_TABLES,
    appeal_of,
    appeals,
    claims,
    close_appeal,
    decisions,
    feed,
    insert_appeal,
    insert_outcome,
    outcomes,
    reading,
    sequence,
    stored_decision,
    upsert,
    versions,
)
from serving.errors import Conflict, Forbidden, NotFound, Refused
from serving.runtime import Runtime
from serving.schemas import VerdictIn

__all__ = [
    "APPEAL_QUEUE",
    "decide_case",
    "file_appeal",
    "read_outcomes",
    "render_appeal",
    "render_outcome",
    "review_queue",
    "versions_of",
]

APPEAL_QUEUE = "disputes"
"""Where appeals wait; its deadline is the policy's queue of that name, else 48 hours."""
_APPEAL_HOURS = 48


def render_outcome(row: Mapping[str, Any]) -> dict[str, Any]:
    """An ``outcomes`` row as the API answers it."""
    return {
        "seq": row["seq"],
        "event_id": row["event_id"],
        "request_id": row["request_id"],
        "version": row["version"],
        "kind": row["kind"],
        "decision": row["decision"],
        "approved_amount": units.money(row["approved_amount"]),
        "is_abuse": None if row["is_abuse"] is None else bool(row["is_abuse"]),
        "note": row["note"],
        "decided_by": row["decided_by"],
        "decided_at": units.stamp(row["decided_at"]),
        "due_at": units.stamp(row["due_at"]),
        "late": bool(row["late"]),
    }


def render_appeal(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        **{k: row[k] for k in ("request_id", "filed_by", "channel", "statement", "queue")},
        "filed_at": units.stamp(row["filed_at"]),
        "due_at": units.stamp(row["due_at"]),
        "against_version": row["against_version"],
        "first_reviewer": row["first_reviewer"],
        "decided_version": row["decided_version"],
    }


def versions_of(conn: Connection, request_id: str) -> list[dict[str, Any]]:
    """The final outcomes of ``request_id`` as the API answers them, oldest first."""
    return [render_outcome(row) for row in versions(conn, request_id)]


def _asked_cents(conn: Connection, request_id: str) -> int:
    requests = EVENT_TABLES["refund_requests"]
    found = conn.execute(
        select(requests.c.amount).where(requests.c.request_id == request_id)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no refund request {request_id!r} in the store")
    return int(found)


def _paid_cents(verdict: VerdictIn, asked: int) -> int:
    if verdict.decision == "refuse":
        if verdict.approved_amount is not None:
            raise Refused("a refusal approves nothing: leave approved_amount out")
        return 0
    if verdict.approved_amount is None:
        return asked
    paid = units.cents(verdict.approved_amount)
    if paid > asked:
        raise Refused(
            f"approved_amount {verdict.approved_amount} is more than the {units.money(asked)} asked"
        )
    return paid


def _write_label(
    conn: Connection, request_id: str, is_abuse: bool, source: str, extra: dict[str, Any]
) -> None:
    raw = pd.DataFrame(
        [
            {
                "request_id": request_id,
                "is_abuse": "true" if is_abuse else "false",
                "labeled_at": datetime.now(UTC).isoformat(),
                "source": source,
            }
        ]
    )
    frame = dataset.normalise("labels", raw)
    frame[EXTRA] = json.dumps(extra, sort_keys=True)
    validate_references(conn, {"labels": frame})
    upsert(conn, "labels", frame)


def _settle(
    conn: Connection, request_id: str, verdict: VerdictIn, reviewer: str, now: int
) -> dict[str, Any]:
    decision = stored_decision(conn, request_id)
    if decision is None:
        raise NotFound(f"no decision for request_id {request_id!r}")
    found = versions(conn, request_id)
    appeal = appeal_of(conn, request_id)
    if appeal is not None and appeal["decided_version"] is None:
        if reviewer == appeal["first_reviewer"]:
            raise Forbidden(
                f"{reviewer!r} refused this request; its appeal must be decided by another reviewer"
            )
        kind, due, source = "appeal", int(appeal["due_at"]), "dispute"
    elif decision["decision"] == "review" and not found:
        kind, due, source = "verdict", decision["review_due_at"], "review"
    elif found:
        last = found[-1]
        by = "automatically" if last["decided_by"] is None else f"by {last['decided_by']!r}"
        raise Conflict(
            f"request {request_id!r} was settled ({last['decision']}, version "
            f"{last['version']}, {by}); only an appeal reopens it"
        )
    else:
        raise Conflict(
            f"request {request_id!r} was decided {decision['decision']} automatically; it is "
            "not awaiting a verdict"
        )
    version = max((row["version"] for row in found), default=1) + 1
    row = {
        "event_id": f"{request_id}:{version}",
        "seq": None,
        "request_id": request_id,
        "version": version,
        "kind": kind,
        "decision": verdict.decision,
        "approved_amount": _paid_cents(verdict, _asked_cents(conn, request_id)),
        "is_abuse": verdict.is_abuse,
        "note": verdict.note,
        "decided_by": reviewer,
        "decided_at": now,
        "due_at": due,
        "late": due is not None and now > due,
    }
    insert_outcome(conn, row)
    if kind == "appeal":
        close_appeal(conn, request_id, version)
    conn.execute(delete(claims).where(claims.c.request_id == request_id))
    extra: dict[str, Any] = {"reviewer": reviewer, "version": version}
    if verdict.note:
        extra["note"] = verdict.note
    _write_label(conn, request_id, verdict.is_abuse, source, extra)
    return row


def decide_case(
    runtime: Runtime,
    request_id: str,
    verdict: VerdictIn,
    reviewer: str,
    *,
    guard: Callable[[Connection], None] | None = None,
) -> dict[str, Any]:
    """Settle a request under review, or its open appeal, as ``reviewer``: the new version
    as the API answers it. A verdict after the deadline is recorded as late. ``guard``
    runs first in the same transaction and may refuse (the console's claims)."""
    now = units.micros(datetime.now(UTC))
    try:
        with runtime.store.required().begin() as conn:
            if guard is not None:
                guard(conn)
            row = _settle(conn, request_id, verdict, reviewer, now)
    except IntegrityError as exc:  # another reviewer's verdict committed first
        raise Conflict(f"request {request_id!r} was settled by another reviewer just now") from exc
    runtime.metrics.events.labels("labels").inc()
    return render_outcome(row)


def _appeal_deadline(runtime: Runtime) -> tuple[str, timedelta]:
    if runtime.policy is not None:
        for queue in runtime.policy.spec.review.queues:
            if queue.name == APPEAL_QUEUE:
                return queue.name, timedelta(hours=queue.deadline_hours)
    return APPEAL_QUEUE, timedelta(hours=_APPEAL_HOURS)


def file_appeal(
    runtime: Runtime, request_id: str, statement: str, channel: str, filed_by: str
) -> dict[str, Any]:
    """Reopen a blocked or refused request for another reviewer (the disputes queue)."""
    now = datetime.now(UTC)
    queue, hours = _appeal_deadline(runtime)
    with runtime.store.required().begin() as conn:
        if stored_decision(conn, request_id) is None:
            raise NotFound(f"no decision for request_id {request_id!r}")
        found = versions(conn, request_id)
        if not found:
            raise Conflict(f"request {request_id!r} awaits a verdict; there is nothing to appeal")
        last = found[-1]
        if last["decision"] == "approve":
            raise Conflict(f"request {request_id!r} was approved; only a block or a refusal")
        row = {
            "request_id": request_id,
            "filed_at": units.micros(now),
            "filed_by": filed_by,
            "channel": channel,
            "statement": statement,
            "queue": queue,
            "due_at": units.micros(now + hours),
            "against_version": last["version"],
            "first_reviewer": last["decided_by"],
            "decided_version": None,
        }
        try:
            stored = insert_appeal(conn, row)
        except IntegrityError:
            stored = False
        if not stored:
            raise Conflict(f"request {request_id!r} was appealed already; one appeal a request")
    return render_appeal(row)


def review_queue(runtime: Runtime, queue: str | None, limit: int) -> dict[str, Any]:
    """Requests awaiting a verdict and open appeals, the earliest deadline first."""
    requests = EVENT_TABLES["refund_requests"]
    settled = select(outcomes.c.request_id).where(outcomes.c.request_id == decisions.c.request_id)
    listed = (
        decisions.c.decided_at,
        decisions.c.score,
        decisions.c.reasons,
        requests.c.user_id,
        requests.c.order_id,
        requests.c.amount,
        requests.c.reason,
    )
    reviews = (
        select(
            decisions.c.request_id,
            decisions.c.review_queue.label("queue"),
            decisions.c.review_due_at.label("due_at"),
            *listed,
        )
        .select_from(decisions.outerjoin(requests, requests.c.request_id == decisions.c.request_id))
        .where(decisions.c.decision == "review", ~settled.exists())
        .order_by(decisions.c.review_due_at, decisions.c.request_id)
        .limit(limit)
    )
    disputes = (
        select(
            appeals.c.request_id,
            appeals.c.queue,
            appeals.c.due_at,
            *listed,
        )
        .select_from(
            appeals.join(decisions, decisions.c.request_id == appeals.c.request_id).outerjoin(
                requests, requests.c.request_id == appeals.c.request_id
            )
        )
        .where(appeals.c.decided_version.is_(None))
        .order_by(appeals.c.due_at, appeals.c.request_id)
        .limit(limit)
    )
    if queue is not None:
        reviews = reviews.where(decisions.c.review_queue == queue)
        disputes = disputes.where(appeals.c.queue == queue)
    now = units.micros(datetime.now(UTC))
    with reading(runtime.store.required()) as conn:
        found = [*conn.execute(reviews).all(), *conn.execute(disputes).all()]
    found.sort(key=lambda r: (r.due_at is None, r.due_at or 0, r.request_id))
    items = [
        {
            "request_id": r.request_id,
            "queue": r.queue,
            "due_at": units.stamp(r.due_at),
            "overdue": r.due_at is not None and r.due_at < now,
            "decided_at": units.stamp(r.decided_at),
            "score": r.score,
            "user_id": r.user_id,
            "order_id": r.order_id,
            "amount": None if r.amount is None else units.money(r.amount),
            "reason": r.reason,
            "reasons": json.loads(r.reasons),
        }
        for r in found[:limit]
    ]
    return {"items": items, "count": len(items)}


def read_outcomes(runtime: Runtime, after: int, limit: int) -> list[dict[str, Any]]:
    """The feed after ``after``: outcomes committed since are numbered first."""
    engine = runtime.store.required()
    with engine.begin() as conn:
        sequence(conn)
    with reading(engine) as conn:
        return [render_outcome(row) for row in feed(conn, after, limit)]
