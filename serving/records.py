"""History in and out: events and labels written in batches, and a user's history. Batch
work, so pandas and SQLAlchemy Core are fine here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel
from sqlalchemy import func, select

from riskmodel import dataset, units
from riskmodel.dataset import EXTRA, Kind
from riskmodel.ingest import validate_references
from riskmodel.store import EVENT_TABLES, columns_of, decisions, upsert
from serving.errors import NotFound
from serving.record import DecisionRecord
from serving.runtime import Runtime

__all__ = ["user_history", "write_rows"]


def write_rows(runtime: Runtime, table: str, rows: Sequence[BaseModel]) -> int:
    """Validate ``rows`` as a table of the dataset contract, check their references against
    the store, and upsert them, all in one transaction. Returns the rows written."""
    names = dataset.TABLES[table].names
    raw = pd.DataFrame([r.model_dump(mode="json") for r in rows], columns=list(names))
    frame = dataset.normalise(table, raw)
    with runtime.store.required().begin() as conn:
        validate_references(conn, {table: frame})
        written = upsert(conn, table, frame)
    runtime.metrics.events.labels(table).inc(written)
    return written


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
            out[name] = units.stamp(value)
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
    with runtime.store.required().begin() as conn:
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
