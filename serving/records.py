"""History in and out: events and labels written in batches, a user's history, the review
queue and reviewers' verdicts. Batch work, so pandas and SQLAlchemy Core are fine here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, and_, exists, func, select

from riskmodel import dataset, units
from riskmodel.dataset import EXTRA, Kind
from riskmodel.ingest import validate_references
from riskmodel.store import EVENT_TABLES, columns_of, decisions, upsert
from serving.auth import Caller
from serving.errors import Conflict, NotFound, Unavailable
from serving.record import DecisionRecord
from serving.runtime import Runtime

__all__ = ["record_verdict", "review_queue", "user_history", "write_rows"]


def _engine(runtime: Runtime) -> Engine:
    engine = runtime.store.available()
    if engine is None:
        raise Unavailable(runtime.store.problem or "the store is unavailable")
    return engine


def write_rows(runtime: Runtime, table: str, rows: Sequence[BaseModel]) -> int:
    """Validate ``rows`` as a table of the dataset contract, check their references against
    the store, and upsert them, all in one transaction. Returns the rows written."""
    names = dataset.TABLES[table].names
    raw = pd.DataFrame([r.model_dump(mode="json") for r in rows], columns=list(names))
    frame = dataset.normalise(table, raw)
    with _engine(runtime).begin() as conn:
        validate_references(conn, {table: frame})
        written = upsert(conn, table, frame)
    runtime.metrics.events.labels(table).inc(written)
    return written


def _iso(us: Any) -> str | None:
    return None if us is None else units.moment(us).isoformat()


def _event(table: str, row: Any) -> dict[str, Any]:
    """A stored event as JSON: times ISO 8601, money in currency units, extras parsed."""
    spec = dataset.TABLES[table]
    out: dict[str, Any] = {}
    for name, value in zip(columns_of(table), row, strict=True):
        if name == EXTRA:
            out[name] = None if value is None else json.loads(value)
            continue
        kind = spec.column(name).kind
        if kind is Kind.TIMESTAMP:
            out[name] = _iso(value)
        elif kind is Kind.MONEY:
            out[name] = None if value is None else units.money(value)
        else:
            out[name] = value
    return out


def _decision_row(row: Any) -> dict[str, Any]:
    return DecisionRecord.from_row(row._mapping).render(stored=True, replayed=False)


def user_history(runtime: Runtime, user_id: str, limit: int, offset: int = 0) -> dict[str, Any]:
    """The user, and a page of their orders, refund requests, decisions and labels, each
    newest first: ``limit`` of each from the ``offset``-th, with how many there are in all
    (``totals``), so that a caller always knows what it has not seen."""
    users, orders = EVENT_TABLES["users"], EVENT_TABLES["orders"]
    requests, labels = EVENT_TABLES["refund_requests"], EVENT_TABLES["labels"]

    def columns(table: str) -> list[Any]:
        return [EVENT_TABLES[table].c[n] for n in columns_of(table)]

    mine = select(requests.c.request_id).where(requests.c.user_id == user_id)
    counted = {
        "orders": select(func.count()).where(orders.c.user_id == user_id),
        "refund_requests": select(func.count()).where(requests.c.user_id == user_id),
        "decisions": select(func.count()).where(decisions.c.request_id.in_(mine)),
        "labels": select(func.count()).where(labels.c.request_id.in_(mine)),
    }
    with _engine(runtime).begin() as conn:
        totals = {name: int(conn.execute(query).scalar_one()) for name, query in counted.items()}
        user = conn.execute(select(*columns("users")).where(users.c.user_id == user_id)).first()
        found_orders = conn.execute(
            select(*columns("orders"))
            .where(orders.c.user_id == user_id)
            .order_by(orders.c.paid_at.desc(), orders.c.order_id)
            .limit(limit)
            .offset(offset)
        ).all()
        found_requests = conn.execute(
            select(*columns("refund_requests"))
            .where(requests.c.user_id == user_id)
            .order_by(requests.c.requested_at.desc(), requests.c.request_id)
            .limit(limit)
            .offset(offset)
        ).all()
        found_decisions = conn.execute(
            select(decisions)
            .where(decisions.c.request_id.in_(mine))
            .order_by(decisions.c.decided_at.desc(), decisions.c.request_id)
            .limit(limit)
            .offset(offset)
        ).all()
        found_labels = conn.execute(
            select(*columns("labels"))
            .where(labels.c.request_id.in_(mine))
            .order_by(labels.c.labeled_at.desc(), labels.c.request_id)
            .limit(limit)
            .offset(offset)
        ).all()
    # Raised once the reads are committed: a rollback would drop the connection's prepared
    # statements on PostgreSQL (``riskmodel.store.reading``).
    if user is None and not found_orders:
        raise NotFound(f"no user {user_id!r} in the history")
    return {
        "user": None if user is None else _event("users", user),
        "orders": [_event("orders", r) for r in found_orders],
        "refund_requests": [_event("refund_requests", r) for r in found_requests],
        "decisions": [_decision_row(r) for r in found_decisions],
        "labels": [_event("labels", r) for r in found_labels],
        "offset": offset,
        "limit": limit,
        "totals": totals,
    }


def _reviewed(request_id: Any) -> Any:
    labels = EVENT_TABLES["labels"]
    return exists().where(and_(labels.c.request_id == request_id, labels.c.source == "review"))


def review_queue(runtime: Runtime, queue: str | None, limit: int) -> dict[str, Any]:
    """Decisions awaiting a reviewer's verdict, the earliest deadline first."""
    requests = EVENT_TABLES["refund_requests"]
    statement = (
        select(
            decisions.c.request_id,
            decisions.c.review_queue,
            decisions.c.review_due_at,
            decisions.c.decided_at,
            decisions.c.score,
            decisions.c.reasons,
            requests.c.user_id,
            requests.c.order_id,
            requests.c.amount,
            requests.c.reason,
        )
        .select_from(decisions.outerjoin(requests, requests.c.request_id == decisions.c.request_id))
        .where(decisions.c.decision == "review", ~_reviewed(decisions.c.request_id))
        .order_by(decisions.c.review_due_at, decisions.c.request_id)
        .limit(limit)
    )
    if queue is not None:
        statement = statement.where(decisions.c.review_queue == queue)
    now = units.micros(datetime.now(UTC))
    with _engine(runtime).begin() as conn:
        rows = conn.execute(statement).all()
    items = [
        {
            "request_id": r.request_id,
            "queue": r.review_queue,
            "due_at": _iso(r.review_due_at),
            "overdue": r.review_due_at is not None and r.review_due_at < now,
            "decided_at": _iso(r.decided_at),
            "score": r.score,
            "user_id": r.user_id,
            "order_id": r.order_id,
            "amount": None if r.amount is None else units.money(r.amount),
            "reason": r.reason,
            "reasons": json.loads(r.reasons),
        }
        for r in rows
    ]
    return {"items": items, "count": len(items)}


