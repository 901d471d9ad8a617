"""Connections and dialects: the database URL, ``open_store`` (the SQLite pragmas, the
schema brought up to date), creating and dropping databases, and the planner's statistics
after a load (``analyze``, ``vacuum``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    event,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from riskmodel.errors import StoreError
from riskmodel.store.derived import LABEL_SOURCES, SIGHTING_SOURCES, TILED_SOURCES
from riskmodel.store.migrations import ensure_schema
from riskmodel.store.schema import abuse_changes, entity_days, metadata, sighting_days, sightings

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_DATABASE_URL",
    "analyze",
    "create_database",
    "driver_errors",
    "drop_everything",
    "open_store",
    "resolve_database_url",
    "vacuum",
]

DEFAULT_DATABASE_URL = "sqlite:///data/riskmodel.db"
DATABASE_URL_ENV = "RISKMODEL_DATABASE_URL"


def resolve_database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``$RISKMODEL_DATABASE_URL``, else the SQLite default."""
    return url or os.environ.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL


@contextmanager
def driver_errors(conn: Connection, what: str) -> Iterator[None]:
    """Errors of the driver's own cursor (the decision path's reads skip SQLAlchemy's
    statement layer) raised as SQLAlchemy raises them: a database that fails or is lost
    is then an ``OperationalError`` there too, which the service answers as the store's
    failure (degraded and not ready), not as a bug of its own. ``what``: the statement,
    in words, for the message (the feature statement is tens of kilobytes)."""
    base = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except base as exc:
        raise DBAPIError.instance(what, None, exc, base, dialect=conn.dialect) from exc


def open_store(
    url: str | None = None, *, create: bool = True, connections: int | None = None
) -> Engine:
    """Connect to the store at ``url`` and bring its schema to ``SCHEMA_VERSION``.

    ``postgresql://`` URLs use the psycopg 3 driver. SQLite files are put in WAL mode
    (readers never wait for the writer) with full fsync on commit. ``connections``: on
    PostgreSQL, how many connections the pool keeps open (SQLAlchemy's default is 5);
    ten more are opened for a burst and closed after it.
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
        options: dict[str, Any] = {"paramstyle": "format"} if backend == "postgresql" else {}
        if backend == "postgresql" and connections is not None:
            options.update(pool_size=connections)
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
            ensure_schema(engine)
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


def _with_derived(tables: Iterable[str]) -> list[str]:
    """The tables and the derived tables a write to them changes."""
    names = list(dict.fromkeys(tables))
    if any(name in SIGHTING_SOURCES for name in names):
        names += [sightings.name, sighting_days.name]
    if any(name in LABEL_SOURCES for name in names):
        names.append(abuse_changes.name)
    if any(name in (*TILED_SOURCES, *LABEL_SOURCES, "rates") for name in names):
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
