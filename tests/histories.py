"""Hypothesis strategies for random, valid histories in store form."""

from __future__ import annotations

import pandas as pd
from hypothesis import strategies as st

from features.history import History
from riskmodel.domain import LabelSource, ProductType, RefundReason

HOUR = 3_600_000_000
BASE = 1_767_225_600_000_000  # 2026-01-01


def _pick(draw: st.DrawFn, values: list[str], null: bool = True) -> str | None:
    return draw(st.sampled_from([*values, None] if null else values))


def _time(draw: st.DrawFn, low: int = 0) -> int:
    # Whole hours over ~40 days make ties between events and requests likely.
    return BASE + draw(st.integers(low, 1000)) * HOUR


@st.composite
def histories(draw: st.DrawFn, max_orders: int = 14, max_requests: int = 10) -> History:
    users = [f"u{i}" for i in range(draw(st.integers(1, 4)))]
    devices, ips = ["d0", "d1", "d2"], ["ip0", "ip1"]
    accounts, sellers = ["pa0", "pa1", "pa2"], ["s0", "s1"]
    user_rows = [
        {
            "user_id": u,
            "registered_at": BASE - draw(st.integers(0, 400)) * HOUR,
            "phone_verified": draw(st.sampled_from([True, False, None])),
            "extra": None,
        }
        for u in users
    ]
    order_rows = []
    for i in range(draw(st.integers(1, max_orders))):
        product = draw(st.sampled_from([p.value for p in ProductType]))
        paid = _time(draw, 0)
        delivered = draw(st.sampled_from([None, paid, paid + HOUR, paid + 100 * HOUR]))
        order_rows.append(
            {
                "order_id": f"o{i}",
                "user_id": draw(st.sampled_from(users)),
                "product_type": product,
                "amount": draw(st.integers(0, 50_000)),
                "paid_at": paid,
                "currency": "CNY",
                "seller_id": _pick(draw, sellers),
                "product_id": None,
                "payment_method": _pick(draw, ["alipay", "bank_card"]),
                "payment_account": _pick(draw, accounts),
                "device_id": _pick(draw, devices),
                "ip": _pick(draw, ips),
                "delivered_at": delivered,
                "redeemed_at": draw(st.sampled_from([None, paid + 2 * HOUR])),
                "service_days": 30 if product == ProductType.MEMBERSHIP.value else None,
                "extra": None,
            }
        )
    usage_rows = []
    for order in order_rows:
        if order["service_days"]:
            days = draw(st.sets(st.integers(0, 29), max_size=6))
            usage_rows += [
                {"order_id": order["order_id"], "used_at": order["paid_at"] + d * 24 * HOUR}
                for d in sorted(days)
            ]
    request_rows = []
    for i in range(draw(st.integers(1, max_requests))):
        order = draw(st.sampled_from(order_rows))
        request_rows.append(
            {
                "request_id": f"r{i}",
                "order_id": order["order_id"],
                "user_id": order["user_id"],
                "requested_at": order["paid_at"] + draw(st.integers(0, 300)) * HOUR,
                "amount": draw(st.integers(1, 50_000)),
                "reason": draw(st.sampled_from([r.value for r in RefundReason])),
                "days_used_claimed": draw(st.sampled_from([None, 0, 3])),
                "device_id": _pick(draw, devices),
                "ip": _pick(draw, ips),
                "channel": "app",
                "extra": None,
            }
        )
    label_rows = []
    for request in request_rows:
        times = draw(st.sets(st.integers(0, 400), max_size=3))
        label_rows += [
            {
                "request_id": request["request_id"],
                "is_abuse": draw(st.booleans()),
                "labeled_at": request["requested_at"] + h * HOUR,
                "source": draw(st.sampled_from([s.value for s in LabelSource])),
                "extra": None,
            }
            for h in sorted(times)
        ]
    decision_rows = [
        {
            "request_id": request["request_id"],
            "decision": draw(st.sampled_from(["approve", "review", "block"])),
            "score": 0.5,
            "approved_amount": 0,
            "reasons": "[]",
            "review_queue": None,
            "review_due_at": None,
            "model_version": None,
            "policy_version": None,
            "feature_version": None,
            "decided_at": request["requested_at"] + draw(st.integers(0, 2)) * HOUR,
            "request_hash": "h",
            "shadow": None,
        }
        for request in request_rows
        if draw(st.booleans())
    ]
    empty = History.empty()

    def frame(rows: list[dict[str, object]], like: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=like.columns, dtype=object) if rows else like

    return History(
        users=frame(user_rows, empty.users),
        orders=frame(order_rows, empty.orders),
        usage=frame(usage_rows, empty.usage),
        refund_requests=frame(request_rows, empty.refund_requests),
        labels=frame(label_rows, empty.labels),
        decisions=frame(decision_rows, empty.decisions),
    )
