"""The store's schema: the MetaData and every table, the event tables generated from the
dataset contract (``riskmodel.dataset.TABLES``), the store-only columns and indexes, and
the constants that describe them; ``SCHEMA_VERSION``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeEngine

from riskmodel import dataset
from riskmodel.dataset import EXTRA, Kind
from riskmodel.units import DAY

__all__ = [
    "ABUSE_KEYS",
    "BASE_AMOUNT",
    "CONVERTED",
    "DERIVED",
    "EVENT_TABLES",
    "OUTCOME_COLUMNS",
    "SCHEMA_VERSION",
    "SIGHTED",
    "TILED",
    "TILE_SOURCES",
    "TILE_US",
    "abuse_changes",
    "accounts",
    "appeals",
    "audit_log",
    "claims",
    "columns_of",
    "decisions",
    "derived_columns",
    "entity_days",
    "live_settings",
    "metadata",
    "outcomes",
    "policy_archive",
    "schema_info",
    "sighting_days",
    "sightings",
    "webhook_deliveries",
    "webhooks",
]

SCHEMA_VERSION = 10

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
CONVERTED = ("orders", "refund_requests")


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
    if spec.name in CONVERTED:
        columns.append(Column(BASE_AMOUNT, BigInteger, nullable=True))
    wanted = (*_INDEXES.get(spec.name, ()), *_DERIVED_INDEXES.get(spec.name, ()))
    indexes = [Index(_index_name(spec.name, cols), *cols) for cols in wanted]
    return Table(spec.name, metadata, *columns, *indexes)


def _index_name(table: str, columns: Sequence[str]) -> str:
    """``ix_<table>_<key>_<time>``, and ``_covering`` when it holds more (PostgreSQL's
    names stop at 63 characters)."""
    return f"ix_{table}_{'_'.join(columns[:2])}" + ("_covering" if len(columns) > 2 else "")


def derived_columns(table: str) -> list[str]:
    """The store-only columns of an event table: copies and converted amounts."""
    return [*DERIVED.get(table, {}), *([BASE_AMOUNT] if table in CONVERTED else [])]


def columns_of(table: str) -> list[str]:
    """The columns a caller writes and reads: all but the store's derived columns."""
    derived = set(derived_columns(table))
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

# What is live, for every worker of every replica to follow (``riskmodel.store.operations``):
# one row per setting ("policy": a policy's SHA-256, "model": a model version, "switch":
# the kill switch's mode), with who changed it, when and why.
live_settings = Table(
    "live_settings",
    metadata,
    Column("what", String(16), primary_key=True),
    Column("value", String(128), nullable=False),
    Column("changed_at", BigInteger, nullable=False),
    Column("changed_by", String(128), nullable=False),
    Column("reason", Text, nullable=True),
)

# Every policy that was ever made live, under its SHA-256: the file's text and its list
# files' (JSON), enough to load it again exactly.
policy_archive = Table(
    "policy_archive",
    metadata,
    Column("sha256", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("archived_at", BigInteger, nullable=False),
)

# Every change of what is live, in order: deploys, reloads, switches.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("who", String(128), nullable=False),
    Column("action", String(32), nullable=False),
    Column("value", String(128), nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_audit_log_at", "at"),
)

# Every final outcome of a refund request, one row per version of its decision that
# settles it: the automatic decision when it approves or blocks (version 1, the
# ``decisions`` row, which is never changed), a reviewer's verdict, an appeal's result.
# A version is never overwritten. ``seq`` orders the refund pipeline's feed
# (``riskmodel.store.outcomes``): it is given after the version is committed, by one
# sequencer at a time, so a reader that has seen ``seq`` N has seen every version below N.
outcomes = Table(
    "outcomes",
    metadata,
    Column("event_id", String(160), primary_key=True),  # "<request_id>:<version>"
    Column("seq", BigInteger, nullable=True),  # None until sequenced
    Column("request_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # automatic | verdict | appeal
    Column("decision", String(16), nullable=False),  # approve | block | refuse
    Column("approved_amount", BigInteger, nullable=False),
    Column("is_abuse", Boolean, nullable=True),
    Column("note", Text, nullable=True),
    Column("decided_by", String(128), nullable=True),
    Column("decided_at", BigInteger, nullable=False),
    Column("due_at", BigInteger, nullable=True),
    Column("late", Boolean, nullable=False),
    Index("ix_outcomes_seq", "seq", unique=True),
    Index("ix_outcomes_request", "request_id", "version", unique=True),
    Index("ix_outcomes_decided_by", "decided_by", "decided_at"),
)

# A buyer's appeal of a block or a refusal: one per request, decided in the disputes queue
# by another reviewer than the one who refused (``first_reviewer``; None: the automatic
# decision blocked).
appeals = Table(
    "appeals",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("filed_at", BigInteger, nullable=False),
    Column("filed_by", String(128), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("statement", Text, nullable=False),
    Column("queue", String(64), nullable=False),
    Column("due_at", BigInteger, nullable=False),
    Column("against_version", Integer, nullable=False),
    Column("first_reviewer", String(128), nullable=True),
    Column("decided_version", Integer, nullable=True),
    Index("ix_appeals_open", "decided_version", "due_at"),
)

# The people who sign in to the console (machines use API keys): a reviewer or a support
# account, its password as a slow salted hash, never the password.
accounts = Table(
    "accounts",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=True),
    Column("disabled_at", BigInteger, nullable=True),
    # Signing out ends every session begun before it (a copied cookie included).
    Column("signed_out_at", BigInteger, nullable=True),
    # Wrong passwords in a row; past a few the account waits until ``locked_until``.
    Column("failed_sign_ins", Integer, nullable=False, server_default="0"),
    Column("locked_until", BigInteger, nullable=True),
)

# Who is working on which case: one reviewer per case; a claim lapses when its holder has
# been idle too long (``accounts.last_seen_at``).
claims = Table(
    "claims",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("reviewer", String(128), nullable=False),
    Column("claimed_at", BigInteger, nullable=False),
)

# Registered receivers of the outcome feed: each event is posted, signed with the
# receiver's secret (HMAC-SHA256), in order, until it answers 2xx.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("delivered_through", BigInteger, nullable=False),  # the last seq answered 2xx
    Column("attempts", Integer, nullable=False),  # failed attempts at the next event
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("disabled_at", BigInteger, nullable=True),
)

# Every attempt to deliver an event to a webhook, answered or not: what failed is visible.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("webhook_id", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("attempted_at", BigInteger, nullable=False),
    Column("status", Integer, nullable=True),  # the HTTP status; None: no answer
    Column("error", Text, nullable=True),
    Column("duration_us", BigInteger, nullable=False),
    Index("ix_webhook_deliveries_hook", "webhook_id", "seq"),
)

schema_info = Table(
    "schema_info",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

# The outcome columns, added in version 7: a refund request being decided has none yet.
OUTCOME_COLUMNS = {
    "orders": ("credited_at", "activation_failed_at"),
    "refund_requests": ("paid_amount", "resolved_at"),
}
