"""The event store: the five dataset tables plus decisions, on SQLite or PostgreSQL.

One schema, generated from the dataset contract (``riskmodel.dataset.TABLES``), and
one code path for both databases; the URL chooses. The embedded default is a SQLite
file, ``data/riskmodel.db`` below the working directory, created on first use::

    >>> from riskmodel.store import open_store, table_counts
    >>> engine = open_store("sqlite://")          # in memory; or postgresql+psycopg://...
    >>> table_counts(engine)["orders"]
    0

Storage units: timestamps are integer microseconds since the Unix epoch (UTC) and money
is integer cents. Both are exact, identical on either database, and cheap to compare on
the online feature path.

Schema versions: ``SCHEMA_VERSION`` is written in the ``schema_info`` table when the
schema is created. Opening an older database runs the steps of ``_MIGRATIONS`` in order,
in one transaction; opening a newer one is refused (``SchemaVersionError``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    func,
    inspect,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.sql.expression import Insert
from sqlalchemy.types import TypeEngine

from riskmodel import dataset
from riskmodel.dataset import EXTRA, Kind
from riskmodel.errors import SchemaVersionError, StoreError
from riskmodel.units import DAY, RATE_UNIT

__all__ = [
    "ABUSE_KEYS",
    "BASE_AMOUNT",
    "DEFAULT_DATABASE_URL",
    "DERIVED",
    "EVENT_TABLES",
    "SCHEMA_VERSION",
    "SIGHTED",
    "TILED",
    "TILE_SOURCES",
    "TILE_US",
    "Stale",
    "TileCounts",
    "Tiles",
    "abuse_changes",
    "analyze",
    "base_amount",
    "columns_of",
    "count_in_tiles",
    "create_database",
    "decisions",
    "drop_everything",
    "entity_days",
    "fetch_by_key",
    "insert_request",
    "metadata",
    "open_store",
    "read_table",
    "refresh_abuse_changes",
    "refresh_derived",
    "refresh_entity_days",
    "refresh_sighting_days",
    "refresh_sightings",
    "resolve_database_url",
    "schema_info",
    "sighting_days",
    "sightings",
    "table_counts",
    "upsert",
    "vacuum",
]

DEFAULT_DATABASE_URL = "sqlite:///data/riskmodel.db"
DATABASE_URL_ENV = "RISKMODEL_DATABASE_URL"
SCHEMA_VERSION = 8
_CHUNK = 20_000
_REINDEX_FROM = 50_000
# Above this many users or requests touched by one write, rebuilding the derived tables in
# one set-based statement is cheaper than recomputing them key by key.
_REBUILD_FROM = 20_000

metadata = MetaData()

_TYPES: dict[Kind, Callable[[], TypeEngine[Any]]] = {
    Kind.ID: lambda: String(128),
    Kind.TEXT: lambda: String(255),
    Kind.CHOICE: lambda: String(32),
    Kind.TIMESTAMP: BigInteger,
    Kind.MONEY: BigInteger,
    Kind.COUNT: Integer,
    Kind.FLAG: Boolean,
    Kind.RATE: BigInteger,
}

# Each index serves a question the feature pipeline asks: "every event of user / device /
# IP / payment account / seller / product X before time T". Those of the entities read
# from day tiles (``TILED``) also hold what the features read of the request's own day
# (the amount, the reason), so that part is read from the index alone: for the largest
# seller, a hundred table lookups a request fewer.
_INDEXES: dict[str, tuple[tuple[str, ...], ...]] = {
    "orders": (
        ("user_id", "paid_at"),
        ("device_id", "paid_at"),
        ("ip", "paid_at", "base_amount"),
        ("payment_account", "paid_at"),
        ("seller_id", "paid_at", "base_amount"),
        ("product_id", "paid_at", "base_amount"),
    ),
    "refund_requests": (
        ("user_id", "requested_at"),
        ("order_id", "requested_at"),
        ("device_id", "requested_at"),
        ("ip", "requested_at", "reason", "base_amount"),
    ),
    "labels": (("labeled_at",),),
}

# Store-only copies of a parent's columns, kept so that "every refund request on the orders
# of seller / payment account / product X before T" is one index range scan, not a join
# over all of X's orders (measured: 8 ms a query for a large seller). Filled from the order
# whenever a request is written; the dataset contract does not carry them.
DERIVED: dict[str, dict[str, str]] = {
    "refund_requests": {
        "order_seller_id": "seller_id",
        "order_payment_account": "payment_account",
        "order_product_id": "product_id",
    },
}
_DERIVED_INDEXES = {
    "refund_requests": (
        ("order_seller_id", "requested_at", "reason", "base_amount"),
        ("order_payment_account", "requested_at"),
        ("order_product_id", "requested_at", "reason", "base_amount"),
    ),
}

BASE_AMOUNT = "base_amount"
"""A store-only column of orders and refund requests: the amount in cents of the reporting
currency (``amount * rate // RATE_UNIT``, the rate of the order's currency; the amount as
it is without a rate). Every sum of amounts the features take adds these, never amounts
of different currencies."""
_CONVERTED = ("orders", "refund_requests")


def _event_table(spec: dataset.Table) -> Table:
    columns = [
        Column(
            c.name,
            _TYPES[c.kind](),
            primary_key=c.name in spec.key,
            nullable=not (c.required or c.name in spec.key),
        )
        for c in spec.columns
    ]
    columns.append(Column(EXTRA, Text, nullable=True))
    columns += [Column(name, String(128), nullable=True) for name in DERIVED.get(spec.name, {})]
    if spec.name in _CONVERTED:
        columns.append(Column(BASE_AMOUNT, BigInteger, nullable=True))
    wanted = (*_INDEXES.get(spec.name, ()), *_DERIVED_INDEXES.get(spec.name, ()))
    indexes = [Index(_index_name(spec.name, cols), *cols) for cols in wanted]
    return Table(spec.name, metadata, *columns, *indexes)


def _index_name(table: str, columns: Sequence[str]) -> str:
    """``ix_<table>_<key>_<time>``, and ``_covering`` when it holds more (PostgreSQL's
    names stop at 63 characters)."""
    return f"ix_{table}_{'_'.join(columns[:2])}" + ("_covering" if len(columns) > 2 else "")


def _derived_columns(table: str) -> list[str]:
    """The store-only columns of an event table: copies and converted amounts."""
    return [*DERIVED.get(table, {}), *([BASE_AMOUNT] if table in _CONVERTED else [])]


def columns_of(table: str) -> list[str]:
    """The columns a caller writes and reads: all but the store's derived columns."""
    derived = set(_derived_columns(table))
    return [c.name for c in metadata.tables[table].columns if c.name not in derived]


