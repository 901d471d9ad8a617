"""The store's derived data, kept on every write: the derived columns' fill statements,
the sightings, abuse changes and day tiles (``entity_days``, ``sighting_days``), refreshed
for the keys a write touched (``Stale``) or rebuilt."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    String,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
    update,
)

from riskmodel.store.schema import (
    ABUSE_KEYS,
    BASE_AMOUNT,
    DERIVED,
    EVENT_TABLES,
    SIGHTED,
    TILE_SOURCES,
    TILE_US,
    TILED,
    abuse_changes,
    entity_days,
    sighting_days,
    sightings,
)
from riskmodel.units import RATE_UNIT

__all__ = [
    "CHUNK",
    "LABEL_SOURCES",
    "SIGHTING_SOURCES",
    "TILED_SOURCES",
    "SightingDays",
    "Stale",
    "Tiles",
    "base_amount",
    "chunks",
    "fill_statement",
    "on_request",
    "refresh_abuse_changes",
    "refresh_derived",
    "refresh_entity_days",
    "refresh_sighting_days",
    "refresh_sightings",
]

CHUNK = 20_000

# The event tables whose writes change the sightings, the abuse changes and the event
# tiles of ``entity_days``.
SIGHTING_SOURCES = ("users", "orders", "refund_requests")
LABEL_SOURCES = ("orders", "refund_requests", "labels")
TILED_SOURCES = ("orders", "refund_requests")

# Written out, not bound: PostgreSQL groups by the day only if the select list's and the
# GROUP BY's expressions are the same text.
_TILE = literal_column(str(TILE_US), BigInteger)


def chunks(rows: list[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


Tiles = set[tuple[str, str, int]]
"""(entity kind, entity, day) tiles of ``entity_days`` or ``sighting_days``."""


@dataclass
class Stale:
    """Keys whose derived data (sightings, abuse changes, day tiles) awaits a refresh;
    None is all.

    A caller writing several tables in one transaction collects them here and refreshes
    once at the end (``refresh_derived``), instead of once per table.
    """

    users: set[str] | None = field(default_factory=set)
    requests: set[str] | None = field(default_factory=set)
    days: Tiles | None = field(default_factory=set)

    def add(self, users: set[str] | None, requests: set[str] | None, days: Tiles | None) -> None:
        self.users = None if users is None or self.users is None else self.users | users
        self.requests = (
            None if requests is None or self.requests is None else self.requests | requests
        )
        self.days = None if days is None or self.days is None else self.days | days


def refresh_derived(conn: Connection, stale: Stale) -> None:
    """Bring the sightings, abuse changes and day tiles of the ``stale`` keys up to date."""
    if stale.users is None or stale.users:
        refresh_sightings(conn, stale.users)
    if stale.requests is None or stale.requests:
        refresh_abuse_changes(conn, stale.requests)
    if stale.days is None or stale.days:
        refresh_entity_days(conn, stale.days, _EVENT_SOURCES)
    stale.users, stale.requests, stale.days = set(), set(), set()


def refresh_sightings(conn: Connection, users: Iterable[str] | None, *, days: bool = True) -> None:
    """Recompute the sightings of ``users`` (all of them when None) from the events, and
    their days' tiles (``sighting_days``) unless ``days`` is False."""
    orders, requests = EVENT_TABLES["orders"], EVENT_TABLES["refund_requests"]
    seen = []
    for kind in SIGHTED:
        for table, entity, time in (
            (orders, orders.c[kind], orders.c.paid_at),
            (requests, on_request(kind), requests.c.requested_at),
        ):
            seen.append(
                select(
                    literal(kind, String(32)).label("kind"),
                    entity.label("entity"),
                    table.c.user_id.label("user_id"),
                    time.label("time"),
                ).where(entity.is_not(None))
            )
    wanted = None if users is None else sorted(set(users))
    if wanted == []:
        return
    staged = None if wanted is None else _stage(conn, wanted)
    tiles = set() if staged is None or not days else _sighting_tiles(conn, staged)
    if staged is None:
        conn.execute(sightings.delete())
    else:
        conn.execute(sightings.delete().where(sightings.c.user_id.in_(staged)))
        seen = [q.where(q.selected_columns.user_id.in_(staged)) for q in seen]
    events = union_all(*seen).subquery()
    users_table = EVENT_TABLES["users"]
    first = (
        select(
            events.c.kind,
            events.c.entity,
            events.c.user_id,
            func.min(events.c.time),
            users_table.c.registered_at,
        )
        .select_from(events.join(users_table, users_table.c.user_id == events.c.user_id))
        .group_by(events.c.kind, events.c.entity, events.c.user_id, users_table.c.registered_at)
    )
    conn.execute(
        sightings.insert().from_select(
            ["entity_kind", "entity", "user_id", "first_seen_at", "registered_at"], first
        )
    )
    if not days:
        return
    if staged is None:
        refresh_sighting_days(conn, None)
    else:
        # The days the users were first seen on, before and after: both change.
        refresh_sighting_days(conn, tiles | _sighting_tiles(conn, staged))


