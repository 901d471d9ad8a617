"""Load a dataset directory into the event store: validated whole, then written in one transaction.

Every table file is validated against the contract (``riskmodel.dataset``), then the
tables are checked against each other and against what the store already holds: every
reference must point at a row (an order's user, a usage day's membership, a refund
request's order of the same user, a label's request), and amounts in several currencies
need a rate each. Only what breaks the history's integrity is refused; what is odd but
true (a code redeemed before payment, a refund requested before the payment cleared, a
verdict dated before its request) is kept. Only then is anything written, and all of it
in one transaction: a bad row leaves the store exactly as it was. Rows are upserted by
primary key, so loading the same directory twice changes nothing::

    >>> from riskmodel.ingest import ingest
    >>> report = ingest("data/sample", "sqlite:///data/riskmodel.db")   # doctest: +SKIP
    >>> report.rows_read["orders"]                                      # doctest: +SKIP
    41327
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select

from riskmodel import dataset, store
from riskmodel.domain import ProductType
from riskmodel.errors import DatasetError

__all__ = ["IngestReport", "ingest", "ingest_tables", "validate_references"]

# Parents before children, so a reader never sees a request whose order is missing.
_LOAD_ORDER = ("rates", "users", "orders", "usage", "refund_requests", "labels")


@dataclass(frozen=True)
class IngestReport:
    rows_read: dict[str, int]
    rows_written: dict[str, int]
    seconds: float
    ignored_files: tuple[str, ...] = field(default=())

    @property
    def total_read(self) -> int:
        return sum(self.rows_read.values())

    @property
    def rows_per_second(self) -> float:
        return self.total_read / self.seconds if self.seconds > 0 else float("inf")


def ingest(directory: str | Path, database_url: str | None = None) -> IngestReport:
    """Validate ``directory`` as a whole and load it into the store at ``database_url``."""
    started = time.perf_counter()
    directory = Path(directory)
    tables = dataset.read_dataset(directory)
    known = {f"{name}{suffix}" for name in dataset.TABLES for suffix in (".parquet", ".csv")}
    ignored = tuple(sorted(p.name for p in directory.iterdir() if p.name not in known))
    engine = store.open_store(database_url)
    try:
        report = ingest_tables(engine, tables)
    finally:
        engine.dispose()
    return IngestReport(
        rows_read=report.rows_read,
        rows_written=report.rows_written,
        seconds=time.perf_counter() - started,
        ignored_files=ignored,
    )


def ingest_tables(engine: Engine, tables: Mapping[str, pd.DataFrame]) -> IngestReport:
    """Load already normalised tables (``dataset.read_dataset`` output) in one transaction."""
    started = time.perf_counter()
    written: dict[str, int] = {}
    with engine.begin() as conn:
        validate_references(conn, tables)
        stale = store.Stale()
        for name in _LOAD_ORDER:
            if name in tables:
                written[name] = store.upsert(conn, name, tables[name], stale)
        store.refresh_derived(conn, stale)
        store.analyze(conn, [name for name, rows in written.items() if rows])
    store.vacuum(engine, [name for name, rows in written.items() if rows])
    return IngestReport(
        rows_read=dataset.dataset_counts(tables),
        rows_written=written,
        seconds=time.perf_counter() - started,
    )


def validate_references(conn: Connection, tables: Mapping[str, pd.DataFrame]) -> None:
    """Check the rules between tables, looking in the store for rows the load lacks."""
    users = _known(conn, tables, "users", "user_id", ["user_id"], tables.get("orders"))
    if "orders" in tables:
        _require_known(tables["orders"], "orders", "user_id", users, "user_id", "user")
    orders = _known(
        conn,
        tables,
        "orders",
        "order_id",
        ["order_id", "user_id", "product_type"],
        *(tables.get(t) for t in ("usage", "refund_requests")),
    )
    if "usage" in tables:
        _check_usage(tables["usage"], orders)
    requests = _known(
        conn,
        tables,
        "refund_requests",
        "request_id",
        ["request_id"],
        tables.get("labels"),
    )
    if "refund_requests" in tables:
        _check_requests(tables["refund_requests"], orders)
    if "labels" in tables:
        _check_labels(tables["labels"], requests)
    if "orders" in tables or "rates" in tables:
        _check_currencies(conn, tables)


def _known(
    conn: Connection,
    tables: Mapping[str, pd.DataFrame],
    table: str,
    key: str,
    columns: list[str],
    *referrers: pd.DataFrame | None,
) -> pd.DataFrame:
    """Rows of ``table`` that ``referrers`` may point at: those loaded now, then stored ones."""
    loaded = tables[table][columns] if table in tables else pd.DataFrame(columns=columns)
    wanted: set[object] = set()
    for frame in referrers:
        if frame is not None and key in frame.columns:
            wanted.update(frame[key].unique().tolist())
    wanted.difference_update(loaded[key].tolist())
    if not wanted:
        return loaded.reset_index(drop=True)
    stored = store.fetch_by_key(conn, table, key, wanted, columns)
    if stored.empty:
        return loaded.reset_index(drop=True)
    return pd.concat([loaded, stored], ignore_index=True)


def _fail(table: str, frame_row: int, column: str, problem: str) -> DatasetError:
    return DatasetError(table, problem, row=frame_row + 1, column=column)


def _first(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask, dtype=bool))[0])


def _require_known(
    frame: pd.DataFrame, table: str, column: str, known: pd.DataFrame, key: str, what: str
) -> None:
    unknown = ~frame[column].isin(known[key]).to_numpy()
    if unknown.any():
        i = _first(unknown)
        raise _fail(table, i, column, f"unknown {what} {frame[column].iloc[i]!r}")


def _attach(frame: pd.DataFrame, parents: pd.DataFrame, key: str) -> pd.DataFrame:
    """``frame`` with its parent's columns (suffix ``_parent``), row order kept."""
    renamed = parents.rename(columns={c: f"{c}_parent" for c in parents.columns if c != key})
    return frame.merge(renamed, on=key, how="left", validate="many_to_one")


