"""The event store: every table round-trips through SQLite and PostgreSQL alike."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from riskmodel import dataset, store
from riskmodel.errors import SchemaVersionError, StoreError
from riskmodel.ingest import ingest
from riskmodel.units import DAY

from .conftest import tiny_tables


def _normalised() -> dict[str, pd.DataFrame]:
    raw = {**tiny_tables(), "rates": pd.DataFrame({"currency": ["CNY"], "rate": ["1"]})}
    return {name: dataset.normalise(name, frame) for name, frame in raw.items()}


def _by_key(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    key = list(dataset.TABLES[name].key)
    return frame.sort_values(key).reset_index(drop=True)


@pytest.mark.parametrize("table", list(dataset.TABLES))
def test_each_table_round_trips(engine: Engine, table: str) -> None:
    tables = _normalised()
    with engine.begin() as conn:
        written = store.upsert(conn, table, tables[table])

    back = store.read_table(engine, table)

    assert written == len(tables[table])
    pd.testing.assert_frame_equal(
        _by_key(table, back), _by_key(table, tables[table]), check_dtype=False
    )


_ids = st.text(string.ascii_letters + string.digits + "-_.:@", min_size=1, max_size=40)
_text = st.none() | st.text(min_size=0, max_size=60).filter(lambda s: "\x00" not in s)
_micros = st.integers(min_value=0, max_value=7_258_118_400_000_000)  # up to year 2200
_cents = st.integers(min_value=0, max_value=10**13)


@st.composite
def _orders(draw: st.DrawFn) -> pd.DataFrame:
    ids = draw(st.lists(_ids, min_size=1, max_size=8, unique=True))
    rows = []
    for order_id in ids:
        paid = draw(_micros)
        rows.append(
            {
                "order_id": order_id,
                "user_id": draw(_ids),
                "product_type": draw(
                    st.sampled_from(dataset.TABLES["orders"].column("product_type").choices)
                ),
                "amount": draw(_cents),
                "paid_at": paid,
                "currency": draw(_text),
                "seller_id": draw(st.none() | _ids),
                "product_id": draw(st.none() | _ids),
                "payment_method": draw(_text),
                "payment_account": draw(st.none() | _ids),
                "device_id": draw(st.none() | _ids),
                "ip": draw(st.none() | _ids),
                "delivered_at": draw(st.none() | st.just(paid + 1)),
                "redeemed_at": draw(st.none() | _micros),
                "credited_at": draw(st.none() | _micros),
                "activation_failed_at": draw(st.none() | _micros),
                "service_days": draw(st.none() | st.integers(1, 3650)),
                "extra": draw(st.none() | st.just('{"k": "v"}')),
            }
        )
    frame = pd.DataFrame(rows, dtype=object)
    for column in (
        "amount",
        "paid_at",
        "delivered_at",
        "redeemed_at",
        "credited_at",
        "activation_failed_at",
        "service_days",
    ):
        frame[column] = pd.array(frame[column].tolist(), dtype="Int64")
    return frame


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(orders=_orders())
def test_any_valid_orders_round_trip_exactly(engine: Engine, orders: pd.DataFrame) -> None:
    with engine.begin() as conn:
        conn.execute(delete(store.EVENT_TABLES["orders"]))
        store.upsert(conn, "orders", orders)

    back = store.read_table(engine, "orders")

    pd.testing.assert_frame_equal(
        _by_key("orders", back), _by_key("orders", orders), check_dtype=False
    )


def test_upsert_is_idempotent_and_updates_by_key(engine: Engine) -> None:
    orders = _normalised()["orders"]
    with engine.begin() as conn:
        assert store.upsert(conn, "orders", orders) == 4
    with engine.begin() as conn:
        assert store.upsert(conn, "orders", orders) == 0
    changed = orders.copy()
    changed.loc[0, "amount"] = 2500
    with engine.begin() as conn:
        assert store.upsert(conn, "orders", changed) == 1

    back = store.read_table(engine, "orders")

    assert store.table_counts(engine)["orders"] == 4
    assert back.set_index("order_id").loc["o1", "amount"] == 2500


def test_decisions_are_unique_by_request_id(engine: Engine) -> None:
    row = {
        "request_id": "r1",
        "decision": "approve",
        "score": 0.01,
        "approved_amount": 2200,
        "reasons": "[]",
        "decided_at": 1,
        "request_hash": "abc",
    }
    with engine.begin() as conn:
        conn.execute(insert(store.decisions), row)

    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(store.decisions), {**row, "decision": "block"})

    assert store.table_counts(engine)["decisions"] == 1


def test_a_newer_schema_is_refused(database_url: str) -> None:
    engine = store.open_store(database_url)
    with engine.begin() as conn:
        conn.execute(update(store.schema_info).values(version=store.SCHEMA_VERSION + 1))
    engine.dispose()

    with pytest.raises(SchemaVersionError, match="upgrade the software"):
        store.open_store(database_url)


def test_sqlite_store_is_created_on_first_use_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "store.db"

    engine = store.open_store(f"sqlite:///{path}")

    assert path.is_file()
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
    assert set(store.table_counts(engine)) == {*dataset.TABLES, "decisions"}
    engine.dispose()


def test_the_url_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKMODEL_DATABASE_URL", "sqlite:///elsewhere.db")
    assert store.resolve_database_url() == "sqlite:///elsewhere.db"
    assert store.resolve_database_url("sqlite://") == "sqlite://"
    monkeypatch.delenv("RISKMODEL_DATABASE_URL")
    assert store.resolve_database_url() == store.DEFAULT_DATABASE_URL


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("postgresql://postgres@127.0.0.1:1/none", "cannot open the store"),
    ],
)
def test_a_bad_url_says_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        store.open_store(url)


def _derived_copies(engine: Engine) -> list[tuple[object, ...]]:
    requests = store.EVENT_TABLES["refund_requests"]
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                select(
                    requests.c.request_id,
                    requests.c.order_seller_id,
                    requests.c.order_payment_account,
                ).order_by(requests.c.request_id)
            )
        ]


def test_requests_carry_their_orders_seller_and_payment_account(
    database_url: str, tiny_dir: Path
) -> None:
    ingest(tiny_dir, database_url)
    engine = store.open_store(database_url)

    assert _derived_copies(engine) == [
        ("r1", "s1", "pa1"),
        ("r2", "s2", "pa2"),
        ("r3", "s2", "pa3"),
    ]
    indexes = {i["name"] for i in inspect(engine).get_indexes("orders")}
    assert "ix_orders_ip_paid_at_covering" in indexes
    assert "ix_orders_ip_paid_at" not in indexes  # version 1's, replaced
    with engine.connect() as conn:  # amounts in the reporting currency, for the sums
        requests = store.EVENT_TABLES["refund_requests"]
        amounts = select(requests.c.amount, requests.c[store.BASE_AMOUNT])
        assert all(a == b for a, b in conn.execute(amounts))
    engine.dispose()


def test_a_version_1_store_is_migrated_in_place(database_url: str, tiny_dir: Path) -> None:
    ingest(tiny_dir, database_url)
    engine = store.open_store(database_url)
    with engine.begin() as conn:  # put the database back as version 1 made it
        for index in (
            "ix_refund_requests_order_seller_id_requested_at_covering",
            "ix_refund_requests_order_payment_account_requested_at",
            "ix_refund_requests_order_product_id_requested_at_covering",
            "ix_refund_requests_ip_requested_at_covering",
            "ix_orders_product_id_paid_at_covering",
            "ix_orders_ip_paid_at_covering",
            "ix_orders_seller_id_paid_at_covering",
        ):
            conn.exec_driver_sql(f"DROP INDEX {index}")
        conn.exec_driver_sql("CREATE INDEX ix_orders_ip_paid_at ON orders (ip, paid_at)")
        for table, column in (
            *(("refund_requests", c) for c in store.DERIVED["refund_requests"]),
            ("refund_requests", store.BASE_AMOUNT),
            ("orders", store.BASE_AMOUNT),
            ("orders", "credited_at"),
            ("orders", "activation_failed_at"),
            ("refund_requests", "paid_amount"),
            ("refund_requests", "resolved_at"),
        ):
            conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        for table in (store.sightings, store.abuse_changes, store.entity_days, store.sighting_days):
            table.drop(conn)
        store.EVENT_TABLES["rates"].drop(conn)
        conn.exec_driver_sql("ALTER TABLE decisions DROP COLUMN policy_hash")
        conn.execute(update(store.schema_info).values(version=1))
    engine.dispose()

    engine = store.open_store(database_url)

    with engine.connect() as conn:
        version = conn.execute(select(store.schema_info.c.version)).scalar_one()
    assert version == store.SCHEMA_VERSION
    assert _derived_copies(engine) == [
        ("r1", "s1", "pa1"),
        ("r2", "s2", "pa2"),
        ("r3", "s2", "pa3"),
    ]
    indexes = {i["name"] for i in inspect(engine).get_indexes("orders")}
    assert "ix_orders_ip_paid_at_covering" in indexes
    assert "ix_orders_ip_paid_at" not in indexes  # version 1's, replaced
    with engine.connect() as conn:  # amounts in the reporting currency, for the sums
        requests = store.EVENT_TABLES["refund_requests"]
        amounts = select(requests.c.amount, requests.c[store.BASE_AMOUNT])
        assert all(a == b for a, b in conn.execute(amounts))
    assert ("ip", "10.0.0.1", "u1") in {row[:3] for row in _sightings(engine)}
    assert _tiles_of(_sightings(engine)) == _table(engine, store.sighting_days)
    assert {(row[2], row[1]) for row in _entity_days(engine) if row[0] == "seller_id"} == {
        ("orders", "s1"),
        ("orders", "s2"),
        ("refund_requests", "s1"),
        ("refund_requests", "s2"),
        ("verdicts", "s2"),
        ("abuse", "s2"),
    }
    with engine.connect() as conn:  # decisions gained the policy's hash
        assert conn.execute(select(store.decisions.c.policy_hash)).all() == []
    engine.dispose()


def test_a_version_7_sqlite_store_keeps_its_day_tiles_in_key_order(
    tmp_path: Path, tiny_dir: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    ingest(tiny_dir, url)
    engine = store.open_store(url)
    tiles = _entity_days(engine), _table(engine, store.sighting_days)
    with engine.begin() as conn:  # as version 7 made them: rows by number, a key index
        for table in (store.entity_days, store.sighting_days):
            ddl = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = ?", (table.name,)
            ).scalar_one()
            conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO old")
            conn.exec_driver_sql(ddl.replace("WITHOUT ROWID", ""))
            conn.exec_driver_sql(f"INSERT INTO {table.name} SELECT * FROM old")
            conn.exec_driver_sql("DROP TABLE old")
        conn.execute(update(store.schema_info).values(version=7))
    engine.dispose()

    engine = store.open_store(url)

    with engine.connect() as conn:
        ddl = conn.exec_driver_sql(
            "SELECT group_concat(sql) FROM sqlite_master WHERE name IN (?, ?)",
            (store.entity_days.name, store.sighting_days.name),
        ).scalar_one()
    assert ddl.count("WITHOUT ROWID") == 2
    assert (_entity_days(engine), _table(engine, store.sighting_days)) == tiles
    engine.dispose()


def _sightings(engine: Engine) -> list[tuple[object, ...]]:
    return _table(engine, store.sightings)


def _table(engine: Engine, table: Any) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(*table.primary_key.columns))
        return [tuple(row) for row in rows]


def _load_events(engine: Engine) -> dict[str, pd.DataFrame]:
    """The tiny history's users, orders and refund requests, stored; the tables."""
    tables = _normalised()
    with engine.begin() as conn:
        for name in ("users", "orders", "refund_requests"):
            store.upsert(conn, name, tables[name])
    return tables


