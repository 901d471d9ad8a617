"""A slow, obviously correct feature computation, one request and one feature at a time.

It reads the definitions' words literally ("events of the entity strictly before the
request and inside the window") with plain pandas filters, so that the fast engines can
be checked against it. It shares only the Context/Derived formulas with them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import CATALOG
from features.history import History, request_frame
from features.spec import HOUR, Agg, Aggregate, Context, Derived, Entity, Source


def _entity_of_request(row: dict[str, Any], entity: Entity) -> Any:
    if entity in (Entity.PAYMENT_ACCOUNT, Entity.SELLER):
        return row[f"order_{entity.value}"]
    return row[entity.value]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _refunds(history: History) -> pd.DataFrame:
    orders = history.orders[["order_id", "payment_account", "seller_id"]]
    return history.refund_requests.merge(orders, on="order_id", how="left")


def _source_rows(history: History, source: Source) -> pd.DataFrame:
    """Every row of the source, with ``time`` (and ``value`` for money) columns."""
    if source is Source.ORDERS:
        rows = history.orders.assign(time=history.orders["paid_at"], value=history.orders["amount"])
    elif source is Source.REFUNDS:
        refunds = _refunds(history)
        rows = refunds.assign(time=refunds["requested_at"], value=refunds["amount"])
    elif source is Source.USAGE:
        rows = history.usage.assign(time=history.usage["used_at"])
    elif source is Source.DECISIONS:
        users = history.refund_requests[["request_id", "user_id"]]
        rows = history.decisions.merge(users, on="request_id")
        rows = rows.assign(time=rows["decided_at"])
    else:
        raise AssertionError(source)
    return rows


def _events(rows: pd.DataFrame, entity: Entity, key: Any, t: int) -> pd.DataFrame:
    """The rows for ``key`` known strictly before ``t``."""
    rows = rows[rows[entity.value].notna()]
    return rows[(rows[entity.value] == key) & (rows["time"] < t)]


def _confirmed_abuse(
    history: History, refunds: pd.DataFrame, entity: Entity, key: Any, t: int
) -> float:
    """Requests of ``key`` whose latest label with labeled_at < t says abuse."""
    mine = refunds[refunds[entity.value].notna() & (refunds[entity.value] == key)]
    count = 0
    for request_id in mine["request_id"]:
        labels = history.labels[
            (history.labels["request_id"] == request_id) & (history.labels["labeled_at"] < t)
        ]
        if len(labels) and bool(labels.sort_values("labeled_at")["is_abuse"].iloc[-1]):
            count += 1
    return float(count)


def _users_seen(
    history: History, refunds: pd.DataFrame, entity: Entity, key: Any, t: int
) -> set[Any]:
    orders = history.orders
    seen = set(orders[(orders[entity.value] == key) & (orders["paid_at"] < t)]["user_id"])
    if entity.value in refunds.columns:
        hit = refunds[(refunds[entity.value] == key) & (refunds["requested_at"] < t)]
        seen |= set(hit["user_id"])
    return seen


def _aggregate(
    history: History,
    sources: dict[Source, pd.DataFrame],
    feature: Aggregate,
    row: dict[str, Any],
) -> float:
    key = _entity_of_request(row, feature.entity)
    if _missing(key):
        return math.nan
    t = int(row["requested_at"])
    refunds = sources[Source.REFUNDS]
    if feature.source is Source.ABUSE:
        return _confirmed_abuse(history, refunds, feature.entity, key, t)
    if feature.source is Source.SIGHTINGS:
        users = _users_seen(history, refunds, feature.entity, key, t)
        registered = history.users.set_index("user_id")["registered_at"]
        known = [int(registered[u]) for u in users if u in registered.index]
        if feature.agg is Agg.COUNT:
            return float(len(known))
        return float(max(known)) if known else math.nan
    events = _events(sources[feature.source], feature.entity, key, t)
    if feature.window is not None:
        events = events[events["time"] >= t - feature.window]
    if feature.where is not None:
        column, value = feature.where
        events = events[events[column] == value]
    if feature.agg is Agg.COUNT:
        return float(len(events))
    if feature.agg is Agg.SUM:
        return float(events["value"].sum()) / 100
    if feature.agg is Agg.HOURS_SINCE_LAST:
        return (t - int(events["time"].max())) / HOUR if len(events) else math.nan
    if feature.agg is Agg.DISTINCT:
        assert feature.of is not None
        return float(events[feature.of].dropna().nunique())
    raise AssertionError(feature.agg)


def oracle_features(history: History, requests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every catalogue feature of every request, computed the slow way."""
    if requests is None:
        requests = history.refund_requests
    base = request_frame(requests, history)
    sources = {
        s: _source_rows(history, s)
        for s in (Source.ORDERS, Source.REFUNDS, Source.USAGE, Source.DECISIONS)
    }
    out: list[dict[str, Any]] = []
    for i in range(len(requests)):
        row = {name: values[i] for name, values in base.items()}
        columns = {name: values[i : i + 1] for name, values in base.items()}
        for name, feature in CATALOG.items():
            if isinstance(feature, Aggregate):
                value = _aggregate(history, sources, feature, row)
                row[name] = value
                columns[name] = np.array([value])
        for name, feature in CATALOG.items():
            if isinstance(feature, Context | Derived):
                computed = feature.compute(columns)
                columns[name] = computed
                row[name] = computed[0]
        out.append({name: row[name] for name in CATALOG})
    frame = pd.DataFrame(out, columns=list(CATALOG))
    frame.index = pd.Index(requests["request_id"].to_numpy(dtype=object), name="request_id")
    return frame
