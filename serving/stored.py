"""Decisions in the store: their columns, the one-row reads and writes of the serving path.

Reads go straight to the driver's cursor: SQLAlchemy's result set-up (column metadata per
execution) cost about 0.15 ms a statement here, as much as an indexed read itself. Writes
go through the ``Connection`` so that its transaction knows of them and commits them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine

__all__ = [
    "DECISION_COLUMNS",
    "REQUEST_COLUMNS",
    "fetch_one",
    "insert_decision",
    "marker",
    "order_money_out",
    "order_requests",
    "reading",
    "request_hash",
    "same_request_stored",
    "stored_decision",
]

DECISION_COLUMNS = (
    "request_id",
    "decision",
    "score",
    "approved_amount",
    "reasons",
    "review_queue",
    "review_due_at",
    "model_version",
    "policy_version",
    "policy_hash",
    "feature_version",
    "decided_at",
    "request_hash",
    "shadow",
)
REQUEST_COLUMNS = (
    "request_id",
    "order_id",
    "user_id",
    "requested_at",
    "amount",
    "reason",
    "days_used_claimed",
    "device_id",
    "ip",
    "channel",
)


def marker(conn: Connection) -> str:
    """The driver's parameter placeholder: ``%s`` on PostgreSQL, ``?`` on SQLite."""
    return "%s" if conn.dialect.name == "postgresql" else "?"


def fetch_one(conn: Connection, sql: str, parameters: tuple[Any, ...]) -> Any:
    """One row of a read (``?`` placeholders on SQLite, ``%s`` on PostgreSQL), or None."""
    rows = _fetch(conn, sql, parameters, many=False)
    return rows[0] if rows else None


def _fetch(conn: Connection, sql: str, parameters: tuple[Any, ...], *, many: bool) -> list[Any]:
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, parameters)
        if many:
            return list(cursor.fetchall())
        found = cursor.fetchone()
        return [] if found is None else [found]
    finally:
        cursor.close()


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for one-row reads (``fetch_one``), ended with a commit.

    Not the pool's rollback: psycopg drops every prepared statement of a connection on
    rollback, and the online feature statement then has to be planned again, about 4 ms
    on PostgreSQL for each decision (asked for 200 decisions a second, the service then
    managed 140). A commit of a read-only transaction keeps them. On the driver's
    connection: the reads ran on its cursor, so SQLAlchemy knows of no transaction to end.
    """
    with engine.connect() as conn:
        yield conn
        conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]


def request_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of the request in store units: the same request written differently (another
    time zone, ``5`` or ``5.00``) has the same hash."""
    canonical = json.dumps({k: row[k] for k in REQUEST_COLUMNS}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def stored_decision(conn: Connection, request_id: str) -> dict[str, Any] | None:
    """The decision stored for ``request_id`` as a row dict, or None."""
    found = fetch_one(
        conn,
        f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE request_id = {marker(conn)}",
        (request_id,),
    )
    return None if found is None else dict(zip(DECISION_COLUMNS, found, strict=True))


def order_requests(conn: Connection, order_id: str, request_id: str) -> tuple[tuple[str, int], ...]:
    """The refund requests stored for ``order_id`` other than ``request_id``, as (request
    id, amount in cents), whatever their time."""
    rows = _fetch(
        conn,
        "SELECT request_id, amount FROM refund_requests "
        f"WHERE order_id = {marker(conn)} AND request_id <> {marker(conn)} ORDER BY request_id",
        (order_id, request_id),
        many=True,
    )
    return tuple((str(found), int(amount)) for found, amount in rows)


def order_money_out(conn: Connection, order_id: str, request_id: str) -> tuple[int, int]:
    """Money gone out on ``order_id`` through its stored requests other than
    ``request_id``, whatever their time, in cents: what their outcomes say was paid, and
    what this service approved on them."""
    found = fetch_one(
        conn,
        "SELECT COALESCE(SUM(r.paid_amount), 0), COALESCE(SUM(CASE WHEN d.decision = "
        "'approve' THEN d.approved_amount ELSE 0 END), 0) FROM refund_requests r "
        "LEFT JOIN decisions d ON d.request_id = r.request_id "
        f"WHERE r.order_id = {marker(conn)} AND r.request_id <> {marker(conn)}",
        (order_id, request_id),
    )
    return (0, 0) if found is None else (int(found[0]), int(found[1]))


def same_request_stored(conn: Connection, row: Mapping[str, Any]) -> bool:
    """Whether the request stored under ``row``'s id is ``row`` (by ``request_hash``)."""
    found = fetch_one(
        conn,
        f"SELECT {', '.join(REQUEST_COLUMNS)} FROM refund_requests "
        f"WHERE request_id = {marker(conn)}",
        (row["request_id"],),
    )
    return found is not None and request_hash(
        dict(zip(REQUEST_COLUMNS, found, strict=True))
    ) == request_hash(row)


def insert_decision(conn: Connection, decision: Mapping[str, Any]) -> bool:
    """Insert a decisions row unless one is stored under its id; whether it was inserted."""
    placeholders = ", ".join([marker(conn)] * len(DECISION_COLUMNS))
    result = conn.exec_driver_sql(
        f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) VALUES ({placeholders}) "
        "ON CONFLICT (request_id) DO NOTHING",
        tuple(decision[c] for c in DECISION_COLUMNS),
    )
    return result.rowcount == 1
