"""Ingest: a dataset directory is loaded whole or not at all, on both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine

from riskmodel import dataset, store
from riskmodel.errors import DatasetError
from riskmodel.ingest import ingest

from .conftest import tiny_tables, write_tables


def _snapshot(engine: Engine) -> dict[str, pd.DataFrame]:
    return {name: store.read_table(engine, name) for name in store.EVENT_TABLES}


def _assert_same(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    for name in before:
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)


def test_loads_every_table_and_keeps_extra_columns(database_url: str, tiny_dir: Path) -> None:
    report = ingest(tiny_dir, database_url)

    assert report.rows_read == {
        "users": 2,
        "orders": 4,
        "usage": 3,
        "refund_requests": 3,
        "labels": 2,
    }
    assert report.rows_written == report.rows_read
    engine = store.open_store(database_url)
    orders = store.read_table(engine, "orders").set_index("order_id")
    assert orders.loc["o1", "amount"] == 3000
    assert orders.loc["o3", "amount"] == 648
    assert orders.loc["o1", "extra"] == '{"campaign": "new-year"}'
    assert orders.loc["o2", "extra"] is None
    engine.dispose()


def test_loading_twice_changes_nothing(database_url: str, tiny_dir: Path) -> None:
    ingest(tiny_dir, database_url)
    engine = store.open_store(database_url)
    before = _snapshot(engine)

    again = ingest(tiny_dir, database_url)

    assert sum(again.rows_written.values()) == 0
    _assert_same(before, _snapshot(engine))
    engine.dispose()


def test_a_corrected_row_replaces_the_stored_one(database_url: str, tmp_path: Path) -> None:
    tables = tiny_tables()
    ingest(write_tables(tmp_path / "a", tables), database_url)
    tables["orders"].loc[1, "amount"] = "45.00"

    report = ingest(write_tables(tmp_path / "b", tables), database_url)

    assert report.rows_written["orders"] == 1
    engine = store.open_store(database_url)
    orders = store.read_table(engine, "orders").set_index("order_id")
    assert orders.loc["o2", "amount"] == 4500
    engine.dispose()


def test_a_later_load_may_refer_to_stored_rows(database_url: str, tmp_path: Path) -> None:
    tables = tiny_tables()
    first = {k: v for k, v in tables.items() if k in ("users", "orders")}
    ingest(write_tables(tmp_path / "first", first), database_url)
    later = {k: v for k, v in tables.items() if k not in ("users", "orders")}

    report = ingest(write_tables(tmp_path / "later", later), database_url)

    assert report.rows_written == {"usage": 3, "refund_requests": 3, "labels": 2}


Spoil = Callable[[dict[str, pd.DataFrame]], None]


def _break(table: str, row: int, column: str, value: object) -> Spoil:
    def apply(tables: dict[str, pd.DataFrame]) -> None:
        tables[table].loc[row, column] = value

    return apply


def _rates(currencies: list[str], rates: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"currency": currencies, "rate": rates})


def _with_rates(currencies: list[str], rates: list[str], usd_order: int) -> Spoil:
    def apply(tables: dict[str, pd.DataFrame]) -> None:
        tables["rates"] = _rates(currencies, rates)
        tables["orders"].loc[usd_order, "currency"] = "USD"

    return apply


def _drop_column(table: str, column: str) -> Spoil:
    def apply(tables: dict[str, pd.DataFrame]) -> None:
        tables[table] = tables[table].drop(columns=[column])

    return apply


BAD_INPUTS = [
    pytest.param(
        _drop_column("orders", "paid_at"),
        "orders.csv: missing required column(s): paid_at",
        id="missing-column",
    ),
    pytest.param(
        _break("refund_requests", 1, "reason", "changed_mind"),
        "refund_requests.csv, row 2, column reason: 'changed_mind' is not one of: "
        "not_delivered, invalid_code, not_as_described, unused, partial_use, "
        "duplicate_charge, other",
        id="bad-enum",
    ),
    pytest.param(
        _break("orders", 2, "paid_at", "07/01/2026 12:00"),
        "orders.csv, row 3, column paid_at: '07/01/2026 12:00' is not an ISO 8601 timestamp",
        id="bad-timestamp",
    ),
    pytest.param(
        _break("orders", 3, "amount", "-120.50"),
        "orders.csv, row 4, column amount: amount '-120.50' is negative",
        id="negative-amount",
    ),
    pytest.param(
        _break("refund_requests", 2, "order_id", "o99"),
        "refund_requests, row 3, column order_id: unknown order 'o99'",
        id="unknown-order",
    ),
    pytest.param(
        _break("refund_requests", 2, "user_id", "u1"),
        "refund_requests, row 3, column user_id: 'u1' is not the user of order 'o3' ('u2')",
        id="someone-elses-order",
    ),
    pytest.param(
        _break("orders", 0, "user_id", "u9"),
        "orders, row 1, column user_id: unknown user 'u9'",
        id="unknown-user",
    ),
    pytest.param(
        _break("usage", 0, "order_id", "o2"),
        "usage, row 1, column order_id: order is a card_code, not a membership",
        id="usage-of-a-code",
    ),
    pytest.param(
        _break("labels", 0, "request_id", "r9"),
        "labels, row 1, column request_id: unknown refund request 'r9'",
        id="label-unknown-request",
    ),
    pytest.param(
        _break("labels", 1, "is_abuse", "maybe"),
        "labels.csv, row 2, column is_abuse: 'maybe' is not true or false",
        id="bad-flag",
    ),
    pytest.param(
        _break("refund_requests", 1, "amount", "0"),
        "refund_requests.csv, row 2, column amount: amount '0' is zero",
        id="zero-refund",
    ),
    pytest.param(
        _break("orders", 1, "currency", "USD"),
        "orders, row 2, column currency: 'USD' differs from 'CNY' of other orders, and no "
        "rates table converts between them: add a rates file (currency, rate)",
        id="two-currencies-without-rates",
    ),
    pytest.param(
        _with_rates(["CNY"], ["1"], usd_order=1),
        "orders, row 2, column currency: no rate for 'USD' in the rates table",
        id="currency-without-a-rate",
    ),
    pytest.param(
        _with_rates(["CNY", "USD"], ["1", "0"], usd_order=1),
        "rates.csv, row 2, column rate: rate '0' must be above 0.000001",
        id="zero-rate",
    ),
    pytest.param(
        _break("orders", 1, "order_id", "o1"),
        "orders.csv, row 2, column order_id: duplicate key (order_id='o1')",
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("spoil", "message"), BAD_INPUTS)
def test_bad_input_is_refused_and_the_store_is_unchanged(
    database_url: str,
    tmp_path: Path,
    spoil,
    message: str,
) -> None:
    # A first, good load, so that "unchanged" means more than "still empty".
    good = tiny_tables()
    good["users"].loc[2] = ["u3", "2026-01-01T00:00:00Z", "true"]
    ingest(write_tables(tmp_path / "good", {"users": good["users"]}), database_url)
    engine = store.open_store(database_url)
    before = _snapshot(engine)
    tables = tiny_tables()
    spoil(tables)

    with pytest.raises(DatasetError) as caught:
        ingest(write_tables(tmp_path / "bad", tables), database_url)

    assert str(caught.value) == message
    _assert_same(before, _snapshot(engine))
    engine.dispose()


# What a real export holds that is odd but true: each loads, and stays as it was given.
ODD_BUT_TRUE = [
    pytest.param(
        _break("orders", 1, "redeemed_at", "2026-01-03T00:00:00Z"), id="code-redeemed-before-sale"
    ),
    pytest.param(_break("orders", 1, "delivered_at", "2026-01-06T10:59:00Z"), id="delivered-early"),
    pytest.param(_break("orders", 0, "service_days", None), id="membership-of-unknown-length"),
    pytest.param(_break("usage", 2, "used_at", "2026-03-01T00:00:00Z"), id="used-after-period"),
    pytest.param(
        _break("refund_requests", 0, "requested_at", "2026-01-05T09:59:00Z"),
        id="requested-before-payment-cleared",
    ),
    pytest.param(
        _break("labels", 0, "labeled_at", "2026-01-06T00:00:00Z"), id="verdict-dated-before-request"
    ),
    pytest.param(_with_rates(["CNY", "USD"], ["1", "7.1"], usd_order=1), id="two-currencies"),
]


@pytest.mark.parametrize("oddity", ODD_BUT_TRUE)
def test_odd_but_true_rows_load_as_given(database_url: str, tmp_path: Path, oddity) -> None:
    tables = tiny_tables()
    oddity(tables)

    ingest(write_tables(tmp_path / "odd", tables), database_url)

    engine = store.open_store(database_url)
    expected = dataset.read_dataset(tmp_path / "odd")
    for name, frame in expected.items():
        stored = store.read_table(engine, name)
        key = list(dataset.TABLES[name].key)
        pd.testing.assert_frame_equal(
            stored.sort_values(key).reset_index(drop=True),
            frame.sort_values(key).reset_index(drop=True),
            check_dtype=False,
            obj=name,
        )
    engine.dispose()


def test_rates_added_later_must_cover_every_stored_currency(
    database_url: str, tmp_path: Path
) -> None:
    tables = tiny_tables()
    ingest(write_tables(tmp_path / "a", tables), database_url)

    with pytest.raises(DatasetError) as caught:
        ingest(write_tables(tmp_path / "b", {"rates": _rates(["USD"], ["7.1"])}), database_url)

    assert str(caught.value) == "rates: no rate for 'CNY', the currency of stored orders"


def test_parquet_and_csv_load_the_same_rows(tmp_path: Path) -> None:
    csv_url = f"sqlite:///{tmp_path / 'csv.db'}"
    parquet_url = f"sqlite:///{tmp_path / 'parquet.db'}"
    ingest(write_tables(tmp_path / "csv", tiny_tables(), "csv"), csv_url)
    ingest(write_tables(tmp_path / "pq", tiny_tables(), "parquet"), parquet_url)

    a, b = store.open_store(csv_url), store.open_store(parquet_url)
    _assert_same(_snapshot(a), _snapshot(b))
    a.dispose()
    b.dispose()


def test_files_that_are_not_tables_are_reported(tmp_path: Path, tiny_dir: Path) -> None:
    (tiny_dir / "ground_truth.parquet").write_bytes(b"")

    report = ingest(tiny_dir, f"sqlite:///{tmp_path / 's.db'}")

    assert report.ignored_files == ("ground_truth.parquet",)
