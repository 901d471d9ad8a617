"""The offline engine against the row-by-row oracle, and point-in-time correctness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from features.catalog import CATALOG
from features.history import History, load_history
from features.offline import build_features
from features.spec import Type
from riskmodel import dataset

from .conftest import tiny_tables
from .feature_oracle import oracle_features
from .histories import HOUR, histories


def assert_features_equal(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Exact for counts and categories, 1e-9 relative for the rest; null equals null."""
    assert list(actual.columns) == list(expected.columns)
    assert list(actual.index) == list(expected.index)
    for name in actual.columns:
        a, e = actual[name], expected[name]
        if CATALOG[name].type is Type.CATEGORY:
            assert [x if isinstance(x, str) else None for x in a] == [
                x if isinstance(x, str) else None for x in e
            ], name
            continue
        a_num, e_num = a.to_numpy(dtype=float), e.to_numpy(dtype=float)
        np.testing.assert_allclose(a_num, e_num, rtol=1e-9, atol=0, equal_nan=True, err_msg=name)


def _tiny() -> History:
    return History.from_tables({n: dataset.normalise(n, t) for n, t in tiny_tables().items()})


def test_tiny_history_matches_the_oracle() -> None:
    history = _tiny()
    assert_features_equal(build_features(history), oracle_features(history))


@settings(max_examples=60, deadline=None)
@given(history=histories())
def test_random_histories_match_the_oracle(history: History) -> None:
    assert_features_equal(build_features(history), oracle_features(history))


def _after(history: History, t: int, own_order: str, draw: st.DrawFn) -> History:
    """``history`` with events at or after ``t`` changed, added or removed.

    The request's own order may be paid at ``t`` exactly; it is context, not history.
    """
    orders = history.orders.copy()
    later = (orders["paid_at"] >= t) & (orders["order_id"] != own_order)
    orders.loc[later, "amount"] = orders.loc[later, "amount"].map(lambda a: a + 999)
    labels = history.labels
    labels = labels[~((labels["labeled_at"] >= t) & draw(st.booleans()))]
    flipped = labels.copy()
    pairs = zip(labels["is_abuse"], labels["labeled_at"], strict=True)
    flipped["is_abuse"] = [(not v) if at >= t else v for v, at in pairs]
    usage = history.usage[history.usage["used_at"] < t]
    return history.replace(orders=orders, labels=flipped, usage=usage)


@settings(max_examples=60, deadline=None)
@given(history=histories(), data=st.data())
def test_nothing_at_or_after_the_request_changes_its_features(
    history: History, data: st.DataObject
) -> None:
    requests = history.refund_requests
    chosen = data.draw(st.integers(0, len(requests) - 1))
    request = requests.iloc[[chosen]]
    t = int(request["requested_at"].iloc[0])
    before = build_features(history, request)

    changed = _after(history, t, request["order_id"].iloc[0], data.draw)
    # Extra requests at or after t too, which must not count as history of this one.
    extra = requests.copy()
    extra["request_id"] = extra["request_id"] + "x"
    extra["requested_at"] = np.maximum(extra["requested_at"].astype("int64"), t) + HOUR
    changed = changed.replace(refund_requests=pd.concat([requests, extra], ignore_index=True))

    assert_features_equal(build_features(changed, request), before)


def test_sample_data_matches_the_oracle() -> None:
    history = load_history(Path(__file__).resolve().parent.parent / "data" / "sample")
    # Every request of the sample would take the oracle minutes; a fixed spread of 40 does not.
    requests = history.refund_requests.sample(n=40, random_state=7)

    assert_features_equal(build_features(history, requests), oracle_features(history, requests))
