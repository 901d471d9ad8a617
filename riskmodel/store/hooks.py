"""Webhooks: receivers registered for the outcome feed, where each stands in it, and every
attempt to deliver to them.

Each receiver gets the feed's outcomes one at a time, in order: ``delivered_through`` is
the last sequence number it answered 2xx. Several workers may run the delivery loop: a
worker takes a receiver for a while (``take``) by moving its next attempt forward, which
only one of them can do from the value it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from riskmodel.store.schema import webhook_deliveries, webhooks

__all__ = [
    "add_webhook",
    "any_webhooks",
    "delivered",
    "deliveries",
    "due_webhooks",
    "failed_attempt",
    "list_webhooks",
    "record_attempt",
    "replay_from",
    "stop_webhook",
    "take",
    "webhook",
]


def add_webhook(conn: Connection, url: str, secret: str, by: str, now: int, after: int) -> int:
    """Register a receiver that starts after sequence number ``after``; its id."""
    result = conn.execute(
        insert(webhooks).values(
            url=url, secret=secret, created_at=now, created_by=by, delivered_through=after,
            attempts=0, next_attempt_at=now, last_error=None, disabled_at=None,
        )
    )  # fmt: skip
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def webhook(conn: Connection, hook_id: int) -> dict[str, Any] | None:
    found = conn.execute(select(webhooks).where(webhooks.c.id == hook_id)).first()
    return None if found is None else dict(found._mapping)


def list_webhooks(conn: Connection) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(select(webhooks).order_by(webhooks.c.id))]


def any_webhooks(conn: Connection) -> bool:
    """Whether any receiver is in service."""
    found = select(webhooks.c.id).where(webhooks.c.disabled_at.is_(None)).limit(1)
    return conn.execute(found).first() is not None


def due_webhooks(conn: Connection, now: int) -> list[dict[str, Any]]:
    """Receivers in service whose next attempt is due."""
    found = conn.execute(
        select(webhooks).where(webhooks.c.disabled_at.is_(None), webhooks.c.next_attempt_at <= now)
    )
    return [dict(r._mapping) for r in found]


def take(conn: Connection, hook: Mapping[str, Any], until: int) -> bool:
    """Hold ``hook`` until ``until`` (no other worker delivers to it meanwhile), if no other
    worker took it since it was read; whether this one did."""
    result = conn.execute(
        update(webhooks)
        .where(
            webhooks.c.id == hook["id"],
            webhooks.c.next_attempt_at == hook["next_attempt_at"],
            webhooks.c.disabled_at.is_(None),
        )
        .values(next_attempt_at=until)
    )
    return result.rowcount == 1


def record_attempt(
    conn: Connection, hook_id: int, seq: int, at: int, status: int | None, error: str | None,
    duration_us: int,
) -> None:  # fmt: skip
    conn.execute(
        insert(webhook_deliveries).values(
            webhook_id=hook_id, seq=seq, attempted_at=at, status=status, error=error,
            duration_us=duration_us,
        )
    )  # fmt: skip


def delivered(conn: Connection, hook_id: int, seq: int, next_at: int) -> None:
    """``seq`` was answered 2xx: the receiver stands after it, due again at ``next_at``."""
    conn.execute(
        update(webhooks)
        .where(webhooks.c.id == hook_id)
        .values(delivered_through=seq, attempts=0, next_attempt_at=next_at, last_error=None)
    )


def failed_attempt(conn: Connection, hook_id: int, error: str, retry_at: int) -> None:
    conn.execute(
        update(webhooks)
        .where(webhooks.c.id == hook_id)
        .values(attempts=webhooks.c.attempts + 1, next_attempt_at=retry_at, last_error=error)
    )


def replay_from(conn: Connection, hook_id: int, after: int, now: int) -> bool:
    """Deliver again everything after ``after``, from now; whether the receiver exists."""
    result = conn.execute(
        update(webhooks)
        .where(webhooks.c.id == hook_id)
        .values(
            delivered_through=after, attempts=0, next_attempt_at=now, last_error=None,
            disabled_at=None,
        )
    )  # fmt: skip
    return result.rowcount == 1


def stop_webhook(conn: Connection, hook_id: int, now: int) -> bool:
    result = conn.execute(
        update(webhooks)
        .where(webhooks.c.id == hook_id, webhooks.c.disabled_at.is_(None))
        .values(disabled_at=now)
    )
    return result.rowcount == 1


def deliveries(
    conn: Connection, hook_id: int, *, failed_only: bool, limit: int
) -> list[dict[str, Any]]:
    """The receiver's latest attempts, newest first (only those not answered 2xx)."""
    statement = select(webhook_deliveries).where(webhook_deliveries.c.webhook_id == hook_id)
    if failed_only:
        statement = statement.where(
            ~func.coalesce(webhook_deliveries.c.status, 0).between(200, 299)
        )
    found = conn.execute(statement.order_by(webhook_deliveries.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in found]