def test_sightings_follow_corrections_and_match_a_rebuild(engine: Engine) -> None:
    tables = _load_events(engine)
    before = _sightings(engine)
    # A corrected order moves to another device; the old sighting must go.
    orders = tables["orders"].copy()
    orders.loc[0, "device_id"] = "d-corrected"
    with engine.begin() as conn:
        store.upsert(conn, "orders", orders)
    after = _sightings(engine)
    with engine.begin() as conn:
        store.refresh_sightings(conn, None)

    assert after == _sightings(engine)
    assert after != before
    assert any(row[:2] == ("device_id", "d-corrected") for row in after)
    assert _tiles_of(after) == _table(engine, store.sighting_days)


def _tiles_of(sightings: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    """``sighting_days`` as it should be for these sightings, counted here in Python."""
    tiles: dict[tuple[object, ...], list[int]] = {}
    for kind, entity, _user, first_seen, registered in sightings:
        tile = tiles.setdefault((kind, entity, int(first_seen) // store.TILE_US), [0, 0])
        tile[0], tile[1] = tile[0] + 1, max(tile[1], int(registered))
    return sorted((*key, users, newest) for key, (users, newest) in tiles.items())


def test_sighting_days_follow_decisions_written_out_of_order(engine: Engine) -> None:
    tables = _load_events(engine)
    user = tables["users"].iloc[0]
    late, early = (int(pd.Timestamp(day).value // 1000) for day in ("2026-01-20", "2026-01-10"))
    with engine.begin() as conn:
        for request_id, at in (("new-ip", late), ("earlier-on-it", early)):
            row = {
                "request_id": request_id,
                "order_id": "o1",
                "user_id": user["user_id"],
                "requested_at": at,
                "amount": 100,
                "reason": "unused",
                "days_used_claimed": None,
                "device_id": None,
                "ip": "10.5.5.5",
                "channel": "app",
            }
            registered = int(user["registered_at"])
            tiles = store.TileCounts()
            store.insert_request(
                conn,
                row,
                order={"seller_id": "s1", "payment_account": "pa1", "product_id": None},
                registered_at=registered,
                tiles=tiles,
            )
            store.count_in_tiles(conn, tiles)
    written = _table(engine, store.sighting_days)
    with engine.begin() as conn:
        store.refresh_sighting_days(conn, None)

    assert written == _table(engine, store.sighting_days) == _tiles_of(_sightings(engine))
    on_new_ip = [row for row in written if row[:2] == ("ip", "10.5.5.5")]
    assert [row[2:4] for row in on_new_ip] == [(early // store.TILE_US, 1)]


def _entity_days(engine: Engine) -> list[tuple[object, ...]]:
    return _table(engine, store.entity_days)


def test_entity_days_follow_corrections_and_match_a_rebuild(engine: Engine) -> None:
    tables = _load_events(engine)
    with engine.begin() as conn:
        store.upsert(conn, "labels", tables["labels"])
    before = _entity_days(engine)
    # A corrected order moves to another seller and another day; its refund requests'
    # counts move with it, and a corrected request moves to another day and reason.
    orders = tables["orders"].copy()
    moved = orders.loc[0, "order_id"]
    orders.loc[0, "seller_id"] = "s-corrected"
    orders.loc[0, "paid_at"] = orders.loc[0, "paid_at"] - 3 * store.TILE_US
    requests = tables["refund_requests"].copy()
    requests.loc[len(requests) - 1, "reason"] = "other"
    requests.loc[len(requests) - 1, "requested_at"] += store.TILE_US
    labels = tables["labels"].copy()
    labels["is_abuse"] = False  # every verdict cleared: the abuse tiles empty
    with engine.begin() as conn:
        store.upsert(conn, "orders", orders)
        store.upsert(conn, "refund_requests", requests)
        store.upsert(conn, "labels", labels)
    after = _entity_days(engine)
    with engine.begin() as conn:
        store.refresh_entity_days(conn, None)

    assert after == _entity_days(engine)
    assert after != before
    sellers = [row for row in after if row[0] == "seller_id"]
    assert ("orders", "s-corrected") in {(row[2], row[1]) for row in sellers}
    asked_on_moved = (requests["order_id"] == moved).sum()
    on_corrected = sum(
        int(row[5]) for row in sellers if row[2] == "refund_requests" and row[1] == "s-corrected"
    )
    assert on_corrected == asked_on_moved
    sold = orders["seller_id"].notna().sum()  # o4 has no seller
    assert sum(int(row[5]) for row in sellers if row[2] == "orders") == sold
    assert not [row for row in after if row[2] == "abuse"]
    judged = tables["labels"]["request_id"].nunique()
    assert sum(int(row[5]) for row in after if row[2] == "verdicts" and row[0] == "ip") == judged


def test_one_read_before_a_decision_tells_replay_misfit_or_context(
    database_url: str, tiny_dir: Path
) -> None:
    ingest(tiny_dir, database_url)
    engine = store.open_store(database_url)
    at = int(pd.Timestamp("2026-01-09T00:00:00Z").value // 1000)

    def read(request_id: str, order_id: str, user_id: str, requested_at: int = at) -> Any:
        row = {
            "request_id": request_id,
            "order_id": order_id,
            "user_id": user_id,
            "requested_at": requested_at,
        }
        with store.reading(engine) as conn:
            return store.decision_context(conn, row)

    # A new request on o1, which already has r1 (dated after it): the context.
    found = read("r9", "o1", "u1")
    assert isinstance(found, store.RequestContext)
    assert (found.order["order_id"], found.order["amount"], found.user["user_id"]) == (
        "o1",
        3000,
        "u1",
    )
    assert found.rate is None  # the history has no rates table
    assert [(o.request_id, o.amount) for o in found.others] == [("r1", 2200)]
    r1_at = int(pd.Timestamp("2026-01-10T10:00:00Z").value // 1000)
    assert found.newest == r1_at  # u1's and o1's newest stored request

    # A new buyer paying with u1's first payment account: its newest request is r1's.
    tables = tiny_tables()
    user = tables["users"].iloc[[0]].assign(user_id="u3")
    order = tables["orders"].iloc[[0]].assign(order_id="o5", user_id="u3", device_id=None, ip=None)
    with engine.begin() as conn:
        store.upsert(conn, "users", dataset.normalise("users", user))
        store.upsert(conn, "orders", dataset.normalise("orders", order))
    shared = read("r9", "o5", "u3")
    assert isinstance(shared, store.RequestContext)
    assert (shared.order["payment_account"], shared.others) == ("pa1", ())
    assert shared.newest == r1_at
    assert read("r9", "o2", "u1", at).newest == r1_at  # and the user's, on another order

    # What does not fit the history, and why.
    assert read("r9", "o1", "nobody").code == "UNKNOWN_USER"
    assert read("r9", "o404", "u1").code == "UNKNOWN_ORDER"
    assert read("r9", "o3", "u1").code == "ORDER_OF_ANOTHER_USER"
    assert read("r9", "o4", "u2", at - 2 * DAY).code == "REQUESTED_BEFORE_PAYMENT"

    # A decision stored under the id: the replay, whatever else the request says.
    decision = {c: None for c in store.DECISION_COLUMNS}
    decision.update(
        request_id="r9",
        decision="review",
        approved_amount=0,
        reasons="[]",
        decided_at=at,
        policy_version="p1",
        feature_version="3",
        request_hash="h",
    )
    with engine.begin() as conn:
        assert store.insert_decision(conn, decision)
    replay = read("r9", "o404", "nobody")
    assert isinstance(replay, store.Replay)
    assert replay.decision["decision"] == "review"
    engine.dispose()
