"""The online engine: the features of one request, read from the store at request time.

Every (source, entity) group of aggregates becomes one sub-select that folds every window
and filter of the group, and all of them run as one statement: one round trip. Entities
that can grow without bound (a public IP, a large seller, a popular product:
``riskmodel.store.TILED``) are read from the store's day tiles: the whole days of a window
from ``entity_days`` or ``sighting_days``, and only the request's own day (and anything
before the epoch, which is never tiled) from the events, so a decision's cost does not
grow with the size of what it touches. A source's tiles are one read from the widest
window's first day, each aggregate summing the days of its own window (``FILTER``): a
read per window cost PostgreSQL a fifth more, which starts every part of a plan again on
each execution, and SQLite as much. A user's and an order's events are few
and are read as they are; an entity's refund requests, what they came to (outcomes) and
this service's decisions of them are one read of its requests (``_requests_query``); its
verdict changes counted as abuse and as verdicts are one read too. Each group answers one
row with a column per aggregate. Context, ratio and derived formulas are the ones the
offline engine runs, called on one row; the numbers live in one vector, the ratios of a
step divided in one operation.

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
    CompoundSelect,
    Connection,
    Dialect,
    Float,
    Select,
    String,
    and_,
    bindparam,
    case,
    cast,
    distinct,
    func,
    literal_column,
    null,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite

from features.catalog import CATALOG
from features.history import ORDER_COLUMNS, ORDER_NUMBERS, base_amounts, request_entity
from features.offline import _with_inputs
from features.spec import (
    Agg,
    Aggregate,
    Computed,
    Context,
    Derived,
    Entity,
    Ratio,
    Source,
    Type,
    divide,
    window_start,
)
from riskmodel.store import (
    ABUSE_KEYS,
    BASE_AMOUNT,
    EVENT_TABLES,
    SIGHTED,
    TILED,
    RequestContext,
    abuse_changes,
    decisions,
    driver_errors,
    entity_days,
    sighting_days,
    sightings,
)
from riskmodel.units import CENTS, DAY, HOUR

__all__ = ["online_features"]

_orders = EVENT_TABLES["orders"]
_refunds = EVENT_TABLES["refund_requests"]
_usage = EVENT_TABLES["usage"]
_users = EVENT_TABLES["users"]
_rates = EVENT_TABLES["rates"]

_T = bindparam("t", type_=BigInteger)
_TILES_TO = bindparam("tiles_to", type_=BigInteger)  # t's day: tiles end before it
_TAIL = bindparam("tail_start", type_=BigInteger)  # t's day starts: events from here to t
_HEAD = bindparam("head_end", type_=BigInteger)  # events before the epoch end here
# The same bounds for what a decision writes (``_LIVE``): ``t`` and its day's, or,
# for ``everything``, past anything stored.
_UPTO = bindparam("upto", type_=BigInteger)
_LIVE_TILES_TO = bindparam("live_tiles_to", type_=BigInteger)
_LIVE_TAIL = bindparam("live_tail_start", type_=BigInteger)
_LIVE_HEAD = bindparam("live_head_end", type_=BigInteger)
_BEYOND = 2**62  # later than any stored time, and still a BIGINT

_LIVE = frozenset({Source.REFUNDS, Source.OUTCOMES, Source.DECISIONS, Source.SIGHTINGS})
"""What the service writes as it decides (requests, their decisions, who was seen where):
the sources ``everything`` counts whatever their time."""

# The tile sources of ``entity_days`` each tiled source is counted in.
_TILE_SOURCE = {
    Source.ORDERS: "orders",
    Source.REFUNDS: "refund_requests",
    Source.ABUSE: "abuse",
    Source.VERDICTS: "verdicts",
}


def _const(value: int | str) -> Any:
    """A constant written into the SQL, not bound: the statement binds only what changes
    from one request to the next (hundreds of constants cost more to bind than to read)."""
    if isinstance(value, str):
        if "'" in value:
            raise ValueError(f"not a constant this engine writes: {value!r}")
        return literal_column(f"'{value}'", String)
    return literal_column(str(int(value)), BigInteger)


def _key(entity: Entity) -> Any:
    return bindparam(f"key_{entity.value}", type_=String)


def _start(window: int) -> Any:
    return bindparam(f"start_{window}", type_=BigInteger)


def _tiles_from(window: int) -> Any:
    return bindparam(f"tiles_from_{window}", type_=BigInteger)


def online_features(
    conn: Connection,
    request: Mapping[str, Any],
    names: Sequence[str] | None = None,
    context: RequestContext | None = None,
    *,
    everything: bool = False,
) -> dict[str, Any]:
    """Features of one refund request, in store units (``requested_at`` in microseconds,
    ``amount`` in cents), from what the store holds strictly before ``requested_at``.

    The request itself need not be stored. ``context``: its order, user and rate as the
    decision path already read them (``riskmodel.store.decision_context``), else read
    here. Numbers come back as floats (NaN is null), categories as strings or None.

    ``everything``: the refund requests, decisions, outcomes and sightings the store holds
    count whatever their time, as if all were before ``requested_at`` (windows still start
    from it): the live policy's view when requests arrived out of their time order
    (``serving.decide``). On a history replayed in time order nothing is stored after a
    request, and both answers are the same.
    """
    plan = _plan(tuple(CATALOG) if names is None else tuple(names))
    columns = _request_columns(conn, request, context)
    t = int(request["requested_at"])
    parameters = _bounds(t, plan.windows, everything=everything)
    keys = {}
    for entity in set(plan.entities):
        key = request_entity(columns, entity)[0]
        if key is None or (isinstance(key, float) and np.isnan(key)):
            continue  # every aggregate of its groups stays null
        keys[entity] = key
        parameters[f"key_{entity.value}"] = key
    asked = [index for index, entity in enumerate(plan.entities) if entity in keys]
    # Every number lives in one vector (the aggregates first): per feature, a dict of
    # one-element arrays cost more than the features' arithmetic.
    vector = np.full(plan.width, np.nan)
    if asked:
        # Every group in one statement: one round trip to the database, not one per group.
        query = plan.query(tuple(asked))
        vector[query.positions] = query.finish(_run(conn, query.statement, parameters, []), t)
    vector[plan.seeded] = [columns[name][0] for name in plan.seeds]
    for step in plan.computed:
        step.compute_into(columns, vector)
    out = dict(zip(plan.names, vector[plan.answered].tolist(), strict=True))
    for name, levels in plan.categories:
        out[name] = _category(levels, columns[name][0])
    return out


def _bounds(t: int, windows: Sequence[int], *, everything: bool) -> dict[str, Any]:
    """Where the history before ``t`` splits: each window's start (``window_start``) and
    first whole day; the tiles' end (``t``'s day); the events read as they are, ``t``'s
    own day and anything before the epoch. With ``everything``, what a decision writes
    has no end: every tile from a window's start on, and no events beyond them."""
    day = t // DAY
    parameters: dict[str, Any] = {
        "t": t,
        "tiles_to": max(day, 0),
        "tail_start": max(day * DAY, 0),
        "head_end": min(t, 0),
    }
    if everything:
        parameters.update(
            upto=_BEYOND, live_tiles_to=_BEYOND, live_tail_start=_BEYOND, live_head_end=0
        )
    else:
        parameters.update(
            upto=t,
            live_tiles_to=parameters["tiles_to"],
            live_tail_start=parameters["tail_start"],
            live_head_end=parameters["head_end"],
        )
    for window in windows:
        start = window_start(t, window)
        parameters[f"start_{window}"] = start
        parameters[f"tiles_from_{window}"] = max(start // DAY, 0)
    return parameters


# --- how the rows become aggregates ------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Query:
    """The statement for some groups of a plan, and how its rows become aggregates: each
    group's row holds one cell per aggregate, group ``g``'s column ``c`` is cell
    ``g * width + c`` of the rows laid end to end."""

    statement: CompoundSelect[Any]
    width: int
    positions: np.ndarray  # where each aggregate it computes goes among the plan's
    cells: np.ndarray  # the cell of each
    summed: np.ndarray  # counts and sums: nothing counted is 0, not null
    cents: np.ndarray  # money summed in cents, answered in currency units
    hours_since: np.ndarray  # the latest event's time, answered as hours before ``t``

    def finish(self, rows: Sequence[Sequence[Any]], t: int) -> np.ndarray:
        """The rows as feature values (the driver's None is NaN, a PostgreSQL sum a
        Decimal)."""
        read = np.full(len(rows) * self.width, np.nan)
        cells = np.array(rows, dtype=float)
        read.reshape(-1, self.width)[cells[:, 0].astype(np.intp)] = cells[:, 1:]
        values: np.ndarray = read[self.cells]
        values[self.summed & np.isnan(values)] = 0.0
        values[self.cents] /= CENTS
        values[self.hours_since] = (t - values[self.hours_since]) / HOUR
        return values


Group = tuple[Source, Entity, tuple[Aggregate, ...]]


@dataclass(frozen=True)
class _One:
    """A context or derived feature, computed as the offline engine does, on one row:
    given its inputs that are numbers of the vector as one-row columns, and writing its
    value to the vector when it is a number."""

    feature: Context | Derived
    reads: tuple[tuple[str, int], ...]  # (input, its place in the vector)
    slot: int | None  # its own place; None: a category

    def compute_into(self, columns: dict[str, np.ndarray], vector: np.ndarray) -> None:
        for name, slot in self.reads:
            columns[name] = vector[slot : slot + 1]
        value = self.feature.compute(columns)
        columns[self.feature.name] = value
        if self.slot is not None:
            vector[self.slot] = value[0]


@dataclass(frozen=True)
class _Ratios:
    """Ratios none of which reads another, divided in one numpy operation on the vector:
    one at a time, numpy's fixed cost per call was most of a decision's Python."""

    out: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    clipped: np.ndarray  # those kept within [0, 1], among ``out``

    @classmethod
    def of(cls, ratios: Sequence[Ratio], slots: Mapping[str, int]) -> _Ratios:
        def places(names: Sequence[str]) -> np.ndarray:
            return np.array([slots[name] for name in names], dtype=np.intp)

        return cls(
            places([r.name for r in ratios]),
            places([r.numerator for r in ratios]),
            places([r.denominator for r in ratios]),
            np.flatnonzero([r.clip for r in ratios]),
        )

    def compute_into(self, columns: dict[str, np.ndarray], vector: np.ndarray) -> None:
        values = divide(vector[self.top], vector[self.bottom])
        if len(self.clipped):
            values[self.clipped] = np.minimum(np.maximum(values[self.clipped], 0.0), 1.0)
        vector[self.out] = values


def _steps(computed: Sequence[Computed], slots: Mapping[str, int]) -> tuple[_One | _Ratios, ...]:
    """The computed features in an order that respects what each reads: every feature
    whose inputs are ready, one by one, then every ratio whose inputs are ready, in one
    step; and again, until none is left. Few ratio steps: each costs numpy's fixed price."""
    steps: list[_One | _Ratios] = []
    pending = list(computed)
    waiting = {f.name for f in computed}  # not computed yet
    # Numbers only the vector holds until a step reads them: the aggregates and ratios.
    uncolumned = {n for n in slots if isinstance(CATALOG.get(n), Aggregate | Ratio)}
    while pending:
        # A context feature named as its request column reads that column.
        ready = [f for f in pending if not (set(f.inputs) - {f.name}) & waiting]
        if not ready:
            raise ValueError(f"features reading one another: {[f.name for f in pending]}")
        ones = [f for f in ready if not isinstance(f, Ratio)]
        for feature in ones:
            reads = tuple((n, slots[n]) for n in feature.inputs if n in uncolumned)
            uncolumned -= set(feature.inputs)
            steps.append(_One(feature, reads, slots.get(feature.name)))
        ratios = [f for f in ready if isinstance(f, Ratio)]
        if ratios and not ones:
            steps.append(_Ratios.of(ratios, slots))
        else:
            ratios = []
        done = {f.name for f in (*ones, *ratios)}
        waiting -= done
        pending = [f for f in pending if f.name not in done]
    return tuple(steps)


@dataclass(frozen=True)
class _Plan:
    """What ``online_features`` computes for a choice of features, worked out once.

    ``entities`` and ``groups`` hold one group of aggregates each (one sub-select), in the
    order of ``aggregates``; ``computed`` are the steps computing the context, ratio and
    derived features in the order they depend on each other; ``windows`` every window an
    aggregate has.
    """

    aggregates: tuple[Aggregate, ...]
    entities: tuple[Entity, ...]
    groups: tuple[Group, ...]
    computed: tuple[_One | _Ratios, ...]
    names: tuple[str, ...]  # answered, in this order
    width: int  # the numbers' vector: the aggregates, then the computed numbers
    answered: np.ndarray  # the vector's place of each name (a category's is ignored)
    seeds: tuple[str, ...]  # request columns a ratio reads, copied into the vector
    seeded: np.ndarray  # their places
    categories: tuple[tuple[str, tuple[str, ...]], ...]  # the others, with their levels
    windows: tuple[int, ...]
    _queries: dict[tuple[int, ...], _Query] = field(default_factory=dict, compare=False)

    def query(self, asked: tuple[int, ...]) -> _Query:
        """The statement for the groups at ``asked`` (the others have no key)."""
        if asked not in self._queries:
            self._queries[asked] = self._query(asked)
        return self._queries[asked]

    def _query(self, asked: tuple[int, ...]) -> _Query:
        chosen = tuple(self.groups[i] for i in asked)
        order = {a.name: i for i, a in enumerate(self.aggregates)}
        statement, width = _combined(chosen)
        read = [a for _, _, group in chosen for a in group]
        cells = [
            number * width + column
            for number, (_, _, group) in enumerate(chosen)
            for column in range(len(group))
        ]
        return _Query(
            statement,
            width,
            np.array([order[a.name] for a in read], dtype=np.intp),
            np.array(cells, dtype=np.intp),
            np.array([a.agg in (Agg.COUNT, Agg.SUM, Agg.DISTINCT) for a in read]),
            np.array([a.in_currency for a in read]),
            np.array([a.agg is Agg.HOURS_SINCE_LAST for a in read]),
        )


@cache
def _plan(names: tuple[str, ...]) -> _Plan:
    wanted = _with_inputs(names)
    grouped: dict[tuple[Source, Entity, bool], list[Aggregate]] = {}
    for feature in wanted:
        if isinstance(feature, Aggregate):
            # A tiled entity's "latest event" is one index seek, read with its tiles.
            tiled = _tiled(feature) or _latest_of_tiled(feature)
            source = feature.source
            if source in _OF_REQUESTS and not tiled:
                # What the entity's requests asked, came to and were decided: one read.
                source = Source.REFUNDS
            if source is Source.VERDICTS:
                source = Source.ABUSE  # one read of the entity's verdict changes
            grouped.setdefault((source, feature.entity, tiled), []).append(feature)
    groups = tuple((s, e, tuple(group)) for (s, e, _), group in grouped.items())
    categories: list[tuple[str, tuple[str, ...]]] = []
    for name in names:
        feature = CATALOG[name]
        if feature.type is Type.CATEGORY:
            # A value outside the declared levels is unknown, as offline (build_features).
            categories.append((name, feature.levels if isinstance(feature, Context) else ()))
    aggregates = tuple(a for _, _, group in groups for a in group)
    computed = [f for f in wanted if isinstance(f, Computed)]
    numbers = [*aggregates, *(f for f in computed if f.type is not Type.CATEGORY)]
    slots = {feature.name: slot for slot, feature in enumerate(numbers)}
    ratios = [f for f in computed if isinstance(f, Ratio)]
    seeds = tuple(sorted({n for r in ratios for n in r.inputs if n not in slots}))
    slots.update({name: len(numbers) + i for i, name in enumerate(seeds)})
    return _Plan(
        aggregates=aggregates,
        entities=tuple(e for _, e, _ in groups),
        groups=groups,
        computed=_steps(computed, slots),
        names=names,
        width=len(slots),
        answered=np.array([slots.get(n, 0) for n in names], dtype=np.intp),
        seeds=seeds,
        seeded=np.array([slots[n] for n in seeds], dtype=np.intp),
        categories=tuple(categories),
        windows=tuple(sorted({a.window for a in aggregates if a.window is not None})),
    )


def _tiled(aggregate: Aggregate) -> bool:
    """Whether the aggregate is read from day tiles: a count or sum of a tiled entity's
    orders, refund requests (of every reason or one), verdicts, or users first seen; and
    the newest registration among those users."""
    if aggregate.source is Source.SIGHTINGS:
        return True
    if aggregate.entity.value not in TILED or aggregate.source not in _TILE_SOURCE:
        return False
    filtered = aggregate.where is None or (
        aggregate.source is Source.REFUNDS and aggregate.where[0] == "reason"
    )
    return aggregate.agg in (Agg.COUNT, Agg.SUM) and filtered


def _latest_of_tiled(aggregate: Aggregate) -> bool:
    """Whether the aggregate is the time of a tiled entity's latest order or request."""
    return (
        aggregate.agg is Agg.HOURS_SINCE_LAST
        and aggregate.where is None
        and aggregate.entity.value in TILED
        and aggregate.source in (Source.ORDERS, Source.REFUNDS)
    )


def _category(levels: tuple[str, ...], value: Any) -> str | None:
    known = isinstance(value, str) and (not levels or value in levels)
    return value if known else None


# --- the request and its parents ----------------------------------------------------------------


def _request_columns(
    conn: Connection, request: Mapping[str, Any], context: RequestContext | None
) -> dict[str, np.ndarray]:
    """The one-row equivalent of ``features.history.request_frame``."""
    if context is None:
        keys = {"order_id": request["order_id"], "user_id": request["user_id"]}
        found = _run(conn, _parents(), keys)
        n = len(ORDER_COLUMNS)
        order, (rate, registered, verified) = found[:n], found[n:]
    else:
        order = tuple(context.order[name] for name in ORDER_COLUMNS)
        rate = context.rate
        registered, verified = context.user["registered_at"], context.user["phone_verified"]
    columns: dict[str, np.ndarray] = {}
    for name in ("request_id", "order_id", "user_id", "reason", "device_id", "ip", "channel"):
        columns[name] = np.array([request.get(name)], dtype=object)
    for name in ("requested_at", "amount", "days_used_claimed"):
        columns[name] = np.array([_number(request.get(name))])
    for name, value in zip(ORDER_COLUMNS, order, strict=True):
        columns[f"order_{name}"] = (
            np.array([_number(value)]) if name in ORDER_NUMBERS else np.array([value], dtype=object)
        )
    rates = np.array([_number(rate)])
    columns["amount_base"] = base_amounts(columns["amount"], rates) / CENTS
    columns["order_amount_base"] = base_amounts(columns["order_amount"], rates) / CENTS
    columns["amount"] = columns["amount"] / CENTS
    columns["order_amount"] = columns["order_amount"] / CENTS
    columns["user_registered_at"] = np.array([_number(registered)])
    columns["user_phone_verified"] = np.array([np.nan if verified is None else float(verified)])
    return columns


@cache
def _parents() -> Select[Any]:
    """The request's order, its currency's rate and the user in one row; nulls for what
    is not stored."""
    one = select(_const(1).label("one")).subquery()
    order = _orders.c.order_id == bindparam("order_id", type_=String)
    user = _users.c.user_id == bindparam("user_id", type_=String)
    joined = (
        one.outerjoin(_orders, order)
        .outerjoin(_rates, _rates.c.currency == _orders.c.currency)
        .outerjoin(_users, user)
    )
    return select(
        *[_orders.c[n] for n in ORDER_COLUMNS],
        _rates.c.rate,
        _users.c.registered_at,
        _users.c.phone_verified,
    ).select_from(joined)


def _number(value: Any) -> float:
    return np.nan if value is None else float(value)


# --- running a statement ----------------------------------------------------------------------


def _run(
    conn: Connection,
    statement: Select[Any] | CompoundSelect[Any],
    parameters: dict[str, Any],
    rows: list[Sequence[Any]] | None = None,
) -> Any:
    """Execute a cached statement as plain SQL: its one row, or all of them into ``rows``.

    SQLAlchemy's per-execution work (cache key, parameter processing) cost as much as the
    query itself on this path; compiled once per database, the statement skips it. Each
    parameter is numbered and sent once however often the statement uses it: the feature
    statement uses the request's time and keys hundreds of times. Numbers come back as the
    driver gives them.
    """
    sql, names, fixed = _compiled(conn, statement)
    values = tuple(parameters[name] if name in parameters else fixed[name] for name in names)
    # The driver's own cursor: SQLAlchemy's result object cost a tenth of a millisecond a
    # statement to build, for one row whose columns we already know.
    with driver_errors(conn, "the online feature statement"):
        cursor = _cursor(conn)
        try:
            if conn.dialect.name == "postgresql":
                # Prepared at its first execution, not psycopg's fifth: each unprepared
                # execution is parsed and planned again, 10 to 15 ms for this statement.
                cursor.execute(sql, values, prepare=True)
            else:
                cursor.execute(sql, values)
            if rows is not None:
                rows.extend(cursor.fetchall())
                return rows
            row = cursor.fetchone()
        finally:
            cursor.close()
    if row is None:
        raise LookupError("the statement returned no row")
    return tuple(row)


def _cursor(conn: Connection) -> Any:
    """A cursor that sends the SQL as it is. On PostgreSQL, psycopg's default cursor turns
    named parameters into numbered ones on every execution and caches that only for
    statements under 4 kB: re-reading the feature statement's tens of kilobytes cost more
    Python time than anything else the decision did. Its raw cursor takes ``$n`` as
    PostgreSQL does."""
    dbapi: Any = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        from psycopg import RawCursor  # the PostgreSQL extra's driver, only there

        return RawCursor(dbapi)
    return dbapi.cursor()


def _compiled(
    conn: Connection, statement: Select[Any] | CompoundSelect[Any]
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The statement's SQL for the connection's database, its numbered parameters in
    order and the values of the fixed ones."""
    key = (statement, conn.dialect.name)
    if key not in _COMPILED:
        dialect: Dialect
        if conn.dialect.name == "sqlite":
            dialect = sqlite.dialect(paramstyle="numeric")
        elif conn.dialect.name == "postgresql":
            dialect = postgresql.psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
        else:
            raise ValueError(f"the online engine does not know {conn.dialect.name}")
        compiled = statement.compile(dialect=dialect)
        _COMPILED[key] = (str(compiled), tuple(compiled.positiontup or ()), dict(compiled.params))
    return _COMPILED[key]


# (statement, database) -> SQL text, parameter names in order, fixed values.
_COMPILED: dict[
    tuple[Select[Any] | CompoundSelect[Any], str],
    tuple[str, tuple[str, ...], dict[str, Any]],
] = {}


@cache
def _combined(asked: tuple[Group, ...]) -> tuple[CompoundSelect[Any], int]:
    """The groups' one-row queries stacked: a row per group, its number first, its columns
    after (padded to the widest group's); and that width. Stacked, not joined side by side:
    SQLite ran the same sub-selects joined into one row at twice the cost of running each
    alone."""
    width = max(len(group) for _, _, group in asked)
    parts = []
    for number, group in enumerate(asked):
        own = _group_query(*group).subquery(f"g{number}")
        # Padded with zeros, not nulls: a null costs the driver and numpy more. Every cell
        # a double: PostgreSQL sums integers as numeric, which the driver hands over as
        # Decimals, and turning those into floats cost more than the sums. Counts, cents
        # and microseconds stay exact (all below 2**53).
        pads = [_const(0) for _ in range(width - len(group[2]))]
        columns = [cast(column, Float) for column in (*own.c, *pads)]
        parts.append(
            select(
                _const(number).label("g"), *[c.label(f"v{i}") for i, c in enumerate(columns)]
            ).select_from(own)
        )
    return union_all(*parts), width


# --- the events of one source ----------------------------------------------------------------


@dataclass(frozen=True)
class _Events:
    """Where one source's events of one entity are: the table, its time, what COUNT counts
    and SUM adds per event, its key column, its filters, and the attributes filters and
    distinct counts read that are expressions rather than columns of ``table``."""

    table: Any
    time: Any
    count: Any  # 1, or a verdict change's multiplicity
    value: Any  # None when the source has no amount
    key: Any
    from_: Any
    filters: tuple[ColumnElement[bool], ...] = ()
    attributes: tuple[tuple[str, Any], ...] = ()

    def column(self, name: str) -> Any:
        """The attribute ``name`` of an event."""
        for attribute, expression in self.attributes:
            if attribute == name:
                return expression
        return self.table.c[name]

    def rows(
        self,
        entity: Entity,
        ranges: Sequence[Any],
        columns: Sequence[str],
        sources: Mapping[Source, _Events],
    ) -> dict[Source, _Events]:
        """The events of the key in each of the time ``ranges``, as one union (each range
        an index range of its own), with the filter ``columns`` they need and what each of
        ``sources`` (sharing this table) counts and sums: those sources' events."""
        measures = []
        for source, events in sources.items():
            value = _const(0) if events.value is None else events.value
            measures += [events.count.label(f"n_{source}"), value.label(f"v_{source}")]
        parts = [
            select(self.time.label("time"), *measures, *[self.column(c).label(c) for c in columns])
            .select_from(self.from_)
            .where(self.key == _key(entity), *range_, *self.filters)
            for range_ in ranges
        ]
        union = union_all(*parts).subquery()
        c = union.c
        return {s: _Events(union, c.time, c[f"n_{s}"], c[f"v_{s}"], None, union) for s in sources}


_OF_REQUESTS = frozenset({Source.REFUNDS, Source.OUTCOMES, Source.DECISIONS})
"""Sources read from the rows of ``refund_requests`` (and each one's decision): an
entity's groups of them are one read of its requests (``_requests_query``)."""
_DECIDED = _refunds.outerjoin(decisions, decisions.c.request_id == _refunds.c.request_id)


def _later(first: Any, second: Any) -> Any:
    """The later of two times (both known: the callers filter out the null ones)."""
    return case((first > second, first), else_=second)


def _events(source: Source, entity: Entity) -> _Events:
    one = _const(1)
    if source is Source.ORDERS:
        orders = _orders.c
        return _Events(
            _orders, orders.paid_at, one, orders[BASE_AMOUNT], orders[entity.value], _orders
        )
    if source in _OF_REQUESTS:
        requests = _refunds.c
        key = requests[f"order_{entity.value}" if entity.on_order else entity.value]
        if source is Source.REFUNDS:
            # An order's requests share its currency: they add up as they are.
            amount = requests.amount if entity is Entity.ORDER else requests[BASE_AMOUNT]
            return _Events(_refunds, requests.requested_at, one, amount, key, _refunds)
        if source is Source.OUTCOMES:
            # Counted from the answer's time, or the request's if dated before it.
            paid, resolved = requests.paid_amount, requests.resolved_at
            outcome = case((paid > _const(0), _const("paid")), else_=_const("refused"))
            return _Events(
                _refunds,
                _later(resolved, requests.requested_at),
                one,
                paid,
                key,
                _refunds,
                (resolved.is_not(None), paid.is_not(None)),
                (("outcome", outcome),),
            )
        decided = decisions.c
        return _Events(
            decisions,
            _later(decided.decided_at, requests.requested_at),
            one,
            decided.approved_amount,
            key,
            _DECIDED,
            (decided.decided_at.is_not(None),),
        )
    if source in (Source.ABUSE, Source.VERDICTS):
        if entity.value not in ABUSE_KEYS:
            raise ValueError(f"the store keeps no verdicts by {entity.value}")
        changes = abuse_changes.c
        value = changes.delta if source is Source.ABUSE else changes.judged
        return _Events(
            abuse_changes,
            changes.labeled_at,
            value,
            value,
            changes.entity,
            abuse_changes,
            (changes.entity_kind == _const(entity.value),),
        )
    if source is Source.USAGE:
        return _Events(_usage, _usage.c.used_at, one, None, _usage.c[entity.value], _usage)
    raise ValueError(f"no events of {source.value} by {entity.value}")


# --- one group's statement --------------------------------------------------------------------


@cache
def _group_query(source: Source, entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """One statement folding every aggregate of the group as of ``t``: one row, a column
    per aggregate."""
    if source is Source.SIGHTINGS:
        return _sightings_query(entity, group)
    if any(_tiled(a) or _latest_of_tiled(a) for a in group):
        return _tiled_query(source, entity, group)
    if source is Source.REFUNDS:
        return _requests_query(entity, group)
    # The sources of one group share a table, its key, time and filters (verdict changes
    # counted as abuse and as verdicts); each aggregate counts and sums its own source's.
    events = _events(source, entity)
    folds = []
    for aggregate in group:
        own = _events(aggregate.source, entity)
        folds.append(_fold(aggregate, _matched(aggregate, own), own).label(aggregate.name))
    return (
        select(*folds)
        .select_from(events.from_)
        .where(events.key == _key(entity), events.time < _upto(source), *events.filters)
        .where(*_widest(group, events.time, _start))
    )


def _requests_query(entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """The entity's refund requests before ``t`` (with their decisions when the group has
    any) read once, for its requests, their outcomes and this service's decisions of them.

    An outcome or a decision counts from no earlier than its request, so every event the
    group counts is of a request asked before ``t``: one index range of the requests."""
    asked = _refunds.c.requested_at
    sources = {a.source for a in group}
    folds = []
    for aggregate in group:
        events = _events(aggregate.source, entity)
        own = () if aggregate.source is Source.REFUNDS else (events.time < _UPTO, *events.filters)
        matched = _matched(aggregate, events, own)
        folds.append(_fold(aggregate, matched, events).label(aggregate.name))
    # The widest window bounds the range only when every event's time is its request's.
    widest = _widest(group, asked, _start) if sources == {Source.REFUNDS} else []
    return (
        select(*folds)
        .select_from(_DECIDED if Source.DECISIONS in sources else _refunds)
        .where(_events(Source.REFUNDS, entity).key == _key(entity), asked < _UPTO, *widest)
    )


def _matched(
    aggregate: Aggregate, events: _Events, conditions: Sequence[ColumnElement[bool]] = ()
) -> ColumnElement[bool] | None:
    """What an event must be to count: the ``conditions``, inside the window, passing the
    filter."""
    matched = list(conditions)
    if aggregate.window is not None:
        matched.append(events.time >= _start(aggregate.window))
    if aggregate.where is not None:
        column, wanted = aggregate.where
        matched.append(events.column(column) == _const(wanted))
    return and_(*matched) if matched else None


def _fold(aggregate: Aggregate, matched: ColumnElement[bool] | None, events: _Events) -> Any:
    def when(expression: Any, otherwise: Any = None) -> Any:
        if matched is None:
            return expression
        return case((matched, expression), else_=otherwise)

    # Counts and sums of nothing are 0, not null: a null cell costs the driver and numpy
    # three times a number's.
    if aggregate.agg is Agg.COUNT:
        return func.coalesce(func.sum(when(events.count, _const(0))), _const(0))
    if aggregate.agg is Agg.SUM:
        return func.coalesce(func.sum(when(events.value, _const(0))), _const(0))
    if aggregate.agg is Agg.HOURS_SINCE_LAST:
        return func.max(when(events.time))
    if aggregate.agg is Agg.DISTINCT:
        assert aggregate.of is not None
        return func.count(distinct(when(events.column(aggregate.of))))
    raise ValueError(f"{aggregate.name}: {aggregate.agg} is not supported online")


def _widest(group: Sequence[Aggregate], column: Any, bound: Any) -> list[Any]:
    """The condition keeping only the group's widest window (none if one is unbounded)."""
    windows = [a.window for a in group]
    if any(w is None for w in windows):
        return []
    return [column >= bound(max(w for w in windows if w is not None))]


def _upto(source: Source) -> Any:
    """Where the events of ``source`` a feature counts end."""
    return _UPTO if source in _LIVE else _T


def _tile_window(aggregate: Aggregate, day: Any, summed: Any) -> Any:
    """``summed`` over the tiles of the aggregate's window only (its days from the window's
    first whole day), or over all of them."""
    if aggregate.window is None:
        return summed
    return summed.filter(day >= _tiles_from(aggregate.window))


def _tiles_read(group: Sequence[Aggregate], day: Any, upper: Any) -> list[Any]:
    """The conditions on ``day`` of the tiles the aggregates read: before ``upper`` (``t``'s
    day), and from the widest window's first whole day unless one is the whole history."""
    return [day < upper, *_widest(group, day, _tiles_from)]


def _stacked(largest: set[int], branches: Sequence[tuple[dict[int, Any], Any]]) -> Select[Any]:
    """One select over the union of ``branches``, each filling some of the group's columns
    (``(column -> expression, finish)``, ``finish`` adding its FROM and WHERE): the sum of
    each column, or its largest value for those in ``largest``. One table for the group
    however many parts it reads (SQLite joins at most 64)."""
    width = 1 + max(i for expressions, _ in branches for i in expressions)
    parts = []
    for expressions, finish in branches:
        # What a branch leaves out adds nothing (0, or null to a maximum): one type a column.
        columns = [
            expressions.get(i, cast(null(), BigInteger) if i in largest else _const(0))
            for i in range(width)
        ]
        parts.append(finish(select(*[c.label(f"c{i}") for i, c in enumerate(columns)])))
    union = union_all(*parts).subquery("parts")
    return select(
        *[
            func.max(union.c[f"c{i}"])
            if i in largest
            else func.coalesce(func.sum(union.c[f"c{i}"]), _const(0))
            for i in range(width)
        ]
    )


def _tiled_query(source: Source, entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """The group's counts and sums as whole days' tiles (``entity_days``), one read of a
    source's tiles with each aggregate summing its window's days, plus the events of
    ``t``'s own day and before the epoch: a few dozen rows for any entity. The union's
    column sums are the aggregates. The time of the latest event is one index seek."""
    tiles = entity_days.c
    counted = [a for a in group if not _latest_of_tiled(a)]
    live = source in _LIVE
    money = source in (Source.ORDERS, Source.REFUNDS)
    # Sources sharing a table (verdict changes counted as abuse and as verdicts) share
    # the group's read of their events.
    sources = {a.source: _events(a.source, entity) for a in group}

    def measure(aggregate: Aggregate) -> Any:
        """What the aggregate sums of a tile: one reason's count, the money or the count."""
        if aggregate.where is not None:
            return case((tiles.reason == _const(aggregate.where[1]), tiles.n), else_=_const(0))
        return tiles.amount if aggregate.agg is Agg.SUM and money else tiles.n

    branches: list[tuple[dict[int, Any], Any]] = []
    # A read of each source apart, its source an equality: SQLite 3.40 answered
    # "source IN (...) AND day < X" with tiles after X.
    for kind in sources:
        own = {i: a for i, a in enumerate(group) if a in counted and a.source is kind}
        if not own:
            continue
        expressions = {i: _tile_window(a, tiles.day, func.sum(measure(a))) for i, a in own.items()}
        where = (
            tiles.entity_kind == _const(entity.value),
            tiles.entity == _key(entity),
            tiles.source == _const(_TILE_SOURCE[kind]),
            *_tiles_read(list(own.values()), tiles.day, _LIVE_TILES_TO if live else _TILES_TO),
        )
        branches.append((expressions, lambda q, where=where: q.where(*where)))
    events = _events(source, entity)
    if counted:
        filters = sorted({a.where[0] for a in counted if a.where is not None})
        ranges = (
            (events.time >= (_LIVE_TAIL if live else _TAIL), events.time < _upto(source)),
            (events.time < (_LIVE_HEAD if live else _HEAD), *_widest(counted, events.time, _start)),
        )
        rows = events.rows(entity, ranges, filters, sources)
        raw = {
            i: _fold(a, _matched(a, rows[a.source]), rows[a.source])
            for i, a in enumerate(group)
            if a in counted
        }
        branches.append((raw, lambda q: q.select_from(rows[source].from_)))
    latest = {i for i, a in enumerate(group) if a not in counted}
    seek = (events.key == _key(entity), events.time < _upto(source), *events.filters)
    for index in latest:
        branches.append(
            ({index: func.max(events.time)}, lambda q: q.select_from(events.from_).where(*seek))
        )
    return _stacked(latest, branches)


def _sightings_query(entity: Entity, group: tuple[Aggregate, ...]) -> Select[Any]:
    """Users first seen on the entity before ``t`` (in a window, or ever) and the newest
    registration among them: the whole days' tiles of ``sighting_days`` in one read, each
    aggregate over its window's days, plus the sightings of ``t``'s own day and before the
    epoch; a column per aggregate as in ``_tiled_query``."""
    if entity.value not in SIGHTED:
        raise ValueError(f"the store keeps no sightings of {entity.value}")
    tiles, seen, key = sighting_days.c, sightings.c, _key(entity)
    kind = _const(entity.value)
    for aggregate in group:
        if aggregate.agg not in (Agg.COUNT, Agg.MAX):
            raise ValueError(f"{aggregate.name}: {aggregate.agg} is not kept for sightings")
    largest = {i for i, aggregate in enumerate(group) if aggregate.agg is Agg.MAX}
    expressions = {
        index: _tile_window(
            aggregate,
            tiles.day,
            func.max(tiles.newest_registration) if index in largest else func.sum(tiles.users),
        )
        for index, aggregate in enumerate(group)
    }
    read = (
        tiles.entity_kind == kind,
        tiles.entity == key,
        *_tiles_read(group, tiles.day, _LIVE_TILES_TO),
    )
    branches: list[tuple[dict[int, Any], Any]] = [(expressions, lambda q: q.where(*read))]
    ranges = (
        (seen.first_seen_at >= _LIVE_TAIL, seen.first_seen_at < _UPTO),
        (seen.first_seen_at < _LIVE_HEAD, *_widest(group, seen.first_seen_at, _start)),
    )
    rows = union_all(
        *[
            select(seen.first_seen_at.label("at"), seen.registered_at.label("newest")).where(
                seen.entity_kind == kind, seen.entity == key, *range_
            )
            for range_ in ranges
        ]
    ).subquery("seen")
    raw: dict[int, Any] = {}
    for index, aggregate in enumerate(group):
        if index in largest:
            raw[index] = func.max(rows.c.newest)
            continue
        counted: Any = _const(1)
        if aggregate.window is not None:
            counted = case((rows.c.at >= _start(aggregate.window), counted), else_=_const(0))
        raw[index] = func.sum(counted)
    branches.append((raw, lambda q: q.select_from(rows)))
    return _stacked(largest, branches)
