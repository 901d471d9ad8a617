"""The event store: the five dataset tables plus decisions, on SQLite or PostgreSQL.

One schema, generated from the dataset contract (``riskmodel.dataset.TABLES``), and
one code path for both databases; the URL chooses. The embedded default is a SQLite
file, ``data/riskmodel.db`` below the working directory, created on first use::

    >>> from riskmodel.store import open_store, table_counts
    >>> engine = open_store("sqlite://")          # in memory; or postgresql+psycopg://...
    >>> table_counts(engine)["orders"]
    0

Storage units (``riskmodel.units``): timestamps are integer microseconds since the Unix
epoch (UTC) and money is integer cents. Both are exact, identical on either database,
and cheap to compare on the online feature path.

Schema versions: ``SCHEMA_VERSION`` is written in the ``schema_info`` table when the
schema is created. Opening an older database runs the steps of ``_MIGRATIONS`` in order,
in one transaction; opening a newer one is refused (``SchemaVersionError``).

One job per module, each importing only those before it: ``schema`` (the tables and the
constants that describe them), ``operations`` (what is live, the policy archive and the
audit trail), ``derived`` (the derived columns, sightings, abuse changes
and day tiles, and their refresh), ``bulk`` (``upsert`` and reading tables back), ``live``
(the serving path's write of one request), ``decisions`` (the decision path's one
read and the decision row), ``outcomes`` (the versions that settle a request, the feed's
sequence, appeals), ``hooks`` (the feed's webhooks and their deliveries),
``migrations`` (the version steps) and
``connection`` (URLs, ``open_store``, dialects, ``analyze`` / ``vacuum``).
"""

from riskmodel.store.bulk import fetch_by_key, read_table, table_counts, upsert
from riskmodel.store.connection import DATABASE_URL_ENV as DATABASE_URL_ENV
from riskmodel.store.connection import (
    DEFAULT_DATABASE_URL,
    analyze,
    create_database,
    driver_errors,
    drop_everything,
    open_store,
    resolve_database_url,
    vacuum,
)
from riskmodel.store.decisions import (
    DECISION_COLUMNS,
    REQUEST_COLUMNS,
    Misfit,
    OrderRequest,
    Replay,
    RequestContext,
    decision_context,
    fetch_one,
    insert_decision,
    marker,
    order_requests,
    reading,
    request_hash,
    same_request_stored,
    stored_decision,
)
from riskmodel.store.derived import (
    Stale,
    Tiles,
    base_amount,
    refresh_abuse_changes,
    refresh_derived,
    refresh_entity_days,
    refresh_sighting_days,
    refresh_sightings,
)
from riskmodel.store.hooks import (
    add_webhook,
    any_webhooks,
    delivered,
    deliveries,
    due_webhooks,
    failed_attempt,
    list_webhooks,
    record_attempt,
    replay_from,
    stop_webhook,
    take,
    webhook,
)
from riskmodel.store.live import TileCounts, count_in_tiles, insert_request
from riskmodel.store.outcomes import (
    FINAL,
    VERSION_COLUMNS,
    appeal_of,
    automatic_outcome,
    close_appeal,
    feed,
    insert_appeal,
    insert_outcome,
    latest_outcome,
    sequence,
    versions,
)
from riskmodel.store.schema import (
    ABUSE_KEYS,
    BASE_AMOUNT,
    DERIVED,
    EVENT_TABLES,
    SCHEMA_VERSION,
    SIGHTED,
    TILE_SOURCES,
    TILE_US,
    TILED,
    abuse_changes,
    accounts,
    appeals,
    claims,
    columns_of,
    decisions,
    entity_days,
    metadata,
    outcomes,
    schema_info,
    sighting_days,
    sightings,
    webhook_deliveries,
    webhooks,
)

__all__ = [
    "ABUSE_KEYS",
    "BASE_AMOUNT",
    "DECISION_COLUMNS",
    "DEFAULT_DATABASE_URL",
    "DERIVED",
    "EVENT_TABLES",
    "FINAL",
    "REQUEST_COLUMNS",
    "SCHEMA_VERSION",
    "SIGHTED",
    "TILED",
    "TILE_SOURCES",
    "TILE_US",
    "VERSION_COLUMNS",
    "Misfit",
    "OrderRequest",
    "Replay",
    "RequestContext",
    "Stale",
    "TileCounts",
    "Tiles",
    "abuse_changes",
    "accounts",
    "add_webhook",
    "analyze",
    "any_webhooks",
    "appeal_of",
    "appeals",
    "automatic_outcome",
    "base_amount",
    "claims",
    "close_appeal",
    "columns_of",
    "count_in_tiles",
    "create_database",
    "decision_context",
    "decisions",
    "delivered",
    "deliveries",
    "driver_errors",
    "drop_everything",
    "due_webhooks",
    "entity_days",
    "failed_attempt",
    "feed",
    "fetch_by_key",
    "fetch_one",
    "insert_appeal",
    "insert_decision",
    "insert_outcome",
    "insert_request",
    "latest_outcome",
    "list_webhooks",
    "marker",
    "metadata",
    "open_store",
    "order_requests",
    "outcomes",
    "read_table",
    "reading",
    "record_attempt",
    "refresh_abuse_changes",
    "refresh_derived",
    "refresh_entity_days",
    "refresh_sighting_days",
    "refresh_sightings",
    "replay_from",
    "request_hash",
    "resolve_database_url",
    "same_request_stored",
    "schema_info",
    "sequence",
    "sighting_days",
    "sightings",
    "stop_webhook",
    "stored_decision",
    "table_counts",
    "take",
    "upsert",
    "vacuum",
    "versions",
    "webhook",
    "webhook_deliveries",
    "webhooks",
]
