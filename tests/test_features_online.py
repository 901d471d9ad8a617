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
from .feature_oracle import oracle_features
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


def _online(engine: Engine, history: History, *, everything: bool = False) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for request in history.refund_requests.to_dict("records"):
            rows.append(online_features(conn, request, everything=everything))
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


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories())
def test_the_live_view_counts_every_stored_request_whatever_its_date(
    engine: Engine, history: History
) -> None:
    """The store holds every request of the history, later ones included, as it does when
    requests arrive out of their time order: the live view counts them all, exactly as the
    oracle reads "every stored request, sighting, decision and outcome"."""
    _load(engine, history)

    found = _online(engine, history, everything=True)

    assert_features_equal(found, oracle_features(history, everything=True))


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


def _money_history() -> History:
    """Five orders of 50.00 and what became of the requests on them (dataset form)."""
    day = "2026-02-01T"
    orders = pd.DataFrame(
        {
            "order_id": ["refused", "paid", "open", "approved", "credited"],
            "user_id": "u1",
            "product_type": "game_currency",
            "amount": "50.00",
            "currency": "CNY",
            "paid_at": f"{day}08:00:00Z",
            "credited_at": [None, None, None, None, f"{day}08:05:00Z"],
            "activation_failed_at": [None, None, None, None, f"{day}20:00:00Z"],
        }
    )
    # Each order: a first request at 09:00, and another at 12:00 (the one looked at).
    first = {
        "refused": ("50.00", "0", f"{day}10:00:00Z"),
        "paid": ("50.00", "50.00", f"{day}10:00:00Z"),
        "open": ("50.00", None, None),
        "approved": ("50.00", None, None),  # this service approved 30.00 of it
        "credited": ("50.00", "20.00", f"{day}13:00:00Z"),  # paid after the second asked
    }
    rows = []
    for order, (amount, paid, resolved) in first.items():
        rows.append((f"{order}-1", order, f"{day}09:00:00Z", amount, paid, resolved))
        rows.append((f"{order}-2", order, f"{day}12:00:00Z", "20.00", None, None))
    requests = pd.DataFrame(
        rows,
        columns=["request_id", "order_id", "requested_at", "amount", "paid_amount", "resolved_at"],
    ).assign(user_id="u1", reason="not_delivered")
    users = pd.DataFrame({"user_id": ["u1"], "registered_at": ["2026-01-01T00:00:00Z"]})
    tables = {"users": users, "orders": orders, "refund_requests": requests}
    history = History.from_tables({n: dataset.normalise(n, t) for n, t in tables.items()})
    decision = {
        "request_id": "approved-1",
        "decision": "approve",
        "score": 0.1,
        "approved_amount": 3000,
        "reasons": "[]",
        "decided_at": int(history.refund_requests["requested_at"].iloc[0]) + 1_000_000,
        "request_hash": "h",
    }
    decisions = pd.DataFrame([decision], columns=history.decisions.columns, dtype=object)
    return history.replace(decisions=decisions)


_MONEY = [
    "order_earlier_refunds",
    "order_refund_paid_all",
    "order_refunds_refused_all",
    "order_refunds_unanswered",
    "order_refund_approved_all",
    "order_refund_out_all",
    "order_refund_left",
    "request_amount_over_left",
    "order_value_credited",
    "order_activation_failed",
]


def test_an_orders_refund_history_in_money_on_both_engines(engine: Engine) -> None:
    """A second request after a refusal, a full payout, an unanswered first request, an
    approval by this service, and a payout known only after the second request."""
    history = _money_history()
    second = history.refund_requests[history.refund_requests["request_id"].str.endswith("-2")]
    second = second.reset_index(drop=True)
    # Asking the whole 50.00 again on each order, rather than 20.00.
    again = second.assign(request_id=second["request_id"] + "-all", amount=5000)
    requests = pd.concat([second, again], ignore_index=True)
    _load(engine, history)

    offline = build_features(history, requests)[_MONEY]
    with engine.connect() as conn:
        online = pd.DataFrame(
            [online_features(conn, r, _MONEY) for r in requests.to_dict("records")]
        )
    online.index = offline.index

    expected = pd.DataFrame(
        [
            # earlier, paid, refused, unanswered, approved, out, left, over, credited, failed
            [1, 0.0, 1, 0, 0.0, 0.0, 50.0, 0, 0, 0],  # refused, then asked again
            [1, 50.0, 0, 0, 0.0, 50.0, 0.0, 1, 0, 0],  # paid in full: a second payout
            [1, 0.0, 0, 1, 0.0, 0.0, 50.0, 0, 0, 0],  # a retry while the first is open
            [1, 0.0, 0, 1, 30.0, 30.0, 20.0, 0, 0, 0],  # 30.00 approved, 20.00 left
            [1, 0.0, 0, 1, 0.0, 0.0, 50.0, 0, 1, 0],  # paid and failed only later
        ],
        columns=_MONEY,
        index=second["request_id"],
        dtype=float,
    )
    whole = expected.assign(request_amount_over_left=[0.0, 1.0, 0.0, 1.0, 0.0])
    whole.index = again["request_id"]
    expected = pd.concat([expected, whole])
    expected.index.name = "request_id"
    pd.testing.assert_frame_equal(offline, expected)
    pd.testing.assert_frame_equal(online, expected)
