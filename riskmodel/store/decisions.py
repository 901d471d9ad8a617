"""The decision path's reads and writes: one coarse read before a decision
(``decision_context``), the decision row in and out (``DECISION_COLUMNS``,
``stored_decision``, ``insert_decision``), and the checks the writer makes as it writes.

Reads go straight to the driver's cursor: SQLAlchemy's result set-up (column metadata per
execution) cost about 0.15 ms a statement here, as much as an indexed read itself. Writes
go through the ``Connection`` so that its transaction knows of them and commits them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import Connection, Engine

from riskmodel.store.connection import driver_errors
from riskmodel.store.schema import EVENT_TABLES, decisions

__all__ = [
    "DECISION_COLUMNS",
    "REQUEST_COLUMNS",
    "Misfit",
    "OrderRequest",
    "Replay",
    "RequestContext",
    "decision_context",
    "fetch_one",
    "insert_decision",
    "marker",
    "order_requests",
    "reading",
    "request_hash",
    "same_request_stored",
    "stored_decision",
]

DECISION_COLUMNS = tuple(column.name for column in decisions.columns)
"""A decision row's columns, in the table's order."""
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
"""What a caller sends of a refund request: what ``request_hash`` covers."""
_ORDER = tuple(c.name for c in EVENT_TABLES["orders"].columns)
_USER = tuple(c.name for c in EVENT_TABLES["users"].columns)


def marker(conn: Connection) -> str:
    """The driver's parameter placeholder: ``%s`` on PostgreSQL, ``?`` on SQLite."""
    return "%s" if conn.dialect.name == "postgresql" else "?"


def fetch_one(conn: Connection, sql: str, parameters: tuple[Any, ...]) -> Any:
    """One row of a read (``?`` placeholders on SQLite, ``%s`` on PostgreSQL), or None."""
    rows = _fetch(conn, sql, parameters, many=False)
    return rows[0] if rows else None


def _fetch(conn: Connection, sql: str, parameters: tuple[Any, ...], *, many: bool) -> list[Any]:
    with driver_errors(conn, sql):
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
def reading(engine: Engine, *, each_alone: bool = False) -> Iterator[Connection]:
    """A connection for one-row reads (``fetch_one``), ended with a commit.

    Not the pool's rollback: psycopg drops every prepared statement of a connection on
    rollback, and the online feature statement then has to be planned again, about 4 ms
    on PostgreSQL for each decision (asked for 200 decisions a second, the service then
    managed 140). A commit of a read-only transaction keeps them. On the driver's
    connection: the reads ran on its cursor, so SQLAlchemy knows of no transaction to end.

    ``each_alone``: on PostgreSQL each statement is a transaction of its own, with no
    BEGIN and no COMMIT sent: two round trips fewer, for reads that need no snapshot
    across statements (under READ COMMITTED each statement takes its own anyway). Only
    for reads: a write would commit at once. SQLite is unchanged.
    """
    with engine.connect() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        if not (each_alone and conn.dialect.name == "postgresql"):
            yield conn
            with driver_errors(conn, "COMMIT"):
                dbapi.commit()
            return
        dbapi.autocommit = True
        try:
            yield conn
        finally:
            try:
                dbapi.autocommit = False
            except Exception:
                # Broken, or left in a transaction: never back to the pool as it is.
                conn.invalidate()


def request_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 of the request in store units: the same request written differently (another
    time zone, ``5`` or ``5.00``) has the same hash."""
    canonical = json.dumps({k: row[k] for k in REQUEST_COLUMNS}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the coarse read ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    """A decision is stored under the request's id: its row."""

    decision: dict[str, Any]


@dataclass(frozen=True)
class Misfit:
    """The request does not fit the history (an unknown user or order, another user's
    order, a request dated before the payment): ``code`` and what to do, in ``message``."""

    code: str
    message: str


@dataclass(frozen=True)
class RequestContext:
    """What a fresh decision reads of the store: the order's and the user's rows (every
    column), the rate of the order's currency (None: not stored), the order's other
    stored requests, whatever their time (``OrderRequest``), and the time of the newest
    stored request of the request's user, order, device, IP or payment account (None:
    none), which is after the request's own when requests arrived out of their order."""

    order: dict[str, Any]
    user: dict[str, Any]
    rate: int | None
    others: tuple[OrderRequest, ...]
    newest: int | None = None


@dataclass(frozen=True)
class OrderRequest:
    """Another stored request of the order: its id, amount, and the money that went out
    on it (cents): what its outcome says was paid, what this service approved."""

    request_id: str
    amount: int
    paid: int
    approved: int


_NOT_STORED = "not stored; ask again with the same request_id"