EVENT_TABLES: dict[str, Table] = {name: _event_table(spec) for name, spec in dataset.TABLES.items()}

decisions = Table(
    "decisions",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("decision", String(16), nullable=False),
    Column("score", Float, nullable=True),
    Column("approved_amount", BigInteger, nullable=False),
    Column("reasons", Text, nullable=False),  # JSON list of reason objects
    Column("review_queue", String(64), nullable=True),
    Column("review_due_at", BigInteger, nullable=True),
    Column("model_version", String(64), nullable=True),
    Column("policy_version", String(64), nullable=True),
    Column("policy_hash", String(64), nullable=True),  # SHA-256 of the policy file's content
    Column("feature_version", String(64), nullable=True),
    Column("decided_at", BigInteger, nullable=False),
    Column("request_hash", String(64), nullable=False),  # refuses a reused id with another body
    Column("shadow", Text, nullable=True),  # JSON: challenger scores, never the answer
    Index("ix_decisions_decided_at", "decided_at"),
    Index("ix_decisions_queue", "decision", "review_due_at"),
)

SIGHTED = ("device_id", "ip", "payment_account")
"""Entities whose users the store tracks: who was seen on a device, IP or payment account."""

# The first time each user was seen on each device, IP and payment account (an order paid
# or a refund requested from it), with the user's registration. Maintained on every write
# of orders, refund requests and users, so that "distinct users seen on IP X before T" is
# one covering index range scan instead of a union over every order ever paid from X
# (measured: 30 ms for a public IP). The dataset contract does not carry it; it is
# entirely derived from the event tables and rebuilt from them whenever in doubt.
sightings = Table(
    "sightings",
    metadata,
    Column("entity_kind", String(32), primary_key=True),
    Column("entity", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True),
    Column("first_seen_at", BigInteger, nullable=False),
    Column("registered_at", BigInteger, nullable=False),
    Index("ix_sightings_seen", "entity_kind", "entity", "first_seen_at", "registered_at"),
    Index("ix_sightings_user", "user_id"),
)

ABUSE_KEYS = (
    "user_id",
    "order_id",
    "device_id",
    "ip",
    "payment_account",
    "seller_id",
    "product_id",
)
"""Entities whose verdicts the store tracks."""

# What the verdicts say of each request, once per entity of the request: a row where a
# verdict changes what is known (``delta`` +1: now abuse, -1: cleared) or is the request's
# first (``judged`` 1), at the verdict's time (its request's time if it is dated before
# it). "Requests from IP X whose latest verdict before T says abuse" is then the sum of
# one short index range, where it was a window function over every labelled request ever
# made from X (measured: up to 8 ms for a public IP), and "requests judged" its count.
abuse_changes = Table(
    "abuse_changes",
    metadata,
    Column("entity_kind", String(32), primary_key=True),
    Column("entity", String(128), primary_key=True),
    Column("request_id", String(128), primary_key=True),
    Column("labeled_at", BigInteger, primary_key=True),
    Column("delta", Integer, nullable=False),
    Column("judged", Integer, nullable=False),
    Index("ix_abuse_changes_seen", "entity_kind", "entity", "labeled_at", "delta", "judged"),
    Index("ix_abuse_changes_request", "request_id"),
)

