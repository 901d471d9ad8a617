"""Final outcomes: the versions of a decision that settle a refund request, the feed the
refund pipeline follows, and appeals.

A request's automatic decision is version 1 (the ``decisions`` row). When it approves or
blocks, it is also the request's final outcome and the writer stores it here in the same
transaction (``automatic_outcome``). A review is settled later by a reviewer's verdict
(version 2), and a block or a refusal may be appealed once, the appeal's result being the
next version. No version is ever changed.

The feed orders outcomes by ``seq``. A sequence number taken as a row is inserted would
let a reader see 7 before 6 commits (two writers, PostgreSQL) and skip 6 for good; so a
version is inserted without one and ``sequence`` numbers the committed ones afterwards,
one sequencer at a time, in the order they were decided. A reader that has seen N has seen
every outcome below N.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from riskmodel.store.decisions import marker
from riskmodel.store.schema import appeals, outcomes

__all__ = [
    "FINAL",
    "VERSION_COLUMNS",
    "appeal_of",
    "automatic_outcome",
    "close_appeal",
    "feed",
    "insert_appeal",
    "insert_outcome",
    "latest_outcome",
    "sequence",
    "versions",
]

VERSION_COLUMNS = tuple(c.name for c in outcomes.columns)
FINAL = frozenset({"approve", "block"})
"""Automatic decisions that settle a request; a review waits for a verdict."""

# Any constant shared by every worker: PostgreSQL's advisory lock that makes the sequencer
# one at a time.
_SEQUENCER_LOCK = 0x72697366


def automatic_outcome(decision: Mapping[str, Any]) -> dict[str, Any] | None:
    """Version 1 of a request's outcomes from its ``decisions`` row, if it settles it."""
    if decision["decision"] not in FINAL:
        return None
    return {
        "event_id": f"{decision['request_id']}:1",
        "seq": None,
        "request_id": decision["request_id"],
        "version": 1,
        "kind": "automatic",
        "decision": decision["decision"],
        "approved_amount": decision["approved_amount"],
        "is_abuse": None,
        "note": None,
        "decided_by": None,
        "decided_at": decision["decided_at"],
        "due_at": None,
        "late": False,
    }


def insert_outcome(conn: Connection, row: Mapping[str, Any]) -> None:
    """Store one version, not yet sequenced. On the decision path: a plain statement, not
    one SQLAlchemy compiles."""
    placeholders = ", ".join([marker(conn)] * len(VERSION_COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO outcomes ({', '.join(VERSION_COLUMNS)}) VALUES ({placeholders})",
        tuple(None if c == "seq" else row[c] for c in VERSION_COLUMNS),
    )


def versions(conn: Connection, request_id: str) -> list[dict[str, Any]]:
    """Every stored outcome of ``request_id``, oldest version first."""
    found = conn.execute(
        select(outcomes).where(outcomes.c.request_id == request_id).order_by(outcomes.c.version)
    )
    return [dict(row._mapping) for row in found]


def latest_outcome(conn: Connection, request_id: str) -> dict[str, Any] | None:
    found = versions(conn, request_id)
    return found[-1] if found else None


def sequence(conn: Connection) -> int:
    """Number the outcomes committed without a sequence number, after the highest one, in
    the order they were decided; how many were numbered. Call it in a transaction of its
    own: on PostgreSQL it holds a lock until that transaction ends."""
    pending = select(outcomes.c.event_id).where(outcomes.c.seq.is_(None)).limit(1)
    if conn.execute(pending).first() is None:
        return 0
    if conn.dialect.name == "postgresql":
        # Read committed: after the lock, the statement below sees every commit before it.
        conn.execute(select(func.pg_advisory_xact_lock(_SEQUENCER_LOCK)))
    numbered = (
        select(
            outcomes.c.event_id,
            func.row_number()
            .over(order_by=(outcomes.c.decided_at, outcomes.c.event_id))
            .label("n"),
        )
        .where(outcomes.c.seq.is_(None))
        .subquery()
    )
    highest = select(func.coalesce(func.max(outcomes.c.seq), 0)).scalar_subquery()
    result = conn.execute(
        update(outcomes)
        .values(seq=highest + numbered.c.n)
        .where(outcomes.c.event_id == numbered.c.event_id)
    )
    return int(result.rowcount)


def feed(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` sequenced outcomes after ``after``, in order."""
    found = conn.execute(
        select(outcomes).where(outcomes.c.seq > after).order_by(outcomes.c.seq).limit(limit)
    )
    return [dict(row._mapping) for row in found]


def appeal_of(conn: Connection, request_id: str) -> dict[str, Any] | None:
    """The appeal of ``request_id`` (open or decided), or None."""
    found = conn.execute(select(appeals).where(appeals.c.request_id == request_id)).first()
    return None if found is None else dict(found._mapping)


def insert_appeal(conn: Connection, row: Mapping[str, Any]) -> bool:
    """Store an appeal unless the request already has one; whether it was stored."""
    if appeal_of(conn, str(row["request_id"])) is not None:
        return False
    conn.execute(insert(appeals).values(dict(row)))
    return True


def close_appeal(conn: Connection, request_id: str, version: int) -> None:
    conn.execute(
        update(appeals).where(appeals.c.request_id == request_id).values(decided_version=version)
    )