SightingDays = set[tuple[str, str, int]]
"""(entity kind, entity, day) tiles of ``sighting_days``."""


def _sighting_tiles(conn: Connection, users: Any) -> SightingDays:
    """The tiles holding the sightings of ``users`` (a select of user ids)."""
    day = sightings.c.first_seen_at // _TILE
    rows = conn.execute(
        select(sightings.c.entity_kind, sightings.c.entity, day)
        .where(sightings.c.user_id.in_(users), sightings.c.first_seen_at >= 0)
        .distinct()
    )
    return {(str(kind), str(entity), int(d)) for kind, entity, d in rows}


# A connection-local list of (entity kind, entity, day) tiles.
_touched_tiles = Table(
    "touched_tiles",
    MetaData(),
    Column("entity_kind", String(32), primary_key=True),
    Column("entity", String(128), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    prefixes=["TEMPORARY"],
)


def refresh_sighting_days(conn: Connection, tiles: Iterable[tuple[str, str, int]] | None) -> None:
    """Recompute the ``sighting_days`` ``tiles`` (every tile when None) from the sightings."""
    wanted = None if tiles is None else sorted(set(tiles))
    if wanted == []:
        return
    seen = sightings.c
    day = (seen.first_seen_at // _TILE).label("day")
    counts = select(
        seen.entity_kind, seen.entity, day, func.count(), func.max(seen.registered_at)
    ).where(seen.first_seen_at >= 0)
    if wanted is None:
        conn.execute(sighting_days.delete())
    else:
        staged = _stage_rows(conn, _touched_tiles, wanted)
        tile = tuple_(sighting_days.c.entity_kind, sighting_days.c.entity, sighting_days.c.day)
        conn.execute(sighting_days.delete().where(tile.in_(select(*staged.c))))
        # Each staged tile's sightings: one range of the sightings index.
        counts = counts.join(
            staged,
            and_(
                staged.c.entity_kind == seen.entity_kind,
                staged.c.entity == seen.entity,
                seen.first_seen_at >= staged.c.day * _TILE,
                seen.first_seen_at < (staged.c.day + 1) * _TILE,
            ),
        )
    conn.execute(
        sighting_days.insert().from_select(
            ["entity_kind", "entity", "day", "users", "newest_registration"],
            counts.group_by(seen.entity_kind, seen.entity, day),
        )
    )


# A connection-local list of keys (users or requests), so that a recompute is one
# set-based statement however many keys it covers.
_touched = Table(
    "touched_keys",
    MetaData(),
    Column("key", String(128), primary_key=True),
    prefixes=["TEMPORARY"],
)


_ORDER_SIDE = frozenset(DERIVED["refund_requests"].values())


def on_request(kind: str) -> Any:
    """The refund-request column holding an entity: the request's own user, device and IP,
    its order's payment account, seller and product (the store's copies)."""
    requests = EVENT_TABLES["refund_requests"]
    return requests.c[f"order_{kind}" if kind in _ORDER_SIDE else kind]


def _stage(conn: Connection, keys: list[str]) -> Any:
    """Put ``keys`` in the connection's temporary table; a select of them."""
    return select(_stage_rows(conn, _touched, [(key,) for key in keys]).c.key)


def _stage_rows(conn: Connection, staging: Table, rows: list[tuple[Any, ...]]) -> Table:
    """Put ``rows`` in the connection's temporary table ``staging``, emptied first; it."""
    suffix = " ON COMMIT DROP" if conn.dialect.name == "postgresql" else ""
    columns = ", ".join(f"{c.name} {c.type.compile(conn.dialect)}" for c in staging.columns)
    key = ", ".join(c.name for c in staging.primary_key.columns)
    conn.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging.name} "
        f"({columns}, PRIMARY KEY ({key})){suffix}"
    )
    conn.execute(staging.delete())
    marker = "%s" if conn.dialect.name == "postgresql" else "?"
    sql = f"INSERT INTO {staging.name} VALUES ({', '.join([marker] * len(staging.columns))})"
    for chunk in chunks(rows, CHUNK):
        conn.exec_driver_sql(sql, chunk)
    return staging