TILE_US = DAY
"""The width of a day tile (``entity_days``, ``sighting_days``): one UTC day, in
microseconds."""

# Written out, not bound: PostgreSQL groups by the day only if the select list's and the
# GROUP BY's expressions are the same text.
_TILE = literal_column(str(TILE_US), BigInteger)

TILED = ("ip", "seller_id", "product_id")
"""Entities whose events the store also counts per day: a public IP, a large seller or a
popular product has thousands of events in a window, and its day tiles a few dozen. A
device or payment account belongs to a person or a household: its few events are read
faster as they are."""

# Each tiled entity's orders, refund requests (per reason; an order's reason is ''),
# verdict changes (``abuse``: the sum of ``delta``) and first verdicts (``verdicts``) per
# UTC day, with the amounts in cents of the reporting currency. "The seller's orders in
# the 30 days before T" is then the sum of the whole days' tiles inside the window plus the
# events of T's own day, a few dozen rows, where it was a scan of every event in the
# window (for the simulation's largest seller, 6,400 orders). Events before the epoch are
# not tiled (``features.online`` reads them from the events). Maintained on every write of
# orders, refund requests and labels, and rebuilt from them whenever in doubt.
entity_days = Table(
    "entity_days",
    metadata,
    Column("entity_kind", String(32), primary_key=True),
    Column("entity", String(128), primary_key=True),
    Column("source", String(32), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("n", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
    # Kept in key order (SQLite's default is by row number, the key a separate index):
    # a window's tiles are then one sequential read, not a lookup per tile.
    sqlite_with_rowid=False,
)
TILE_SOURCES = ("orders", "refund_requests", "abuse", "verdicts")
"""The ``source`` values of ``entity_days``."""

# The sightings counted per UTC day of first sight, with the newest registration among
# them. "Users seen on IP X before T" is then the sum of the whole days' tiles before T's
# day plus the sightings of T's own day, where it was a range of every user ever seen on X:
# 13,500 users for the simulation's busiest IP. Kept with the sightings, rebuilt with them.
sighting_days = Table(
    "sighting_days",
    metadata,
    Column("entity_kind", String(32), primary_key=True),
    Column("entity", String(128), primary_key=True),
    Column("day", BigInteger, primary_key=True),
    Column("users", BigInteger, nullable=False),
    Column("newest_registration", BigInteger, nullable=False),
    sqlite_with_rowid=False,  # as entity_days
)

schema_info = Table(
    "schema_info",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

_DERIVED_TABLES = (sightings, abuse_changes, entity_days, sighting_days)


def _add_policy_hash(conn: Connection) -> None:
    """Version 2 -> 3: decisions record the hash of the policy file they were made with."""
    conn.exec_driver_sql("ALTER TABLE decisions ADD COLUMN policy_hash VARCHAR(64)")


def _add_rates(conn: Connection) -> None:
    """Version 5 -> 6: currency rates."""
    EVENT_TABLES["rates"].create(conn)


_OUTCOME_COLUMNS = {
    "orders": ("credited_at", "activation_failed_at"),
    "refund_requests": ("paid_amount", "resolved_at"),
}


def _add_outcomes(conn: Connection) -> None:
    """Version 6 -> 7: the issuer's word on whether the value reached the buyer, and what
    each refund request was paid in the end."""
    for name, columns in _OUTCOME_COLUMNS.items():
        for column in columns:
            kind = EVENT_TABLES[name].c[column].type.compile(conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column} {kind}")


def _nothing(conn: Connection) -> None:
    """A version that changed derived data only (rebuilt after the steps)."""


# version -> step that upgrades a database from that version to the next one. Steps change
# what callers store; the store's derived columns and tables are rebuilt from the events
# once the steps have run (``_rebuild_derived``), so a step never has to.
_MIGRATIONS: dict[int, Callable[[Connection], None]] = {
    1: _nothing,  # 2: refund requests' copies of their order's columns
    2: _add_policy_hash,  # 3: and sightings, abuse changes
    3: _nothing,  # 4: sellers' day tiles
    4: _nothing,  # 5: sightings' day tiles
    5: _add_rates,  # 6: and amounts in the reporting currency, every entity's day tiles
    6: _add_outcomes,  # 7
    7: _nothing,  # 8: day tiles in key order on SQLite
}


def _rebuild_derived(conn: Connection) -> None:
    """Bring every derived column, index and table to the current schema and fill them
    from the events (after a migration)."""
    found = inspect(conn)
    for name in EVENT_TABLES:
        present = {c["name"] for c in found.get_columns(name)}
        table = EVENT_TABLES[name]
        for column in _derived_columns(name):
            if column not in present:
                kind = table.c[column].type.compile(conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column} {kind}")
        indexes = {str(i["name"]) for i in found.get_indexes(name)}
        current = {str(index.name) for index in table.indexes}
        for gone in sorted(indexes - current):
            if gone.startswith(f"ix_{name}_"):  # an earlier version's
                conn.exec_driver_sql(f"DROP INDEX {gone}")
        for index in table.indexes:
            if index.name not in indexes:
                index.create(conn)
    conn.exec_driver_sql("DROP TABLE IF EXISTS seller_days")
    for derived in _DERIVED_TABLES:
        derived.drop(conn, checkfirst=True)
        derived.create(conn)
    for name in _CONVERTED:
        conn.execute(_fill_statement(EVENT_TABLES[name], by=None))
    refresh_sightings(conn, None)
    refresh_abuse_changes(conn, None)
    refresh_entity_days(conn, None)


def resolve_database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$RISKMODEL_DATABASE_URL``, else the SQLite default."""
    return url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


def open_store(url: str | None = None, *, create: bool = True) -> Engine:
    """Connect to the store at ``url`` and bring its schema to ``SCHEMA_VERSION``.

    ``postgresql://`` URLs use the psycopg 3 driver. SQLite files are put in WAL mode
    (readers never wait for the writer) with full fsync on commit.
    """
    resolved = resolve_database_url(url)
    try:
        parsed = make_url(resolved)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {resolved!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        # Positional parameters on every backend, so bulk loads pass plain tuples.
        options = {"paramstyle": "format"} if backend == "postgresql" else {}
        engine = create_engine(parsed, pool_pre_ping=backend != "sqlite", **options)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StoreError(
            f"no driver for {parsed.drivername!r}; for PostgreSQL install the "
            "'postgres' extra (pip install 'refund-risk[postgres]')"
        ) from exc
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if create:
        try:
            _ensure_schema(engine)
        except BaseException:
            engine.dispose()
            raise
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA cache_size=-262144")
    cursor.close()


def _ensure_schema(engine: Engine) -> None:
    try:
        with engine.begin() as conn:
            if not conn.dialect.has_table(conn, schema_info.name):
                metadata.create_all(conn)
                conn.execute(schema_info.insert().values(id=1, version=SCHEMA_VERSION))
                return
            found = conn.execute(select(schema_info.c.version)).scalar_one_or_none()
            if found is None or found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"database schema version {found} is not one this code knows "
                    f"(it knows up to {SCHEMA_VERSION}); upgrade the software"
                )
            for version in range(found, SCHEMA_VERSION):
                _MIGRATIONS[version](conn)
            if found != SCHEMA_VERSION:
                _rebuild_derived(conn)
                conn.execute(schema_info.update().values(version=SCHEMA_VERSION))
    except SchemaVersionError:
        raise
    except Exception as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot open the store at {url}: {exc}") from exc


def _sqlite_upsert(table: Table) -> Insert:
    key = [c.name for c in table.primary_key.columns]
    others = [c for c in columns_of(table.name) if c not in key]
    stmt = sqlite.insert(table)
    new = stmt.excluded
    # Rows equal to the stored ones are not rewritten: loading twice changes nothing.
    changed = or_(*[table.c[n].is_not(new[n]) for n in others]) if others else None
    return stmt.on_conflict_do_update(
        index_elements=key, set_={n: new[n] for n in others}, where=changed
    )


def _rows(frame: pd.DataFrame, names: Sequence[str]) -> list[tuple[Any, ...]]:
    columns = [frame[n].astype(object).where(frame[n].notna(), None).tolist() for n in names]
    return list(zip(*columns, strict=True))


def _chunks(rows: list[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
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


def upsert(conn: Connection, table: str, frame: pd.DataFrame, stale: Stale | None = None) -> int:
    """Insert or update ``frame`` (store form, see ``riskmodel.dataset``) by primary key.

    Runs inside the caller's transaction. Returns the number of rows written (new or
    changed); rows equal to the stored ones are left alone, so repeating a load is a no-op.
    The store's derived data follows: at once, or, given ``stale``, when the caller calls
    ``refresh_derived(conn, stale)``.
    """
    target = metadata.tables[table]
    missing = [c for c in columns_of(table) if c not in frame.columns]
    if missing:
        raise StoreError(f"{table}: rows lack column(s) {', '.join(missing)}")
    bulk = len(frame) >= _REINDEX_FROM and _is_empty(conn, target)
    # Read before the write: a corrected row's old user needs its sightings redone too.
    users = None if bulk else _users_touched(conn, target, frame)
    requests = None if bulk else _requests_touched(conn, target, frame)
    days = None if bulk else _days_touched(conn, target, frame)
    if bulk:
        # Building an index once after a bulk load into an empty table is several times
        # faster than maintaining it row by row. DDL is transactional on both backends.
        for index in target.indexes:
            index.drop(conn)
        try:
            written = _write(conn, target, frame)
            _fill_derived(conn, target, frame)
        finally:
            for index in target.indexes:
                index.create(conn)
    else:
        written = _write(conn, target, frame)
        _fill_derived(conn, target, frame)
    if written:
        if days is not None and target.name in _TILED_SOURCES:
            # And after: a corrected order's new seller and day need their tiles redone.
            after = _days_touched(conn, target, frame)
            days = None if after is None else days | after
        pending = Stale() if stale is None else stale
        pending.add(
            users if table in _SIGHTING_SOURCES else set(),
            requests if table in _LABEL_SOURCES else set(),
            # New rates change every converted amount, and so every tile's.
            None if table == "rates" else days if table in _TILED_SOURCES else set(),
        )
        if stale is None:
            refresh_derived(conn, pending)
    return written


def refresh_derived(conn: Connection, stale: Stale) -> None:
    """Bring the sightings, abuse changes and day tiles of the ``stale`` keys up to date."""
    if stale.users is None or stale.users:
        refresh_sightings(conn, stale.users)
    if stale.requests is None or stale.requests:
        refresh_abuse_changes(conn, stale.requests)
    if stale.days is None or stale.days:
        refresh_entity_days(conn, stale.days, _EVENT_SOURCES)
    stale.users, stale.requests, stale.days = set(), set(), set()


_LABEL_SOURCES = ("orders", "refund_requests", "labels")


def _requests_touched(conn: Connection, target: Table, frame: pd.DataFrame) -> set[str] | None:
    """Requests whose abuse changes a write may change. None means every request."""
    if target.name not in _LABEL_SOURCES or frame.empty:
        return set()
    if len(frame) >= _REBUILD_FROM:
        return None  # a rebuild, if anything is written: no need to look anything up
    if target.name == "orders":
        requests = fetch_by_key(
            conn, "refund_requests", "order_id", frame["order_id"].tolist(), ["request_id"]
        )
        wanted = set(requests["request_id"].tolist())
    else:
        wanted = set(frame["request_id"].tolist())
    return None if len(wanted) >= _REBUILD_FROM else wanted


_SIGHTING_SOURCES = ("users", "orders", "refund_requests")


def _users_touched(conn: Connection, target: Table, frame: pd.DataFrame) -> set[str] | None:
    """Users whose sightings a write may change: the rows' users, and for rows that
    already exist the users they belonged to before. None means everyone."""
    if target.name not in _SIGHTING_SOURCES or frame.empty:
        return set()
    if len(frame) >= _REBUILD_FROM:
        return None  # a rebuild, if anything is written: no need to look anything up
    users = set(frame["user_id"].dropna().tolist())
    if target.name != "users":
        key = target.primary_key.columns.values()[0].name
        before = fetch_by_key(conn, target.name, key, frame[key].tolist(), ["user_id"])
        users.update(before["user_id"].dropna().tolist())
    return None if len(users) >= _REBUILD_FROM else users


_TILED_SOURCES = ("orders", "refund_requests")


def _days_touched(conn: Connection, target: Table, frame: pd.DataFrame) -> Tiles | None:
    """The tiles holding the stored rows of ``frame``'s keys: an order's and its refund
    requests', or a refund request's. None means every tile."""
    if target.name not in _TILED_SOURCES or frame.empty:
        return set()
    if len(frame) >= _REBUILD_FROM:
        return None
    ids = frame[target.primary_key.columns.values()[0].name].tolist()
    found = []
    if target.name == "orders":
        found.append(fetch_by_key(conn, "orders", "order_id", ids, [*TILED, "paid_at"]))
    by = "order_id" if target.name == "orders" else "request_id"
    columns = [_on_request(kind).name for kind in TILED]
    found.append(fetch_by_key(conn, "refund_requests", by, ids, [*columns, "requested_at"]))
    days: Tiles = set()
    for rows in found:
        for *keys, at in rows.itertuples(index=False):
            if at < 0:
                continue
            for kind, entity in zip(TILED, keys, strict=True):
                if isinstance(entity, str):  # a missing one may come back as NaN
                    days.add((kind, entity, int(at) // TILE_US))
    return None if len(days) >= _REBUILD_FROM else days


def refresh_sightings(conn: Connection, users: Iterable[str] | None, *, days: bool = True) -> None:
    """Recompute the sightings of ``users`` (all of them when None) from the events, and
    their days' tiles (``sighting_days``) unless ``days`` is False."""
    orders, requests = EVENT_TABLES["orders"], EVENT_TABLES["refund_requests"]
    seen = []
    for kind in SIGHTED:
        for table, entity, time in (
            (orders, orders.c[kind], orders.c.paid_at),
            (requests, _on_request(kind), requests.c.requested_at),
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


def _on_request(kind: str) -> Any:
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
    for chunk in _chunks(rows, _CHUNK):
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
        column = _on_request(kind)
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
                ("refund_requests", kind, _on_request(kind), requests.c.requested_at,
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


@dataclass
class TileCounts:
    """What a transaction's new refund requests add to the day tiles, applied together and
    in one order of keys by ``count_in_tiles``: tile rows are shared by every writer, and
    two transactions updating two of them in opposite orders would deadlock.

    ``requests``: requests and their amount per (entity kind, entity, day, reason).
    ``sightings``: new users and the newest registration among them per (entity kind,
    entity, day). ``moved``: tiles to recount, of users now first seen earlier than the
    store knew.
    """

    requests: dict[tuple[str, str, int, str], tuple[int, int]] = field(default_factory=dict)
    sightings: dict[tuple[str, str, int], tuple[int, int]] = field(default_factory=dict)
    moved: set[tuple[str, str, int]] = field(default_factory=set)


def base_amount(amount: int, rate: int | None) -> int:
    """``amount`` (cents of a currency worth ``rate`` millionths) in cents of the reporting
    currency, as the store and both feature engines compute it."""
    return amount if rate is None or rate == RATE_UNIT else amount * rate // RATE_UNIT


def insert_request(
    conn: Connection,
    row: Mapping[str, Any],
    *,
    order: Mapping[str, Any],
    registered_at: int,
    tiles: TileCounts,
) -> bool:
    """Insert one refund request (store form) unless its ``request_id`` is already stored.

    The serving path's write: ``upsert`` with its derived data, for one new row, without
    pandas (a one-row ``upsert`` costs milliseconds). The caller has read the request's
    order (``order``: its ``seller_id``, ``payment_account``, ``product_id`` and ``rate``,
    the rate of its currency or None) and user (``registered_at``). A new request has no
    label yet, so only the sightings and the day tiles change: the user is now seen on the
    request's device and IP and the order's payment account, no later than
    ``requested_at``, and the tiles of that day count one more request. The tiles' changes
    are added to ``tiles``, for the caller to apply (``count_in_tiles``) before it commits.
    Returns False, writing nothing, when the id is stored already. Runs in the caller's
    transaction.
    """
    marker = "%s" if conn.dialect.name == "postgresql" else "?"
    names = [*columns_of("refund_requests"), *_derived_columns("refund_requests")]
    copies = {name: order.get(column) for name, column in DERIVED["refund_requests"].items()}
    converted = base_amount(int(row["amount"]), order.get("rate"))
    values = {**row, **copies, BASE_AMOUNT: converted}
    values.setdefault(EXTRA, None)
    for outcome in _OUTCOME_COLUMNS["refund_requests"]:  # being decided: no outcome yet
        values.setdefault(outcome, None)
    inserted = conn.exec_driver_sql(
        f"INSERT INTO refund_requests ({', '.join(names)}) "
        f"VALUES ({', '.join([marker] * len(names))}) ON CONFLICT (request_id) DO NOTHING",
        tuple(values[n] for n in names),
    )
    if inserted.rowcount != 1:
        return False
    entities = {kind: values[_on_request(kind).name] for kind in {*TILED, *SIGHTED}}
    seen = {kind: entities[kind] for kind in SIGHTED}
    sighting = (
        "INSERT INTO sightings (entity_kind, entity, user_id, first_seen_at, registered_at) "
        f"VALUES ({', '.join([marker] * 5)}) "
        "ON CONFLICT (entity_kind, entity, user_id) DO UPDATE "
        "SET first_seen_at = excluded.first_seen_at "
        "WHERE excluded.first_seen_at < sightings.first_seen_at"
    )
    at, user = row["requested_at"], row["user_id"]
    kinds = [kind for kind in SIGHTED if seen[kind] is not None]
    known: dict[str, int] = {}
    if kinds:
        # When the user was first seen on each, in one round trip.
        either = " OR ".join([f"(entity_kind = {marker} AND entity = {marker})"] * len(kinds))
        known = dict(
            conn.exec_driver_sql(
                f"SELECT entity_kind, first_seen_at FROM sightings "
                f"WHERE user_id = {marker} AND ({either})",
                (user, *[v for kind in kinds for v in (kind, str(seen[kind]))]),
            ).all()
        )
    for kind in kinds:
        entity = str(seen[kind])
        before = known.get(kind)
        if before is not None and before <= at:
            continue  # seen there already, and earlier: nothing changes
        conn.exec_driver_sql(sighting, (kind, entity, user, at, registered_at))
        if before is None and at >= 0:
            tile = (kind, entity, at // TILE_US)
            users, newest = tiles.sightings.get(tile, (0, registered_at))
            tiles.sightings[tile] = (users + 1, max(newest, registered_at))
        elif before is not None:
            # First seen earlier than known (a request dated before): both days change.
            tiles.moved |= {(kind, entity, day // TILE_US) for day in (before, at) if day >= 0}
    if at >= 0:
        for kind in TILED:
            entity = entities[kind]
            if entity is not None:
                key = (kind, str(entity), at // TILE_US, str(row["reason"]))
                n, amount = tiles.requests.get(key, (0, 0))
                tiles.requests[key] = (n + 1, amount + converted)
    return True


def count_in_tiles(conn: Connection, tiles: TileCounts) -> None:
    """Apply ``tiles`` (see ``TileCounts``), each table's rows in the order of their keys."""
    marker = "%s" if conn.dialect.name == "postgresql" else "?"
    for (kind, entity, day, reason), (n, amount) in sorted(tiles.requests.items()):
        conn.exec_driver_sql(
            "INSERT INTO entity_days (entity_kind, entity, source, day, reason, n, amount) "
            f"VALUES ({marker}, {marker}, 'refund_requests', {marker}, {marker}, {marker}, "
            f"{marker}) ON CONFLICT (entity_kind, entity, source, day, reason) DO UPDATE "
            "SET n = entity_days.n + excluded.n, amount = entity_days.amount + excluded.amount",
            (kind, entity, day, reason, n, amount),
        )
    for (kind, entity, day), (users, newest) in sorted(tiles.sightings.items()):
        conn.exec_driver_sql(
            "INSERT INTO sighting_days (entity_kind, entity, day, users, newest_registration) "
            f"VALUES ({marker}, {marker}, {marker}, {marker}, {marker}) "
            "ON CONFLICT (entity_kind, entity, day) DO UPDATE SET users = "
            "sighting_days.users + excluded.users, newest_registration = CASE WHEN "
            "excluded.newest_registration > sighting_days.newest_registration THEN "
            "excluded.newest_registration ELSE sighting_days.newest_registration END",
            (kind, entity, day, users, newest),
        )
    # After the counts: a recount reads the sightings as they now are, its own included.
    refresh_sighting_days(conn, tiles.moved)


def _rate_of(currency: Any) -> Any:
    """The stored rate of ``currency`` (a column expression), or null."""
    rates = EVENT_TABLES["rates"]
    return select(rates.c.rate).where(rates.c.currency == currency).scalar_subquery()


def _converted(amount: Any, rate: Any) -> Any:
    """``base_amount`` in SQL: integer arithmetic, so it equals the Python and numpy one."""
    unit = literal_column(str(RATE_UNIT), BigInteger)
    return case((rate.is_(None), amount), (rate == unit, amount), else_=amount * rate // unit)


def _fill_statement(target: Table, *, by: str | None = "request_id") -> Any:
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


def _fill_derived(conn: Connection, target: Table, frame: pd.DataFrame) -> None:
    """Fill the derived columns of the rows just written, and of the requests of the orders
    just written (a corrected order must not leave stale copies behind); after new rates,
    every converted amount."""
    requests = EVENT_TABLES["refund_requests"]
    if target.name == "rates":
        for name in _CONVERTED:
            conn.execute(_fill_statement(EVENT_TABLES[name], by=None))
        return
    fills = []
    if target.name == "orders":
        fills.append((_fill_statement(target, by="order_id"), frame["order_id"].tolist()))
        if not _is_empty(conn, requests):
            fills.append((_fill_statement(requests, by="order_id"), frame["order_id"].tolist()))
    elif target.name == "refund_requests":
        fills.append((_fill_statement(requests), frame["request_id"].tolist()))
    for statement, ids in fills:
        for start in range(0, len(ids), 500):
            conn.execute(statement, {"ids": ids[start : start + 500]})


def _with_derived(tables: Iterable[str]) -> list[str]:
    """The tables and the derived tables a write to them changes."""
    names = list(dict.fromkeys(tables))
    if any(name in _SIGHTING_SOURCES for name in names):
        names += [sightings.name, sighting_days.name]
    if any(name in _LABEL_SOURCES for name in names):
        names.append(abuse_changes.name)
    if any(name in (*_TILED_SOURCES, *_LABEL_SOURCES, "rates") for name in names):
        names.append(entity_days.name)
    return list(dict.fromkeys(names))


def analyze(conn: Connection, tables: Iterable[str]) -> None:
    """Refresh the query planner's statistics after a bulk load (derived tables too).

    Without them PostgreSQL plans joins on freshly loaded tables as sequential scans:
    measured here, an online feature query went from about 50 ms to 0.3 ms.
    """
    for name in _with_derived(tables):
        conn.exec_driver_sql(f"ANALYZE {metadata.tables[name].name}")


def vacuum(engine: Engine, tables: Iterable[str]) -> None:
    """On PostgreSQL, ``VACUUM (ANALYZE)`` the tables (and their derived tables) after a load.

    Outside any transaction, as PostgreSQL requires. It marks the freshly written pages
    all-visible, so counting a large seller's orders or an IP's users is an index-only
    scan: measured here, 1.2 ms and 165 ms of heap fetches before, a fraction after.
    SQLite needs nothing of the kind.
    """
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for name in _with_derived(tables):
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {metadata.tables[name].name}")


def _is_empty(conn: Connection, target: Table) -> bool:
    return conn.execute(select(literal(1)).select_from(target).limit(1)).first() is None


def _write(conn: Connection, target: Table, frame: pd.DataFrame) -> int:
    if conn.dialect.name == "postgresql":
        return _upsert_postgres(conn, target, frame)
    if conn.dialect.name != "sqlite":
        raise StoreError(f"unsupported database: {conn.dialect.name}")
    compiled = _sqlite_upsert(target).compile(
        dialect=conn.dialect, column_keys=columns_of(target.name)
    )
    if compiled.positiontup is None:
        raise StoreError(f"{conn.dialect.name}: the driver must use positional parameters")
    # Tuples straight to the driver's executemany: several times faster than a dict per row.
    sql = str(compiled)
    written = 0
    for chunk in _chunks(_rows(frame, compiled.positiontup), _CHUNK):
        result = conn.exec_driver_sql(sql, chunk)
        written += max(result.rowcount, 0)
    return written


def _upsert_postgres(conn: Connection, target: Table, frame: pd.DataFrame) -> int:
    # COPY into a transaction-local staging table, then one set-based upsert: about five
    # times the rows per second of executemany.
    names = columns_of(target.name)
    stage = f"stage_{target.name}"
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {target.name}) ON COMMIT DROP"
    )
    conn.exec_driver_sql(f"TRUNCATE {stage}")
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY {stage} ({', '.join(names)}) FROM STDIN") as copy:
        for row in _rows(frame, names):
            copy.write_row(row)
    key = [c.name for c in target.primary_key.columns]
    others = [n for n in names if n not in key]
    changed = f"({', '.join(f'{target.name}.{n}' for n in others)}) IS DISTINCT FROM " + (
        f"({', '.join(f'EXCLUDED.{n}' for n in others)})"
    )
    sets = ", ".join(f"{n} = EXCLUDED.{n}" for n in others)
    sql = (
        f"INSERT INTO {target.name} ({', '.join(names)}) SELECT {', '.join(names)} FROM {stage} "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets} WHERE {changed}"
    )
    result = conn.exec_driver_sql(sql)
    return max(result.rowcount, 0)


def fetch_by_key(
    conn: Connection, table: str, column: str, values: Iterable[Any], columns: Sequence[str]
) -> pd.DataFrame:
    """Rows of ``table`` whose ``column`` is one of ``values`` (looked up in chunks)."""
    target = metadata.tables[table]
    wanted = sorted(set(values))
    frames = []
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        stmt = select(*[target.c[c] for c in columns]).where(target.c[column].in_(part))
        frames.append(pd.DataFrame(conn.execute(stmt).all(), columns=list(columns)))
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)


def read_table(conn: Connection | Engine, table: str) -> pd.DataFrame:
    """A whole table in store form, ordered by primary key."""
    target = metadata.tables[table]
    names = columns_of(table)
    stmt = select(*[target.c[n] for n in names]).order_by(*target.primary_key.columns)
    if isinstance(conn, Engine):
        with conn.connect() as c:
            rows = c.execute(stmt).all()
    else:
        rows = conn.execute(stmt).all()
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    for name in names:
        if isinstance(target.c[name].type, Integer):  # BigInteger too
            frame[name] = pd.array(frame[name].tolist(), dtype="Int64")
    return frame


def table_counts(engine: Engine) -> dict[str, int]:
    """Rows per table, events first then decisions."""
    with engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for name, t in [*EVENT_TABLES.items(), ("decisions", decisions)]
        }


def create_database(url: str, *, replace: bool = False) -> None:
    """Create the PostgreSQL database a URL names, if it does not exist (``replace``:
    drop it first). A fresh server has none of ours; SQLite files need nothing of this."""
    parsed = make_url(resolve_database_url(url))
    if parsed.get_backend_name() != "postgresql":
        return
    admin = create_engine(
        parsed.set(drivername="postgresql+psycopg", database="postgres"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            if replace:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{parsed.database}"')
            found = conn.execute(
                select(literal(1))
                .where(literal_column("datname") == parsed.database)
                .select_from(text("pg_database"))
            ).first()
            if found is None:
                conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    finally:
        admin.dispose()


def drop_everything(engine: Engine) -> None:
    """Drop every table of the schema (tests and ``riskmodel db reset``)."""
    with engine.begin() as conn:
        metadata.drop_all(conn)