@cache
def _context_sql(dialect: str) -> str:
    """The coarse read's statement, written once per database: the decision, the order,
    its rate, the user, and last the time of the newest stored request of the request's
    user, order, device, IP or payment account (its order's), each one index seek."""
    m = "%s" if dialect == "postgresql" else "?"
    keyed = {column: m for column in _NEWEST_BY}
    keyed["order_payment_account"] = f"(SELECT payment_account FROM orders WHERE order_id = {m})"
    newest = " UNION ALL ".join(
        f"SELECT MAX(requested_at) AS at FROM refund_requests WHERE {column} = {value} "
        f"AND request_id <> {m}"
        for column, value in keyed.items()
    )
    return (
        f"SELECT {', '.join(f'd.{c}' for c in DECISION_COLUMNS)}, "
        f"{', '.join(f'o.{c}' for c in _ORDER)}, r.rate, "
        f"{', '.join(f'u.{c}' for c in _USER)}, "
        f"(SELECT MAX(at) FROM ({newest}) AS newest) "
        "FROM (SELECT 1 AS one) AS x "
        f"LEFT JOIN decisions AS d ON d.request_id = {m} "
        f"LEFT JOIN orders AS o ON o.order_id = {m} "
        "LEFT JOIN rates AS r ON r.currency = o.currency "
        f"LEFT JOIN users AS u ON u.user_id = {m}"
    )


# Whose stored requests a request may be dated before (``RequestContext.newest``).
_NEWEST_BY = ("user_id", "order_id", "device_id", "ip", "order_payment_account")


def _context_parameters(row: Mapping[str, Any]) -> tuple[Any, ...]:
    """``_context_sql``'s parameters in the order they appear in it."""
    parameters: list[Any] = []
    for column in _NEWEST_BY:
        key = "order_id" if column == "order_payment_account" else column
        parameters += [row.get(key), row["request_id"]]
    return (*parameters, row["request_id"], row["order_id"], row["user_id"])


def decision_context(
    conn: Connection, row: Mapping[str, Any], *, again: bool = False
) -> Replay | Misfit | RequestContext:
    """The one read before a decision of ``row`` (a refund request in store units): the
    decision already stored under its id, else what does not fit, else the context.
    ``again``: the context even when a decision is stored (to decide it again).

    One statement for the decision, the order, its rate, the user and the newest request
    of its entities; one for the order's other requests."""
    found = fetch_one(conn, _context_sql(conn.dialect.name), _context_parameters(row))
    assert found is not None  # the outer joins always yield their one row
    n, m = len(DECISION_COLUMNS), len(_ORDER)
    decision = dict(zip(DECISION_COLUMNS, found[:n], strict=True))
    if decision["request_id"] is not None and not again:
        return Replay(decision)
    order = dict(zip(_ORDER, found[n : n + m], strict=True))
    rate, newest = found[n + m], found[-1]
    user = dict(zip(_USER, found[n + m + 1 : -1], strict=True))
    misfit = _misfit(row, order, user)
    if misfit is not None:
        return misfit
    return RequestContext(
        order,
        user,
        None if rate is None else int(rate),
        order_requests(conn, row),
        None if newest is None else int(newest),
    )


def _misfit(
    row: Mapping[str, Any], order: Mapping[str, Any], user: Mapping[str, Any]
) -> Misfit | None:
    order_id, user_id = row["order_id"], row["user_id"]
    if user["user_id"] is None:
        return Misfit(
            "UNKNOWN_USER",
            f"the user {user_id!r} is not in the service's history; {_NOT_STORED} once it is",
        )
    if order["order_id"] is None:
        return Misfit(
            "UNKNOWN_ORDER",
            f"the order {order_id!r} is not in the service's history; {_NOT_STORED} once it is",
        )
    if order["user_id"] != user_id:
        return Misfit(
            "ORDER_OF_ANOTHER_USER",
            f"the order {order_id!r} belongs to another user, not {user_id!r}; a reviewer "
            f"decides; {_NOT_STORED} once corrected",
        )
    if int(row["requested_at"]) < int(order["paid_at"]):
        return Misfit(
            "REQUESTED_BEFORE_PAYMENT",
            f"the request is dated before the order {order_id!r} was paid; {_NOT_STORED} "
            "once corrected",
        )
    return None


def order_requests(conn: Connection, row: Mapping[str, Any]) -> tuple[OrderRequest, ...]:
    """The refund requests stored for ``row``'s order other than ``row``, whatever their
    time, with the money that went out on each, in id order."""
    m = marker(conn)
    found = _fetch(
        conn,
        "SELECT r.request_id, r.amount, COALESCE(r.paid_amount, 0), CASE WHEN d.decision = "
        "'approve' THEN d.approved_amount ELSE 0 END FROM refund_requests AS r "
        "LEFT JOIN decisions AS d ON d.request_id = r.request_id "
        f"WHERE r.order_id = {m} AND r.request_id <> {m} ORDER BY r.request_id",
        (row["order_id"], row["request_id"]),
        many=True,
    )
    return tuple(
        OrderRequest(str(rid), int(amount), int(paid), int(approved))
        for rid, amount, paid, approved in found
    )


# --- the decision row ---------------------------------------------------------------------------


def stored_decision(conn: Connection, request_id: str) -> dict[str, Any] | None:
    """The decision stored for ``request_id`` as a row dict, or None."""
    found = fetch_one(
        conn,
        f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE request_id = {marker(conn)}",
        (request_id,),
    )
    return None if found is None else dict(zip(DECISION_COLUMNS, found, strict=True))


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
