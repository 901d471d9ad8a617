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
from training.dataset import as_of

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
    # The issuer's word from t on: changed, given where there was none, or taken back.
    for column in ("delivered_at", "redeemed_at", "credited_at", "activation_failed_at"):
        orders[column] = [
            at if at is not None and at == at and at < t else draw(_maybe_from(t))
            for at in orders[column]
        ]
    labels = history.labels
    labels = labels[~((labels["labeled_at"] >= t) & draw(st.booleans()))]
    flipped = labels.copy()
    pairs = zip(labels["is_abuse"], labels["labeled_at"], strict=True)
    flipped["is_abuse"] = [(not v) if at >= t else v for v, at in pairs]
    usage = history.usage[history.usage["used_at"] < t]
    return history.replace(
        orders=orders,
        labels=flipped,
        usage=usage,
        refund_requests=_outcomes_after(history.refund_requests, t, draw),
        decisions=_decisions_after(history, t, draw),
    )


def _maybe_from(t: int) -> st.SearchStrategy[int | None]:
    """No time, or one at or after ``t``."""
    return st.one_of(st.none(), st.integers(0, 30).map(lambda h: t + h * HOUR))


def _outcomes_after(requests: pd.DataFrame, t: int, draw: st.DrawFn) -> pd.DataFrame:
    """Every outcome not known before ``t`` (a request's counts from no earlier than the
    request) answered otherwise from ``t`` on, or left unanswered."""
    requests = requests.copy()
    paid, resolved = list(requests["paid_amount"]), list(requests["resolved_at"])
    pairs = zip(requests["requested_at"], requests["amount"], strict=True)
    for i, (asked, amount) in enumerate(pairs):
        at = resolved[i]
        if at is not None and at == at and max(int(at), int(asked)) < t:
            continue
        resolved[i] = draw(_maybe_from(t))
        paid[i] = None if resolved[i] is None else draw(st.sampled_from([0, int(amount)]))
    return requests.assign(paid_amount=paid, resolved_at=resolved)


def _decisions_after(history: History, t: int, draw: st.DrawFn) -> pd.DataFrame:
    """Decisions not known before ``t`` changed, and new ones from ``t`` on."""
    decisions = history.decisions
    requests = history.refund_requests
    asked = dict(zip(requests["request_id"], requests["requested_at"], strict=True))
    times = zip(decisions["request_id"], decisions["decided_at"], strict=True)
    known = np.array([max(int(at), int(asked[r])) < t for r, at in times], dtype=bool)
    kept = decisions[known]
    changed = decisions[~known].assign(decision="approve", approved_amount=777)
    undecided = sorted(set(asked) - set(decisions["request_id"]))
    new = pd.DataFrame(
        {"request_id": undecided, "decision": "approve", "approved_amount": 555},
        columns=decisions.columns,
    ).assign(score=0.5, reasons="[]", request_hash="h", decided_at=t)
    frames = [f for f in (kept, changed, new) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else decisions


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
    answered = changed.refund_requests
    changed = changed.replace(refund_requests=pd.concat([answered, extra], ignore_index=True))

    assert_features_equal(build_features(changed, request), before)


def test_sample_data_matches_the_oracle() -> None:
    history = load_history(Path(__file__).resolve().parent.parent / "data" / "sample")
    # Every request of the sample would take the oracle minutes; a fixed spread of 40 does not.
    requests = history.refund_requests.sample(n=40, random_state=7)

    assert_features_equal(build_features(history, requests), oracle_features(history, requests))


@settings(max_examples=30, deadline=None)
@given(history=histories(), data=st.data())
def test_a_history_cut_as_of_a_time_gives_earlier_requests_the_same_features(
    history: History, data: st.DataObject
) -> None:
    """What training cuts at ``until`` keeps no later delivery, issuer's word, refund
    outcome or decision, and loses nothing the requests before ``until`` saw."""
    times = sorted(set(history.refund_requests["requested_at"].astype("int64")))
    until = data.draw(st.sampled_from(times)) + data.draw(st.sampled_from([0, HOUR]))
    known = as_of(history, until)

    for table, columns in (
        (known.orders, ("delivered_at", "redeemed_at", "credited_at", "activation_failed_at")),
        (known.refund_requests, ("requested_at", "resolved_at")),
        (known.decisions, ("decided_at",)),
    ):
        for column in columns:
            assert not (pd.to_numeric(table[column]) >= until).any(), column
    assert (
        known.refund_requests["paid_amount"].isna() == known.refund_requests["resolved_at"].isna()
    ).all()
    earlier = history.refund_requests[
        history.refund_requests["requested_at"].astype("int64") < until
    ]
    if len(earlier):
        assert_features_equal(build_features(known, earlier), build_features(history, earlier))
