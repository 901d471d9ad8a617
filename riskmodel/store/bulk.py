"""Bulk loads: ``upsert`` by primary key (executemany on SQLite, COPY on PostgreSQL), the
keys whose derived data a write touched, and reading tables back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Integer, Table, func, literal, or_, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.expression import Insert

from riskmodel.errors import StoreError
from riskmodel.store.derived import (
    CHUNK,
    LABEL_SOURCES,
    SIGHTING_SOURCES,
    TILED_SOURCES,
    Stale,
    Tiles,
    chunks,
    fill_statement,
    on_request,
    refresh_derived,
)
from riskmodel.store.schema import (
    CONVERTED,
    EVENT_TABLES,
    TILE_US,
    TILED,
    columns_of,
    decisions,
    metadata,
)

__all__ = [
    "fetch_by_key",
    "read_table",
    "table_counts",
    "upsert",
]

_REINDEX_FROM = 50_000
# Above this many users or requests touched by one write, rebuilding the derived tables in
# one set-based statement is cheaper than recomputing them key by key.
_REBUILD_FROM = 20_000


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
        # faster than maintaining it row by row. The drop is part of the caller's
        # transaction: if anything fails before it commits, the rollback brings the
        # indexes back (creating them again here would only hide the failure behind
        # PostgreSQL's "transaction is aborted").
        _open_transaction(conn)
        for index in target.indexes:
            index.drop(conn)
        written = _write(conn, target, frame)
        _fill_derived(conn, target, frame)
        for index in target.indexes:
            index.create(conn)
    else:
        written = _write(conn, target, frame)
        _fill_derived(conn, target, frame)
    if written:
        if days is not None and target.name in TILED_SOURCES:
            # And after: a corrected order's new seller and day need their tiles redone.
            after = _days_touched(conn, target, frame)
            days = None if after is None else days | after
        pending = Stale() if stale is None else stale
        pending.add(
            users if table in SIGHTING_SOURCES else set(),
            requests if table in LABEL_SOURCES else set(),
            # New rates change every converted amount, and so every tile's.
            None if table == "rates" else days if table in TILED_SOURCES else set(),
        )
        if stale is None:
            refresh_derived(conn, pending)
    return written


def _open_transaction(conn: Connection) -> None:
    """Make sure the database has the caller's transaction open before DDL.

    SQLite's Python driver opens its transaction only at the first INSERT, UPDATE or
    DELETE: DDL before that is committed on its own, and a load that then failed would
    leave a table without its indexes. PostgreSQL's transaction is open from the start.
    """
    if conn.dialect.name != "sqlite":
        return
    driver = conn.connection.driver_connection
    if driver is not None and not driver.in_transaction:
        conn.exec_driver_sql("BEGIN")


def _requests_touched(conn: Connection, target: Table, frame: pd.DataFrame) -> set[str] | None:
    """Requests whose abuse changes a write may change. None means every request."""
    if target.name not in LABEL_SOURCES or frame.empty:
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


def _users_touched(conn: Connection, target: Table, frame: pd.DataFrame) -> set[str] | None:
    """Users whose sightings a write may change: the rows' users, and for rows that
    already exist the users they belonged to before. None means everyone."""
    if target.name not in SIGHTING_SOURCES or frame.empty:
        return set()
    if len(frame) >= _REBUILD_FROM:
        return None  # a rebuild, if anything is written: no need to look anything up
    users = set(frame["user_id"].dropna().tolist())
    if target.name != "users":
        key = target.primary_key.columns.values()[0].name
        before = fetch_by_key(conn, target.name, key, frame[key].tolist(), ["user_id"])
        users.update(before["user_id"].dropna().tolist())
    return None if len(users) >= _REBUILD_FROM else users


def _days_touched(conn: Connection, target: Table, frame: pd.DataFrame) -> Tiles | None:
    """The tiles holding the stored rows of ``frame``'s keys: an order's and its refund
    requests', or a refund request's. None means every tile."""
    if target.name not in TILED_SOURCES or frame.empty:
        return set()
    if len(frame) >= _REBUILD_FROM:
        return None
    ids = frame[target.primary_key.columns.values()[0].name].tolist()
    found = []
    if target.name == "orders":
        found.append(fetch_by_key(conn, "orders", "order_id", ids, [*TILED, "paid_at"]))
    by = "order_id" if target.name == "orders" else "request_id"
    columns = [on_request(kind).name for kind in TILED]
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


def _fill_derived(conn: Connection, target: Table, frame: pd.DataFrame) -> None:
    """Fill the derived columns of the rows just written, and of the requests of the orders
    just written (a corrected order must not leave stale copies behind); after new rates,
    every converted amount."""
    requests = EVENT_TABLES["refund_requests"]
    if target.name == "rates":
        for name in CONVERTED:
            conn.execute(fill_statement(EVENT_TABLES[name], by=None))
        return
    fills = []
    if target.name == "orders":
        fills.append((fill_statement(target, by="order_id"), frame["order_id"].tolist()))
        if not _is_empty(conn, requests):
            fills.append((fill_statement(requests, by="order_id"), frame["order_id"].tolist()))
    elif target.name == "refund_requests":
        fills.append((fill_statement(requests), frame["request_id"].tolist()))
    for statement, ids in fills:
        for start in range(0, len(ids), 500):
            conn.execute(statement, {"ids": ids[start : start + 500]})


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
    for chunk in chunks(_rows(frame, compiled.positiontup), CHUNK):
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
