"""Schema versions: the step from each version to the next (``_MIGRATIONS``), the rebuild
of the derived data after them, and bringing a database to ``SCHEMA_VERSION`` as it is
opened (``ensure_schema``)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, inspect, select

from riskmodel.errors import SchemaVersionError, StoreError
from riskmodel.store.derived import (
    fill_statement,
    refresh_abuse_changes,
    refresh_entity_days,
    refresh_sightings,
)
from riskmodel.store.schema import (
    CONVERTED,
    EVENT_TABLES,
    OUTCOME_COLUMNS,
    SCHEMA_VERSION,
    abuse_changes,
    accounts,
    appeals,
    audit_log,
    claims,
    derived_columns,
    entity_days,
    live_settings,
    metadata,
    outcomes,
    policy_archive,
    schema_info,
    sighting_days,
    sightings,
    webhook_deliveries,
    webhooks,
)

__all__ = [
    "ensure_schema",
]

_DERIVED_TABLES = (sightings, abuse_changes, entity_days, sighting_days)


def _add_policy_hash(conn: Connection) -> None:
    """Version 2 -> 3: decisions record the hash of the policy file they were made with."""
    conn.exec_driver_sql("ALTER TABLE decisions ADD COLUMN policy_hash VARCHAR(64)")


def _add_rates(conn: Connection) -> None:
    """Version 5 -> 6: currency rates."""
    EVENT_TABLES["rates"].create(conn)


def _add_outcomes(conn: Connection) -> None:
    """Version 6 -> 7: the issuer's word on whether the value reached the buyer, and what
    each refund request was paid in the end."""
    for name, columns in OUTCOME_COLUMNS.items():
        for column in columns:
            kind = EVENT_TABLES[name].c[column].type.compile(conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {name} ADD COLUMN {column} {kind}")


def _add_operations(conn: Connection) -> None:
    """Version 8 -> 9: what is live, the policy archive and the audit trail."""
    for table in (live_settings, policy_archive, audit_log):
        table.create(conn, checkfirst=True)


def _add_outcomes_and_people(conn: Connection) -> None:
    """Version 9 -> 10: the final outcomes of each decision, appeals, console accounts and
    claims, webhooks. Every automatic approve or block already stored becomes version 1 of
    its outcomes, in the order it was decided."""
    for table in (outcomes, appeals, accounts, claims, webhooks, webhook_deliveries):
        table.create(conn, checkfirst=True)
    conn.exec_driver_sql(
        "INSERT INTO outcomes (event_id, seq, request_id, version, kind, decision, "
        "approved_amount, is_abuse, note, decided_by, decided_at, due_at, late) "
        "SELECT request_id || ':1', ROW_NUMBER() OVER (ORDER BY decided_at, request_id), "
        "request_id, 1, 'automatic', decision, approved_amount, NULL, NULL, NULL, "
        "decided_at, NULL, FALSE FROM decisions WHERE decision IN ('approve', 'block')"
    )


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
    8: _add_operations,  # 9
    9: _add_outcomes_and_people,  # 10
}
# Steps that leave the derived data as it is: a migration made only of these skips the
# rebuild, which takes minutes on a large store.
_KEEPS_DERIVED = frozenset({8, 9})


def _rebuild_derived(conn: Connection) -> None:
    """Bring every derived column, index and table to the current schema and fill them
    from the events (after a migration)."""
    found = inspect(conn)
    for name in EVENT_TABLES:
        present = {c["name"] for c in found.get_columns(name)}
        table = EVENT_TABLES[name]
        for column in derived_columns(name):
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
    for name in CONVERTED:
        conn.execute(fill_statement(EVENT_TABLES[name], by=None))
    refresh_sightings(conn, None)
    refresh_abuse_changes(conn, None)
    refresh_entity_days(conn, None)


def ensure_schema(engine: Engine) -> None:
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
                if not set(range(found, SCHEMA_VERSION)) <= _KEEPS_DERIVED:
                    _rebuild_derived(conn)
                conn.execute(schema_info.update().values(version=SCHEMA_VERSION))
    except SchemaVersionError:
        raise
    except Exception as exc:
        url = engine.url.render_as_string(hide_password=True)
        raise StoreError(f"cannot open the store at {url}: {exc}") from exc