def refresh_abuse_changes(conn: Connection, requests: Iterable[str] | None) -> None:
    """Recompute the abuse changes of ``requests`` (all when None) from labels and
    requests, and the verdict tiles they fall in, before and after."""
    labels, stored = EVENT_TABLES["labels"], EVENT_TABLES["refund_requests"]
    wanted = None if requests is None else sorted(set(requests))
    if wanted == []:
        return
    staged = None if wanted is None else _stage(conn, wanted)
    tiles = None if staged is None else _verdict_tiles(conn, staged)
    if staged is None:
        conn.execute(abuse_changes.delete())
    else:
        conn.execute(abuse_changes.delete().where(abuse_changes.c.request_id.in_(staged)))
    state = case((labels.c.is_abuse.is_(True), 1), else_=0)
    by, when = labels.c.request_id, labels.c.labeled_at
    # A verdict dated before its request counts from the request's time: it cannot have
    # been known earlier, and counting it earlier would show a request its own verdict.
    at = case(
        (labels.c.labeled_at < stored.c.requested_at, stored.c.requested_at),
        else_=labels.c.labeled_at,
    )
    steps = select(
        labels.c.request_id,
        at.label("at"),
        (state - func.lag(state, 1, 0).over(partition_by=by, order_by=when)).label("delta"),
        case((func.row_number().over(partition_by=by, order_by=when) == 1, 1), else_=0).label(
            "judged"
        ),
    ).select_from(labels.join(stored, stored.c.request_id == labels.c.request_id))
    if staged is not None:
        steps = steps.where(labels.c.request_id.in_(staged))
    step = steps.subquery()
    # Two verdicts moved to the request's time fall on one instant: one change between them.
    changes = (
        select(
            step.c.request_id,
            step.c.at,
            func.sum(step.c.delta).label("delta"),
            func.sum(step.c.judged).label("judged"),
        )
        .group_by(step.c.request_id, step.c.at)
        .subquery()
    )
    keys = []
    for kind in ABUSE_KEYS:
        column = on_request(kind)
        query = select(
            literal(kind, String(32)).label("kind"),
            column.label("entity"),
            stored.c.request_id.label("request_id"),
        ).where(column.is_not(None))
        keys.append(query if staged is None else query.where(stored.c.request_id.in_(staged)))
    entities = union_all(*keys).subquery()
    conn.execute(
        abuse_changes.insert().from_select(
            ["entity_kind", "entity", "request_id", "labeled_at", "delta", "judged"],
            select(
                entities.c.kind,
                entities.c.entity,
                changes.c.request_id,
                changes.c.at,
                changes.c.delta,
                changes.c.judged,
            )
            .select_from(changes.join(entities, entities.c.request_id == changes.c.request_id))
            .where(or_(changes.c.delta != 0, changes.c.judged != 0)),
        )
    )
    if tiles is not None and staged is not None:
        tiles |= _verdict_tiles(conn, staged)
    refresh_entity_days(conn, tiles, _VERDICT_SOURCES)


def _verdict_tiles(conn: Connection, requests: Any) -> Tiles:
    """The tiles holding the abuse changes of ``requests`` (a select of request ids)."""
    day = abuse_changes.c.labeled_at // _TILE
    rows = conn.execute(
        select(abuse_changes.c.entity_kind, abuse_changes.c.entity, day)
        .where(
            abuse_changes.c.request_id.in_(requests),
            abuse_changes.c.entity_kind.in_(TILED),
            abuse_changes.c.labeled_at >= 0,
        )
        .distinct()
    )
    return {(str(kind), str(entity), int(d)) for kind, entity, d in rows}


_EVENT_SOURCES = ("orders", "refund_requests")
_VERDICT_SOURCES = ("abuse", "verdicts")


