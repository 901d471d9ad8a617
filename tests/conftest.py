"""Shared fixtures: the two real database backends, a tiny, readable dataset, and a local
Dask cluster."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from riskmodel import store


@pytest.fixture(scope="session")
def dask_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A client of a local Dask cluster of two single-threaded worker processes, started
    once for the session: processes, not threads, since the kernels are pandas and numpy
    work that holds the GIL. The HTTP port is any free one: 8787 may be taken. Its scratch
    space is the test run's own: at start Dask sweeps its default one of every earlier
    cluster's leftovers, which can take seconds."""
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            local_directory=tmp_path_factory.mktemp("dask"),
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


POSTGRES_URL = os.environ.get(
    "RISKMODEL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/riskmodel_test"
)


def _postgres_ready() -> str | None:
    """Create the test database if needed; the reason it cannot be used, or None."""
    try:
        store.create_database(POSTGRES_URL)
    except OperationalError as exc:
        url = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        return f"PostgreSQL at {url} unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_url() -> str:
    reason = _postgres_ready()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store on each backend: a fresh SQLite file, or the test PostgreSQL emptied."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    engine = store.open_store(url, create=False)
    store.drop_everything(engine)
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = store.open_store(database_url)
    yield engine
    engine.dispose()


def tiny_tables() -> dict[str, pd.DataFrame]:
    """A dataset small enough to read: two users, four orders, three requests, two labels."""
    return {
        "users": pd.DataFrame(
            {
                "user_id": ["u1", "u2"],
                "registered_at": ["2025-12-01T08:00:00Z", "2026-01-02T09:30:00Z"],
                "phone_verified": ["true", "false"],
            }
        ),
        "orders": pd.DataFrame(
            {
                "order_id": ["o1", "o2", "o3", "o4"],
                "user_id": ["u1", "u1", "u2", "u2"],
                "product_type": ["membership", "card_code", "game_currency", "service"],
                "amount": ["30.00", "50", "6.48", "120.5"],
                "currency": ["CNY", "CNY", "CNY", "CNY"],
                "paid_at": [
                    "2026-01-05T10:00:00Z",
                    "2026-01-06T11:00:00Z",
                    "2026-01-07T12:00:00Z",
                    "2026-01-08T13:00:00Z",
                ],
                "seller_id": ["s1", "s2", "s2", None],
                "payment_method": ["alipay", "bank_card", "wechat_pay", "balance"],
                "payment_account": ["pa1", "pa2", "pa3", "pa3"],
                "device_id": ["d1", "d1", "d2", None],
                "ip": ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.2"],
                "delivered_at": ["2026-01-05T10:00:05Z", "2026-01-06T11:00:03Z", None, None],
                "redeemed_at": [None, "2026-01-06T11:05:00Z", None, None],
                "service_days": ["30", None, None, None],
                "campaign": ["new-year", None, None, "spring"],
            }
        ),
        "usage": pd.DataFrame(
            {
                "order_id": ["o1", "o1", "o1"],
                "used_at": ["2026-01-05T20:00:00Z", "2026-01-06T20:00:00Z", "2026-01-08T20:00:00Z"],
            }
        ),
        "refund_requests": pd.DataFrame(
            {
                "request_id": ["r1", "r2", "r3"],
                "order_id": ["o1", "o2", "o3"],
                "user_id": ["u1", "u1", "u2"],
                "requested_at": [
                    "2026-01-10T10:00:00Z",
                    "2026-01-06T12:00:00Z",
                    "2026-01-08T12:00:00Z",
                ],
                "amount": ["22.00", "50.00", "6.48"],
                "reason": ["partial_use", "invalid_code", "not_delivered"],
                "days_used_claimed": ["2", None, None],
                "device_id": ["d1", "d1", "d2"],
                "ip": ["10.0.0.1", "10.0.0.1", "10.0.0.2"],
                "channel": ["app", "app", "web"],
            }
        ),
        "labels": pd.DataFrame(
            {
                "request_id": ["r2", "r2"],
                "is_abuse": ["true", "true"],
                "labeled_at": ["2026-01-09T00:00:00Z", "2026-02-20T00:00:00Z"],
                "source": ["issuer_report", "chargeback"],
            }
        ),
    }


def write_tables(directory: Path, tables: dict[str, pd.DataFrame], fmt: str = "csv") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        if fmt == "csv":
            frame.to_csv(directory / f"{name}.csv", index=False)
        else:
            frame.to_parquet(directory / f"{name}.parquet", index=False)
    return directory


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_tables(tmp_path / "tiny", tiny_tables())
