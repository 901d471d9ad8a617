"""Online features equal offline features, request by request, on both backends."""

from __future__ import annotations

from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
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
        for name in ("users", "orders", "usage", "refund_requests", "labels", "decisions"):
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