def _tile_parts(sources: Sequence[str]) -> list[tuple[str, str, Any, Any, Any, Any, Any]]:
    """Per source and tiled entity: (source, kind, entity column, time, reason, n, amount)
    of the rows ``entity_days`` counts."""
    orders, requests, changes = (
        EVENT_TABLES["orders"],
        EVENT_TABLES["refund_requests"],
        abuse_changes.c,
    )
    parts: list[tuple[str, str, Any, Any, Any, Any, Any]] = []
    for kind in TILED:
        if "orders" in sources:
            parts.append(
                ("orders", kind, orders.c[kind], orders.c.paid_at, literal(""), literal(1),
                 orders.c[BASE_AMOUNT])
            )  # fmt: skip
        if "refund_requests" in sources:
            parts.append(
                ("refund_requests", kind, on_request(kind), requests.c.requested_at,
                 requests.c.reason, literal(1), requests.c[BASE_AMOUNT])
            )  # fmt: skip
        for source, count in (("abuse", changes.delta), ("verdicts", changes.judged)):
            if source in sources:
                parts.append(
                    (source, kind, changes.entity, changes.labeled_at, literal(""), count,
                     literal(0))
                )  # fmt: skip
    return parts


def refresh_entity_days(
    conn: Connection,
    days: Iterable[tuple[str, str, int]] | None,
    sources: Sequence[str] = TILE_SOURCES,
) -> None:
    """Recompute the ``entity_days`` tiles of ``days`` (every tile when None) for the
    ``sources`` (default: all four) from the events and abuse changes."""
    wanted = None if days is None else sorted(set(days))
    if wanted == []:
        return
    mine = entity_days.c.source.in_(sources)
    staged = None
    if wanted is None:
        conn.execute(entity_days.delete().where(mine))
    else:
        staged = _stage_rows(conn, _touched_tiles, wanted)
        tile = tuple_(entity_days.c.entity_kind, entity_days.c.entity, entity_days.c.day)
        conn.execute(entity_days.delete().where(mine, tile.in_(select(*staged.c))))
    counts = []
    for source, kind, entity, time, reason, n, amount in _tile_parts(sources):
        day = (time // _TILE).label("day")
        query = select(
            literal(kind, String(32)),
            entity,
            literal(source, String(32)),
            day,
            reason,
            func.sum(n),
            func.coalesce(func.sum(amount), 0),
        ).where(entity.is_not(None), time >= 0)
        if source in _VERDICT_SOURCES:
            query = query.where(abuse_changes.c.entity_kind == kind)
        if staged is not None:
            # Each staged tile's rows: one range of the (entity, time) index.
            query = query.join(
                staged,
                and_(
                    staged.c.entity_kind == kind,
                    staged.c.entity == entity,
                    time >= staged.c.day * _TILE,
                    time < (staged.c.day + 1) * _TILE,
                ),
            )
        counts.append(query.group_by(entity, day, reason))
    rows = union_all(*counts).subquery()
    conn.execute(
        entity_days.insert().from_select(
            ["entity_kind", "entity", "source", "day", "reason", "n", "amount"],
            # A verdict tile whose changes cancel out (+1 then -1) holds nothing to read.
            select(rows).where(or_(rows.c[5] != 0, rows.c[6] != 0)),
        )
    )


def base_amount(amount: int, rate: int | None) -> int:
    """``amount`` (cents of a currency worth ``rate`` millionths) in cents of the reporting
    currency, as the store and both feature engines compute it."""
    return amount if rate is None or rate == RATE_UNIT else amount * rate // RATE_UNIT


def _rate_of(currency: Any) -> Any:
    """The stored rate of ``currency`` (a column expression), or null."""
    rates = EVENT_TABLES["rates"]
    return select(rates.c.rate).where(rates.c.currency == currency).scalar_subquery()


def _converted(amount: Any, rate: Any) -> Any:
    """``base_amount`` in SQL: integer arithmetic, so it equals the Python and numpy one."""
    unit = literal_column(str(RATE_UNIT), BigInteger)
    return case((rate.is_(None), amount), (rate == unit, amount), else_=amount * rate // unit)


def fill_statement(target: Table, *, by: str | None = "request_id") -> Any:
    """The update filling ``target``'s derived columns (its rows of ``by`` in ``:ids``,
    or all of them)."""
    orders = EVENT_TABLES["orders"]
    if target.name == "orders":
        values = {BASE_AMOUNT: _converted(orders.c.amount, _rate_of(orders.c.currency))}
    else:
        mine = orders.c.order_id == target.c.order_id
        values = {
            name: select(orders.c[source]).where(mine).scalar_subquery()
            for name, source in DERIVED[target.name].items()
        }
        currency = select(orders.c.currency).where(mine).correlate(target).scalar_subquery()
        values[BASE_AMOUNT] = _converted(target.c.amount, _rate_of(currency))
    statement = update(target).values(values)
    if by is None:
        return statement
    return statement.where(target.c[by].in_(bindparam("ids", expanding=True)))
