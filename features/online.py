"""The online engine: the features of one request, read from the store at request time.

Each (source, entity) group of aggregates becomes one SQL query that folds every window
and filter of the group in a single pass over the entity's events before the request
(an index range scan on ``(entity, time)``). Two kinds of group would read without bound
for a large entity, and read the store's daily tiles instead: a seller's windowed counts
(``seller_days``) and the users seen on a device, IP or payment account
(``sighting_days``), and read at most two part days' events. Context and derived
formulas are the same numpy functions the offline engine runs, called on one row.

    >>> from features.online import online_features
    >>> from riskmodel.store import open_store
    >>> engine = open_store("sqlite://")
    >>> with engine.connect() as conn:                                  # doctest: +SKIP
    ...     online_features(conn, {"request_id": "r1", "order_id": "o1", ...})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    FromClause,
    Select,
    String,
    and_,
    bindparam,
    case,
    distinct,
    func,
    literal,
    select,
    true,
    union_all,
)

from features.catalog import CATALOG
from features.history import ORDER_COLUMNS, request_entity
from features.offline import _with_inputs
from features.spec import HOUR, Agg, Aggregate, Context, Derived, Entity, Source, Type
from riskmodel.store import (
    ABUSE_KEYS,
    EVENT_TABLES,
    SIGHTED,
    TILE_US,
    abuse_changes,
    decisions,
    seller_days,
    sighting_days,
    sightings,
)

__all__ = ["online_features"]

_orders = EVENT_TABLES["orders"]
_refunds = EVENT_TABLES["refund_requests"]
_usage = EVENT_TABLES["usage"]
_labels = EVENT_TABLES["labels"]
_users = EVENT_TABLES["users"]

_ORDER_SIDE = (Entity.PAYMENT_ACCOUNT, Entity.SELLER)
_T = bindparam("t", type_=BigInteger)


def _key(entity: Entity) -> Any:
    return bindparam(f"key_{entity.value}", type_=String)


def online_features(
    conn: Connection, request: Mapping[str, Any], names: Sequence[str] | None = None
) -> dict[str, Any]:
    """Features of one refund request, in store units (``requested_at`` in microseconds,
    ``amount`` in cents), from what the store holds strictly before ``requested_at``.

    The request itself need not be stored. Numbers come back as floats (NaN is null),
    categories as strings or None.
    """
    plan = _plan(tuple(CATALOG) if names is None else tuple(names))
    columns = _request_columns(conn, request)
    t = int(request["requested_at"])
    parameters: dict[str, Any] = {"t": t}
    for window in plan.tiled_windows:
        parameters.update(_tile_bounds(t, window))
    parameters.update(_sighting_bounds(t))
    asked = []
    for index, entity in enumerate(plan.entities):
        key = request_entity(columns, entity)[0]
        if key is None or (isinstance(key, float) and np.isnan(key)):
            continue  # every aggregate of the group stays null
        parameters[f"key_{entity.value}"] = key
        asked.append(index)
    values = np.full(len(plan.aggregates), np.nan)
    if asked:
        # Every group in one statement: one round trip to the database, not one per group.
        query = plan.query(tuple(asked))
        values[query.positions] = query.finish(_run(conn, query.statement, parameters), t)
    for position, aggregate in enumerate(plan.aggregates):
        columns[aggregate.name] = values[position : position + 1]
    for feature in plan.computed:
        columns[feature.name] = feature.compute(columns)
    return {
        name: _category(levels, columns[name][0]) if levels is not None else float(columns[name][0])
        for name, levels in plan.outputs
    }


@dataclass(frozen=True)
class _Query:
    """The statement for some groups of a plan, and how to finish its one row."""

    statement: Select[Any]
    positions: np.ndarray  # where each column of the row goes among the plan's aggregates
    zero_when_null: np.ndarray  # counts and sums: no event is 0, not null
    cents: np.ndarray  # money summed in cents, answered in currency units
    hours_since: np.ndarray  # the latest event's time, answered as hours before ``t``

    def finish(self, row: Sequence[Any], t: int) -> np.ndarray:
        """The row as feature values (the driver's None is NaN, a PostgreSQL sum a Decimal)."""
        values = np.array(row, dtype=float)
        values[self.zero_when_null & np.isnan(values)] = 0.0
        values[self.cents] /= 100
        values[self.hours_since] = (t - values[self.hours_since]) / HOUR
        return values


@dataclass(frozen=True)
class _Plan:
    """What ``online_features`` computes for a choice of features, worked out once.

    ``entities`` and ``groups`` hold one (source, entity) group of aggregates each, in
    the order of ``aggregates``; ``computed`` are the context and derived features in
    the order they depend on each other; ``outputs`` are the names answered, each with
    its category levels (None for a number).
    """

    aggregates: tuple[Aggregate, ...]
    entities: tuple[Entity, ...]
    groups: tuple[tuple[Source, Entity, tuple[Aggregate, ...]], ...]
    computed: tuple[Context | Derived, ...]
    outputs: tuple[tuple[str, tuple[str, ...] | None], ...]
    tiled_windows: tuple[int, ...]  # the windows of groups read from ``seller_days``
    _queries: dict[tuple[int, ...], _Query] = field(default_factory=dict, compare=False)

    def query(self, asked: tuple[int, ...]) -> _Query:
        """The statement for the groups at ``asked`` (the others have no key)."""
        if asked not in self._queries:
            chosen = tuple(self.groups[i] for i in asked)
            order = {a.name: i for i, a in enumerate(self.aggregates)}
            read = [a for _, _, group in chosen for a in group]
            kinds = [a.agg for a in read]
            self._queries[asked] = _Query(
                _combined(chosen),
                np.array([order[a.name] for a in read], dtype=np.intp),
                np.array([k not in (Agg.MAX, Agg.HOURS_SINCE_LAST) for k in kinds]),
                np.array([a.in_currency for a in read]),
                np.array([k is Agg.HOURS_SINCE_LAST for k in kinds]),
            )
        return self._queries[asked]


@cache
def _plan(names: tuple[str, ...]) -> _Plan:
    wanted = _with_inputs(names)
    grouped: dict[tuple[Source, Entity], list[Aggregate]] = {}
    for feature in wanted:
        if isinstance(feature, Aggregate):
            grouped.setdefault((feature.source, feature.entity), []).append(feature)
    groups = tuple((s, e, tuple(group)) for (s, e), group in grouped.items())
    outputs: list[tuple[str, tuple[str, ...] | None]] = []
    for name in names:
        feature = CATALOG[name]
        if feature.type is Type.CATEGORY:
            # A value outside the declared levels is unknown, as offline (build_features).
            outputs.append((name, feature.levels if isinstance(feature, Context) else ()))
        else:
            outputs.append((name, None))
    return _Plan(
        aggregates=tuple(a for _, _, group in groups for a in group),
        entities=tuple(e for _, e, _ in groups),
        groups=groups,
        computed=tuple(f for f in wanted if isinstance(f, Context | Derived)),
        outputs=tuple(outputs),
        tiled_windows=tuple(
            sorted(
                {
                    a.window
                    for s, e, group in groups
                    if _tiled(s, e, group)
                    for a in group
                    if a.window is not None
                }
            )
        ),
    )


def _category(levels: tuple[str, ...], value: Any) -> str | None:
    known = isinstance(value, str) and (not levels or value in levels)
    return value if known else None


def _request_columns(conn: Connection, request: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The one-row equivalent of ``features.history.request_frame``."""
    found = _run(conn, _parents(), {"order_id": request["order_id"], "user_id": request["user_id"]})
    order, (registered, verified) = found[: len(ORDER_COLUMNS)], found[len(ORDER_COLUMNS) :]
    columns: dict[str, np.ndarray] = {}
    for name in ("request_id", "order_id", "user_id", "reason", "device_id", "ip", "channel"):
        columns[name] = np.array([request.get(name)], dtype=object)
    for name in ("requested_at", "amount", "days_used_claimed"):
        columns[name] = np.array([_number(request.get(name))])
    columns["amount"] = columns["amount"] / 100
    numeric = {"amount", "paid_at", "delivered_at", "redeemed_at", "service_days"}
    for name, value in zip(ORDER_COLUMNS, order, strict=True):
        columns[f"order_{name}"] = (
            np.array([_number(value)]) if name in numeric else np.array([value], dtype=object)
        )
    columns["order_amount"] = columns["order_amount"] / 100
    columns["user_registered_at"] = np.array([_number(registered)])
    columns["user_phone_verified"] = np.array([np.nan if verified is None else float(verified)])
    return columns


@cache
def _parents() -> Select[Any]:
    """The request's order and user in one row; nulls for either one not stored."""
    one = select(literal(1).label("one")).subquery()
    order = _orders.c.order_id == bindparam("order_id", type_=String)
    user = _users.c.user_id == bindparam("user_id", type_=String)
    joined = one.outerjoin(_orders, order).outerjoin(_users, user)
    return select(
        *[_orders.c[n] for n in ORDER_COLUMNS], _users.c.registered_at, _users.c.phone_verified
    ).select_from(joined)


def _run(conn: Connection, statement: Select[Any], parameters: dict[str, Any]) -> Sequence[Any]:
    """Execute a cached statement as plain SQL with positional parameters, the one row.

    SQLAlchemy's per-execution work (cache key, parameter processing) cost as much as the
    query itself on this path; compiled once per database, the statement skips it.
    Numbers come back as the driver gives them (a PostgreSQL sum is a Decimal).
    """
    key = (statement, conn.dialect.name)
    if key not in _COMPILED:
        compiled = statement.compile(dialect=conn.dialect)
        if compiled.positiontup is None:
            raise ValueError(f"{conn.dialect.name}: the driver must use positional parameters")
        _COMPILED[key] = (str(compiled), tuple(compiled.positiontup), dict(compiled.params))
    sql, names, fixed = _COMPILED[key]
    values = tuple(parameters[name] if name in parameters else fixed[name] for name in names)
    # The driver's own cursor: SQLAlchemy's result object cost a tenth of a millisecond a
    # statement to build, for one row whose columns we already know.
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    finally:
        cursor.close()
    if row is None:
        raise LookupError("the statement returned no row")
    return tuple(row)


# (statement, database) -> SQL text, parameter names in order, values of the fixed ones.
_COMPILED: dict[tuple[Select[Any], str], tuple[str, tuple[str, ...], dict[str, Any]]] = {}


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


@cache
def _combined(asked: tuple[tuple[Source, Entity, tuple[Aggregate, ...]], ...]) -> Select[Any]:
    """The groups' one-row queries side by side, joined on nothing: one row, every column."""
    parts = [
        _query(source, entity, group).subquery(f"g{i}")
        for i, (source, entity, group) in enumerate(asked)
    ]
    joined: Any = parts[0]
    for part in parts[1:]:
        joined = joined.join(part, true())
    return select(*[column for part in parts for column in part.c]).select_from(joined)


@cache
def _query(source: Source, entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """One statement folding every aggregate of the group; parameters ``key`` and ``t``."""
    t, key = _T, _key(entity)
    from_: FromClause
    if source is Source.SIGHTINGS:
        return _sightings_query(entity, group)
    if source is Source.ABUSE:
        return _abuse_query(entity, group)
    if _tiled(source, entity, group):
        return _tiled_query(source, group)
    if source is Source.ORDERS:
        table, time, value = _orders, _orders.c.paid_at, _orders.c.amount
        key_column = _orders.c[entity.value]
        from_ = _orders
    elif source is Source.REFUNDS:
        table, time, value = _refunds, _refunds.c.requested_at, _refunds.c.amount
        key_column, from_ = _refund_key(entity), _refunds
    elif source is Source.USAGE:
        table, time, value = _usage, _usage.c.used_at, None
        key_column, from_ = _usage.c[entity.value], _usage
    else:
        table, time, value = decisions, decisions.c.decided_at, None
        key_column = _refunds.c[entity.value]
        from_ = decisions.join(_refunds, _refunds.c.request_id == decisions.c.request_id)
    expressions = []
    for aggregate in group:
        conditions: list[ColumnElement[bool]] = []
        if aggregate.window is not None:
            conditions.append(time >= t - aggregate.window)
        if aggregate.where is not None:
            column, wanted = aggregate.where
            conditions.append(table.c[column] == wanted)
        matched = and_(*conditions) if conditions else None
        expressions.append(_fold(aggregate, matched, time, value, table).label(aggregate.name))
    statement = select(*expressions).select_from(from_).where(key_column == key, time < t)
    windows = [a.window for a in group]
    if all(w is not None for w in windows):
        # Only the widest window's events: a large seller's whole history is not read
        # to count its last 30 days.
        statement = statement.where(time >= t - max(w for w in windows if w is not None))
    return statement


def _fold(
    aggregate: Aggregate,
    matched: ColumnElement[bool] | None,
    time: Any,
    value: Any,
    table: Any,
) -> Any:
    def when(expression: Any, otherwise: Any = None) -> Any:
        if matched is None:
            return expression
        return case((matched, expression), else_=otherwise)

    if aggregate.agg is Agg.COUNT:
        return func.sum(when(literal(1), literal(0)))
    if aggregate.agg is Agg.SUM:
        return func.sum(when(value, literal(0)))
    if aggregate.agg is Agg.HOURS_SINCE_LAST:
        return func.max(when(time))
    if aggregate.agg is Agg.DISTINCT:
        assert aggregate.of is not None
        return func.count(distinct(when(table.c[aggregate.of])))
    raise ValueError(f"{aggregate.name}: {aggregate.agg} is not supported on {table.name}")


def _refund_key(entity: Entity) -> Any:
    """The refund-request column holding ``entity``: the store keeps a copy of the order's
    seller and payment account on each request (``riskmodel.store.DERIVED``)."""
    return _refunds.c[f"order_{entity.value}" if entity in _ORDER_SIDE else entity.value]


def _sightings_query(entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """Users first seen on the entity before ``t``: the whole days' tiles of the store's
    ``sighting_days`` before ``t``'s day, and the sightings of that day up to ``t``
    (``_sighting_bounds``), a few hundred rows at most for any IP, however public."""
    if entity.value not in SIGHTED:
        raise ValueError(f"the store keeps no sightings of {entity.value}")
    tiles, seen, key = sighting_days.c, sightings.c, _key(entity)
    parts = union_all(
        select(tiles.users.label("n"), tiles.newest_registration.label("newest")).where(
            tiles.entity_kind == entity.value,
            tiles.entity == key,
            tiles.day < bindparam("sighting_tiles_to", type_=BigInteger),
        ),
        select(literal(1).label("n"), seen.registered_at.label("newest")).where(
            seen.entity_kind == entity.value,
            seen.entity == key,
            seen.first_seen_at < bindparam("sighting_head_end", type_=BigInteger),
        ),
        select(literal(1).label("n"), seen.registered_at.label("newest")).where(
            seen.entity_kind == entity.value,
            seen.entity == key,
            seen.first_seen_at >= bindparam("sighting_tail_start", type_=BigInteger),
            seen.first_seen_at < _T,
        ),
    ).subquery()
    return select(
        *[
            (func.sum(parts.c.n) if a.agg is Agg.COUNT else func.max(parts.c.newest)).label(a.name)
            for a in group
        ]
    )


def _sighting_bounds(t: int) -> dict[str, int]:
    """Where the history before ``t`` splits for the sightings: before the epoch (never
    tiled), the whole days' tiles, ``t``'s own day."""
    if t < 0:
        return {"sighting_head_end": t, "sighting_tiles_to": 0, "sighting_tail_start": t}
    day = t // TILE_US
    return {"sighting_head_end": 0, "sighting_tiles_to": day, "sighting_tail_start": day * TILE_US}


def _abuse_query(entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """Requests of the entity whose latest label before ``t`` says abuse: the sum of the
    label changes the store keeps per entity (``riskmodel.store.abuse_changes``)."""
    if entity.value not in ABUSE_KEYS:
        raise ValueError(f"the store keeps no abuse changes by {entity.value}")
    changes = abuse_changes.c
    return select(*[func.sum(changes.delta).label(a.name) for a in group]).where(
        changes.entity_kind == entity.value,
        changes.entity == _key(entity),
        changes.labeled_at < _T,
    )


def _tiled(source: Source, entity: Entity, group: tuple[Aggregate, ...]) -> bool:
    """Whether the group is read from the sellers' daily counts (``seller_days``): counts
    over a window, of every event or of one refund reason."""
    return (
        entity is Entity.SELLER
        and source in (Source.ORDERS, Source.REFUNDS)
        and all(
            a.agg is Agg.COUNT
            and a.window is not None
            and (a.where is None or (source is Source.REFUNDS and a.where[0] == "reason"))
            for a in group
        )
    )


def _tile_bounds(t: int, window: int) -> dict[str, int]:
    """Where the window before ``t`` splits: whole days ``[tiles_from, tiles_to)`` counted
    from the tiles, the part days before and after them from the events. A window with no
    whole day, or reaching before the epoch, is read from the events alone."""
    start = t - window
    first, last = -(-start // TILE_US), t // TILE_US
    if start < 0 or first > last:
        first = last = 0
        head_end = tail_start = t
    else:
        head_end, tail_start = first * TILE_US, last * TILE_US
    return {
        f"tiles_from_{window}": first,
        f"tiles_to_{window}": last,
        f"head_end_{window}": head_end,
        f"tail_start_{window}": tail_start,
    }


def _tiled_query(source: Source, group: tuple[Aggregate, ...]) -> Select[Any]:
    """The group's counts as whole days' tiles plus the events of the part days at each end
    of the window (``_tile_bounds``): a few hundred rows for any seller, however large."""
    if source is Source.ORDERS:
        table, time, key_column = _orders, _orders.c.paid_at, _orders.c.seller_id
    else:
        table, time, key_column = _refunds, _refunds.c.requested_at, _refunds.c.order_seller_id
    key, tiles = _key(Entity.SELLER), seller_days.c
    expressions = []
    for aggregate in group:
        window = aggregate.window
        assert window is not None  # _tiled
        days = select(func.coalesce(func.sum(tiles.n), 0)).where(
            tiles.source == table.name,
            tiles.seller_id == key,
            tiles.day >= bindparam(f"tiles_from_{window}", type_=BigInteger),
            tiles.day < bindparam(f"tiles_to_{window}", type_=BigInteger),
        )
        head = select(func.count()).where(
            key_column == key,
            time >= _T - window,
            time < bindparam(f"head_end_{window}", type_=BigInteger),
        )
        tail = select(func.count()).where(
            key_column == key,
            time >= bindparam(f"tail_start_{window}", type_=BigInteger),
            time < _T,
        )
        if aggregate.where is not None:
            days = days.where(tiles.reason == aggregate.where[1])
            head = head.where(table.c.reason == aggregate.where[1])
            tail = tail.where(table.c.reason == aggregate.where[1])
        total = days.scalar_subquery() + head.scalar_subquery() + tail.scalar_subquery()
        expressions.append(total.label(aggregate.name))
    return select(*expressions)
