"""Online features equal offline features, request by request, on both backends."""

from __future__ import annotations

from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete

from features.catalog import CATALOG
from features.history import History
from features.offline import build_features
from features.online import online_features
from riskmodel import dataset, store

from .conftest import tiny_tables
from .histories import histories
from .test_features_offline import assert_features_equal


def _load(engine: Engine, history: History) -> None:
    with engine.begin() as conn:
        for table in reversed(list(store.metadata.sorted_tables)):
            if table.name != "schema_info":
                conn.execute(delete(table))
        for name in ("rates", "users", "orders", "usage", "refund_requests", "labels", "decisions"):
            frame = getattr(history, name)
            if len(frame):
                store.upsert(conn, name, frame)


def _online(engine: Engine, history: History) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for request in history.refund_requests.to_dict("records"):
            rows.append(online_features(conn, request))
    frame = pd.DataFrame(rows, columns=list(CATALOG))
    frame.index = pd.Index(history.refund_requests["request_id"].tolist(), name="request_id")
    return frame


def test_tiny_history_online_equals_offline(engine: Engine) -> None:
    history = History.from_tables({n: dataset.normalise(n, t) for n, t in tiny_tables().items()})
    _load(engine, history)

    assert_features_equal(_online(engine, history), build_features(history))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories())
def test_random_histories_online_equals_offline(engine: Engine, history: History) -> None:
    _load(engine, history)

    assert_features_equal(_online(engine, history), build_features(history))


def _scrambled(frame: pd.DataFrame) -> pd.DataFrame:
    """A first, wrong version of the rows: devices, IPs and accounts rotated a row."""
    wrong = frame.copy()
    for column in ("device_id", "ip", "payment_account"):
        if column in wrong.columns:
            wrong[column] = wrong[column].shift(1).where(wrong[column].shift(1).notna(), None)
    return wrong


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories(), split=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_history_written_piecemeal_and_corrected_gives_the_same_features(
    engine: Engine, history: History, split: float, seed: int
) -> None:
    """What the service sees: events arrive in batches, in any order across tables, and
    corrections rewrite rows. The store's derived data must end where a clean load does."""
    _load(engine, History.empty())
    corrected = ("orders", "refund_requests")
    with engine.begin() as conn:
        for part in range(2):
            for name in ("labels", "users", "orders", "refund_requests", "usage", "rates"):
                frame = getattr(history, name)
                first = frame.sample(frac=split, random_state=seed)
                chosen = first if part == 0 else frame.drop(first.index)
                if name in corrected and part == 0:
                    chosen = _scrambled(chosen)
                if len(chosen):
                    store.upsert(conn, name, chosen)
        for name in (*corrected, "decisions"):
            if len(getattr(history, name)):
                store.upsert(conn, name, getattr(history, name))

    assert_features_equal(_online(engine, history), build_features(history))


def test_a_category_outside_the_declared_levels_is_unknown_on_both_engines(
    engine: Engine,
) -> None:
    tables = tiny_tables()
    tables["orders"].loc[0, "payment_method"] = "gift_card"  # not a level the catalogue knows
    history = History.from_tables({n: dataset.normalise(n, t) for n, t in tables.items()})
    _load(engine, history)

    offline = build_features(history)
    online = _online(engine, history)

    assert pd.isna(offline.loc["r1", "payment_method"])
    assert pd.isna(online.loc["r1", "payment_method"])
    assert_features_equal(online, offline)
