"""A slow, obviously correct feature computation, one request and one feature at a time.

It reads the definitions' words literally ("events of the entity strictly before the
request, from the start of the day ``w`` days before the request's day") with plain pandas
filters, so that the fast engines can be checked against it. It shares only the
Context/Derived formulas and the currency conversion with them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import CATALOG
from features.history import History, base_amounts, rates_of, request_frame
from features.spec import Agg, Aggregate, Computed, Entity, Source
from riskmodel.units import DAY, HOUR


def _entity_of_request(row: dict[str, Any], entity: Entity) -> Any:
    if entity in (Entity.PAYMENT_ACCOUNT, Entity.SELLER, Entity.PRODUCT):
        return row[f"order_{entity.value}"]
    return row[entity.value]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _refunds(history: History) -> pd.DataFrame:
    orders = history.orders[["order_id", "payment_account", "seller_id", "product_id", "currency"]]
    refunds = history.refund_requests.merge(orders, on="order_id", how="left")
    amount = pd.to_numeric(refunds["amount"]).to_numpy(dtype=float)
    refunds["base"] = base_amounts(amount, rates_of(history, refunds["currency"]))
    return refunds


def _later(first: pd.Series, second: pd.Series) -> list[int]:
    return [max(int(a), int(b)) for a, b in zip(first, second, strict=True)]


def _source_rows(history: History, source: Source) -> pd.DataFrame:
    """Every row of the source, with ``time`` (and ``value`` for money) columns."""
    if source is Source.ORDERS:
        orders = history.orders
        amount = pd.to_numeric(orders["amount"]).to_numpy(dtype=float)
        base = base_amounts(amount, rates_of(history, orders["currency"]))
        rows = orders.assign(time=orders["paid_at"], value=base)
    elif source is Source.REFUNDS:
        refunds = _refunds(history)
        rows = refunds.assign(time=refunds["requested_at"], value=refunds["base"])
    elif source is Source.USAGE:
        rows = history.usage.assign(time=history.usage["used_at"])
    elif source is Source.OUTCOMES:
        refunds = _refunds(history)
        answered = refunds[refunds["paid_amount"].notna() & refunds["resolved_at"].notna()]
        # What the request came to, from when it was known (not before the request).
        rows = answered.assign(
            time=_later(answered["resolved_at"], answered["requested_at"]),
            amount=answered["paid_amount"],
            outcome=["paid" if int(p) > 0 else "refused" for p in answered["paid_amount"]],
        )
    elif source is Source.DECISIONS:
        keys = ["request_id", *(e.value for e in Entity), "requested_at"]
        rows = history.decisions.merge(_refunds(history)[keys], on="request_id")
        # A decision of a request counts from no earlier than the request.
        rows = rows.assign(
            time=_later(rows["decided_at"], rows["requested_at"]),
            amount=rows["approved_amount"],
        )
    else:
        raise AssertionError(source)
    return rows


def _start(t: int, window: int | None) -> float:
    """The window's first instant: the start of t's UTC day, ``window`` earlier."""
    if window is None:
        return -math.inf
    return (t // DAY) * DAY - window


Timeline = dict[Any, tuple[list[int], list[bool]]]


def _timelines(history: History) -> Timeline:
    """Each request's verdicts in order: (effective times, is_abuse).

    A verdict counts from the later of its own time and its request's.
    """
    requested = dict(
        zip(
            history.refund_requests["request_id"],
            history.refund_requests["requested_at"],
            strict=True,
        )
    )
    out: Timeline = {}
    labels = history.labels.sort_values("labeled_at", kind="stable")
    for request_id, at, verdict in zip(
        labels["request_id"], labels["labeled_at"], labels["is_abuse"], strict=True
    ):
        times, verdicts = out.setdefault(request_id, ([], []))
        times.append(max(int(at), int(requested[request_id])))
        verdicts.append(bool(verdict))
    return out


def _verdicts(timeline: Timeline, request_id: Any, t: int, start: float) -> tuple[int, int]:
    """(change in "abuse", 1 if first judged) by verdicts in [start, t) on one request."""
    times, verdicts = timeline.get(request_id, ([], []))

    def abuse_known_before(moment: float) -> int:
        known = [v for at, v in zip(times, verdicts, strict=True) if at < moment]
        return int(bool(known) and known[-1])

    change = abuse_known_before(t) - abuse_known_before(start)
    first = min(times) if times else None
    judged = int(first is not None and start <= first < t)
    return change, judged


def _judged(
    timeline: Timeline, refunds: pd.DataFrame, feature: Aggregate, key: Any, t: int
) -> float:
    mine = refunds[refunds[feature.entity.value].notna() & (refunds[feature.entity.value] == key)]
    start = _start(t, feature.window)
    total = 0
    for request_id in mine["request_id"]:
        change, judged = _verdicts(timeline, request_id, t, start)
        total += change if feature.source is Source.ABUSE else judged
    return float(total)


def _first_seen(history: History, refunds: pd.DataFrame, entity: Entity, key: Any) -> dict:
    """Each user seen on ``key``: the first time (an order paid or a refund asked)."""
    first: dict[Any, int] = {}
    orders = history.orders
    for frame, time in ((orders, "paid_at"), (refunds, "requested_at")):
        if entity.value not in frame.columns:
            continue
        hit = frame[frame[entity.value].notna() & (frame[entity.value] == key)]
        for user, at in zip(hit["user_id"], hit[time], strict=True):
            first[user] = min(first.get(user, int(at)), int(at))
    return first


_LIVE = (Source.REFUNDS, Source.OUTCOMES, Source.DECISIONS, Source.SIGHTINGS)


def _aggregate(
    history: History,
    sources: dict[Source, pd.DataFrame],
    feature: Aggregate,
    row: dict[str, Any],
    timeline: Timeline,
    keyed: dict[tuple[Source, Entity, Any], pd.DataFrame],
    everything: bool,
) -> float:
    key = _entity_of_request(row, feature.entity)
    if _missing(key):
        return math.nan
    t = int(row["requested_at"])
    # "Everything": what the service writes counts whatever its time.
    upto = math.inf if everything and feature.source in _LIVE else t
    refunds = sources[Source.REFUNDS]
    if feature.source in (Source.ABUSE, Source.VERDICTS):
        return _judged(timeline, refunds, feature, key, t)
    if feature.source is Source.SIGHTINGS:
        start = _start(t, feature.window)
        first = _first_seen(history, refunds, feature.entity, key)
        registered = history.users.set_index("user_id")["registered_at"]
        known = [u for u, at in first.items() if start <= at < upto and u in registered.index]
        if feature.agg is Agg.COUNT:
            return float(len(known))
        return float(max(int(registered[u]) for u in known)) if known else math.nan
    # The key's events, found once per request and source: many features read the same.
    found = (feature.source, feature.entity, key)
    if found not in keyed:
        events = sources[feature.source]
        events = events[events[feature.entity.value].notna()]
        keyed[found] = events[events[feature.entity.value] == key]
    events = keyed[found]
    events = events[events["time"] < upto]
    events = events[events["time"] >= _start(t, feature.window)]
    if feature.where is not None:
        column, value = feature.where
        events = events[events[column] == value]
    if feature.agg is Agg.COUNT:
        return float(len(events))
    if feature.agg is Agg.SUM:
        # An order's amounts share its currency: they add up as they are.
        money = "amount" if feature.entity is Entity.ORDER else "value"
        return float(pd.to_numeric(events[money]).sum()) / 100
    if feature.agg is Agg.HOURS_SINCE_LAST:
        return (t - int(events["time"].max())) / HOUR if len(events) else math.nan
    if feature.agg is Agg.DISTINCT:
        assert feature.of is not None
        return float(events[feature.of].dropna().nunique())
    raise AssertionError(feature.agg)


def oracle_features(
    history: History, requests: pd.DataFrame | None = None, *, everything: bool = False
) -> pd.DataFrame:
    """Every catalogue feature of every request, computed the slow way; ``everything``:
    the refund requests, outcomes, decisions and sightings of the history count whatever
    their time (``features.online.online_features``'s live view)."""
    if requests is None:
        requests = history.refund_requests
    base = request_frame(requests, history)
    sources = {
        s: _source_rows(history, s)
        for s in (Source.ORDERS, Source.REFUNDS, Source.OUTCOMES, Source.USAGE, Source.DECISIONS)
    }
    timeline = _timelines(history)
    out: list[dict[str, Any]] = []
    for i in range(len(requests)):
        row = {name: values[i] for name, values in base.items()}
        columns = {name: values[i : i + 1] for name, values in base.items()}
        keyed: dict[tuple[Source, Entity, Any], pd.DataFrame] = {}
        for name, feature in CATALOG.items():
            if isinstance(feature, Aggregate):
                value = _aggregate(history, sources, feature, row, timeline, keyed, everything)
                row[name] = value
                columns[name] = np.array([value])
        for name, feature in CATALOG.items():
            if isinstance(feature, Computed):
                computed = feature.compute(columns)
                columns[name] = computed
                row[name] = computed[0]
        out.append({name: row[name] for name in CATALOG})
    frame = pd.DataFrame(out, columns=list(CATALOG))
    frame.index = pd.Index(requests["request_id"].to_numpy(dtype=object), name="request_id")
    return frame
