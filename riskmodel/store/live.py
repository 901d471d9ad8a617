"""The live writes of a decision: one new refund request with its derived data
(``insert_request``), and its day tiles' counts (``TileCounts``, ``count_in_tiles``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from riskmodel.dataset import EXTRA
from riskmodel.store.derived import base_amount, on_request, refresh_sighting_days
from riskmodel.store.schema import (
    BASE_AMOUNT,
    DERIVED,
    OUTCOME_COLUMNS,
    SIGHTED,
    TILE_US,
    TILED,
    columns_of,
    derived_columns,
)

__all__ = [
    "TileCounts",
    "count_in_tiles",
    "insert_request",
]


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
    names = [*columns_of("refund_requests"), *derived_columns("refund_requests")]
    copies = {name: order.get(column) for name, column in DERIVED["refund_requests"].items()}
    converted = base_amount(int(row["amount"]), order.get("rate"))
    values = {**row, **copies, BASE_AMOUNT: converted}
    values.setdefault(EXTRA, None)
    for outcome in OUTCOME_COLUMNS["refund_requests"]:  # being decided: no outcome yet
        values.setdefault(outcome, None)
    inserted = conn.exec_driver_sql(
        f"INSERT INTO refund_requests ({', '.join(names)}) "
        f"VALUES ({', '.join([marker] * len(names))}) ON CONFLICT (request_id) DO NOTHING",
        tuple(values[n] for n in names),
    )
    if inserted.rowcount != 1:
        return False
    entities = {kind: values[on_request(kind).name] for kind in {*TILED, *SIGHTED}}
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