def _pending(conn: Connection, request_id: str) -> None:
    found = conn.execute(
        select(decisions.c.decision).where(decisions.c.request_id == request_id)
    ).first()
    if found is None:
        raise NotFound(f"no decision for request_id {request_id!r}")
    if found.decision != "review":
        raise Conflict(f"request {request_id!r} was decided {found.decision}, not review")


def record_verdict(
    runtime: Runtime, request_id: str, is_abuse: bool, note: str | None, caller: Caller
) -> dict[str, Any]:
    """A reviewer's verdict on a request under review, stored as a label (source review).

    A later verdict on the same request is a correction: a newer label, which is the one
    features and training read from then on.
    """
    now = datetime.now(UTC)
    extra = {"reviewer": caller.name} | ({"note": note} if note else {})
    raw = pd.DataFrame(
        [
            {
                "request_id": request_id,
                "is_abuse": "true" if is_abuse else "false",
                "labeled_at": now.isoformat(),
                "source": "review",
            }
        ]
    )
    frame = dataset.normalise("labels", raw)
    frame[EXTRA] = json.dumps(extra, sort_keys=True)
    with _engine(runtime).begin() as conn:
        _pending(conn, request_id)
        validate_references(conn, {"labels": frame})
        upsert(conn, "labels", frame)
    runtime.metrics.events.labels("labels").inc()
    return {
        "request_id": request_id,
        "is_abuse": is_abuse,
        "labeled_at": _iso(units.micros(now)),
        "source": "review",
        "reviewer": caller.name,
        "note": note,
    }
