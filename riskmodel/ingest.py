"""Load a dataset directory into the event store: validated whole, then written in one transaction.

Every table file is validated against the contract (``riskmodel.dataset``), then the
tables are checked against each other and against what the store already holds (a
refund request's order must exist, be the same user's and be paid before the request,
...). Only then is anything written, and all of it in one transaction: a bad row leaves
the store exactly as it was. Rows are upserted by primary key, so loading the same
directory twice changes nothing::

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
from sqlalchemy import Connection, Engine

from riskmodel import dataset, store
from riskmodel.domain import ProductType
from riskmodel.errors import DatasetError

__all__ = ["IngestReport", "ingest", "ingest_tables", "validate_references"]

_DAY_US = 86_400_000_000
# Parents before children, so a reader never sees a request whose order is missing.
_LOAD_ORDER = ("users", "orders", "usage", "refund_requests", "labels")


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
        ["order_id", "user_id", "product_type", "paid_at", "service_days"],
        *(tables.get(t) for t in ("usage", "refund_requests")),
    )
    if "usage" in tables:
        _check_usage(tables["usage"], orders)
    requests = _known(
        conn,
        tables,
        "refund_requests",
        "request_id",
        ["request_id", "requested_at"],
        tables.get("labels"),
    )
    if "refund_requests" in tables:
        _check_requests(tables["refund_requests"], orders)
    if "labels" in tables:
        _check_labels(tables["labels"], requests)


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
    used = joined["used_at"].to_numpy(dtype="int64")
    paid = joined["paid_at_parent"].to_numpy(dtype="int64")
    before = used < paid
    if before.any():
        raise _fail("usage", _first(before), "used_at", "used_at is before the order's paid_at")
    days = joined["service_days_parent"].to_numpy(dtype="int64", na_value=0)
    after = used >= paid + days * _DAY_US
    if after.any():
        raise _fail("usage", _first(after), "used_at", "used_at is after the service period")
    per_order = usage.groupby("order_id")["used_at"].transform("size").to_numpy()
    too_many = per_order > days
    if too_many.any():
        i = _first(too_many)
        raise _fail(
            "usage", i, "order_id", f"{per_order[i]} usage days for a {days[i]}-day membership"
        )


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
    requested = joined["requested_at"].to_numpy(dtype="int64")
    early = requested < joined["paid_at_parent"].to_numpy(dtype="int64")
    if early.any():
        raise _fail(table, _first(early), "requested_at", "requested_at is before paid_at")


def _check_labels(labels: pd.DataFrame, requests: pd.DataFrame) -> None:
    _require_known(labels, "labels", "request_id", requests, "request_id", "refund request")
    joined = _attach(labels, requests, "request_id")
    labeled = joined["labeled_at"].to_numpy(dtype="int64")
    early = labeled < joined["requested_at_parent"].to_numpy(dtype="int64")
    if early.any():
        raise _fail(
            "labels", _first(early), "labeled_at", "labeled_at is before the request's requested_at"
        )