def _check_usage(usage: pd.DataFrame, orders: pd.DataFrame) -> None:
    _require_known(usage, "usage", "order_id", orders, "order_id", "order")
    joined = _attach(usage, orders, "order_id")
    not_membership = (joined["product_type_parent"] != ProductType.MEMBERSHIP.value).to_numpy()
    if not_membership.any():
        i = _first(not_membership)
        kind = joined["product_type_parent"].iloc[i]
        raise _fail("usage", i, "order_id", f"order is a {kind}, not a membership")


def _check_requests(requests: pd.DataFrame, orders: pd.DataFrame) -> None:
    table = "refund_requests"
    _require_known(requests, table, "order_id", orders, "order_id", "order")
    joined = _attach(requests, orders, "order_id")
    other_user = (joined["user_id"] != joined["user_id_parent"]).to_numpy()
    if other_user.any():
        i = _first(other_user)
        raise _fail(
            table,
            i,
            "user_id",
            f"{joined['user_id'].iloc[i]!r} is not the user of order "
            f"{joined['order_id'].iloc[i]!r} ({joined['user_id_parent'].iloc[i]!r})",
        )


def _check_labels(labels: pd.DataFrame, requests: pd.DataFrame) -> None:
    _require_known(labels, "labels", "request_id", requests, "request_id", "refund request")


def _check_currencies(conn: Connection, tables: Mapping[str, pd.DataFrame]) -> None:
    """Amounts in several currencies are only ever added up after conversion: once the
    history holds more than one currency, every currency needs a rate."""
    rates = tables.get("rates")
    stored_rates = conn.execute(select(store.EVENT_TABLES["rates"].c.currency)).scalars().all()
    rated = set(stored_rates) | (set() if rates is None else set(rates["currency"]))
    orders = tables.get("orders")
    if rated:
        if orders is not None:
            currency = orders["currency"]
            lacking = (currency.notna() & ~currency.isin(rated)).to_numpy(dtype=bool)
            if lacking.any():
                i = _first(lacking)
                raise _fail(
                    "orders", i, "currency", f"no rate for {currency.iloc[i]!r} in the rates table"
                )
        if rates is not None:
            currencies = store.EVENT_TABLES["orders"].c.currency
            used = conn.execute(
                select(currencies).where(currencies.is_not(None)).distinct()
            ).scalars()
            unrated = sorted(set(used) - rated)
            if unrated:
                raise DatasetError(
                    "rates", f"no rate for {unrated[0]!r}, the currency of stored orders"
                )
        return
    if orders is None:
        return
    stored = conn.execute(
        select(store.EVENT_TABLES["orders"].c.currency)
        .where(store.EVENT_TABLES["orders"].c.currency.is_not(None))
        .limit(1)
    ).scalar_one_or_none()
    currency = orders["currency"]
    first = stored if stored is not None else next(iter(currency.dropna()), None)
    other = (currency.notna() & (currency != first)).to_numpy(dtype=bool)
    if other.any():
        i = _first(other)
        raise _fail(
            "orders",
            i,
            "currency",
            f"{currency.iloc[i]!r} differs from {first!r} of other orders, and no rates table "
            "converts between them: add a rates file (currency, rate)",
        )
