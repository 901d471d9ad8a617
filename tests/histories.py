"""Hypothesis strategies for random, valid histories in store form."""

from __future__ import annotations

import pandas as pd
from hypothesis import strategies as st

from features.history import History
from riskmodel.domain import LabelSource, ProductType, RefundReason

HOUR = 3_600_000_000
BASE = 1_767_225_600_000_000  # 2026-01-01
# Histories start in 2026, or just before the epoch, where the store keeps no day tiles.
_BASES = (BASE, -5 * 24 * HOUR)


def _pick(draw: st.DrawFn, values: list[str], null: bool = True) -> str | None:
    return draw(st.sampled_from([*values, None] if null else values))


def _time(draw: st.DrawFn, base: int) -> int:
    # Whole hours over ~100 days: ties between events and requests are likely, and every
    # window, up to 90 days, both holds events and misses some.
    return base + draw(st.integers(0, 2400)) * HOUR


@st.composite
def histories(draw: st.DrawFn, max_orders: int = 14, max_requests: int = 10) -> History:
    base = draw(st.sampled_from(_BASES))
    users = [f"u{i}" for i in range(draw(st.integers(1, 4)))]
    devices, ips = ["d0", "d1", "d2"], ["ip0", "ip1"]
    accounts, sellers, products = ["pa0", "pa1", "pa2"], ["s0", "s1"], ["p0", "p1"]
    # Sometimes a second currency, worth 7.1 of the first (or a rate drawn at random).
    usd = draw(st.sampled_from([None, 7_100_000, 3, 1_000_000]))
    currencies = ["CNY", None] if usd is None else ["CNY", "USD", None]
    user_rows = [
        {
            "user_id": u,
            "registered_at": base - draw(st.integers(0, 400)) * HOUR,
            "phone_verified": draw(st.sampled_from([True, False, None])),
            "extra": None,
        }
        for u in users
    ]
    order_rows = []
    for i in range(draw(st.integers(1, max_orders))):
        product = draw(st.sampled_from([p.value for p in ProductType]))
        paid = _time(draw, base)
        delivered = draw(st.sampled_from([None, paid, paid + HOUR, paid + 100 * HOUR]))
        order_rows.append(
            {
                "order_id": f"o{i}",
                "user_id": draw(st.sampled_from(users)),
                "product_type": product,
                "amount": draw(st.integers(0, 50_000)),
                "paid_at": paid,
                "currency": draw(st.sampled_from(currencies)),
                "seller_id": _pick(draw, sellers),
                "product_id": _pick(draw, products),
                "payment_method": _pick(draw, ["alipay", "bank_card"]),
                "payment_account": _pick(draw, accounts),
                "device_id": _pick(draw, devices),
                "ip": _pick(draw, ips),
                "delivered_at": delivered,
                # A code may be sold already redeemed.
                "redeemed_at": draw(st.sampled_from([None, paid + 2 * HOUR, paid - 5 * HOUR])),
                # The issuer's word on whether the value reached the buyer, when it says.
                "credited_at": draw(st.sampled_from([None, paid + 2 * HOUR, paid + 50 * HOUR])),
                "activation_failed_at": draw(st.sampled_from([None, paid + 3 * HOUR])),
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
        asked = order["paid_at"] + draw(st.integers(0, 300)) * HOUR
        # Often the whole order back: what makes a second payout.
        whole = draw(st.booleans())
        amount = (order["amount"] or 1) if whole else draw(st.integers(1, 50_000))
        # Paid in full, in part, refused, or unanswered; answered at the request's time,
        # after it, or dated before it.
        paid = draw(st.sampled_from([None, 0, amount, amount // 2]))
        resolved = None if paid is None else asked + draw(st.sampled_from([-2, 0, 5, 200])) * HOUR
        request_rows.append(
            {
                "request_id": f"r{i}",
                "order_id": order["order_id"],
                "user_id": order["user_id"],
                "requested_at": asked,
                "amount": amount,
                "reason": draw(st.sampled_from([r.value for r in RefundReason])),
                "days_used_claimed": draw(st.sampled_from([None, 0, 3])),
                "device_id": _pick(draw, devices),
                "ip": _pick(draw, ips),
                "channel": "app",
                "paid_amount": paid,
                "resolved_at": resolved,
                "extra": None,
            }
        )
    label_rows = []
    for request in request_rows:
        # A verdict may be dated before its request (a day-granular export).
        times = draw(st.sets(st.integers(-30, 400), max_size=3))
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
    decision_rows = []
    for request in request_rows:
        if not draw(st.booleans()):
            continue
        decision = draw(st.sampled_from(["approve", "review", "block"]))
        approved = request["amount"] if draw(st.booleans()) else request["amount"] // 3
        decision_rows.append(
            {
                "request_id": request["request_id"],
                "decision": decision,
                "score": 0.5,
                "approved_amount": approved if decision == "approve" else 0,
                "reasons": "[]",
                "review_queue": None,
                "review_due_at": None,
                "model_version": None,
                "policy_version": None,
                "feature_version": None,
                # A decision may be dated before its request (a clock running behind).
                "decided_at": request["requested_at"] + draw(st.integers(-1, 2)) * HOUR,
                "request_hash": "h",
                "shadow": None,
            }
        )
    empty = History.empty()

    def frame(rows: list[dict[str, object]], like: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=like.columns, dtype=object) if rows else like

    rates = [{"currency": "CNY", "rate": 1_000_000}, {"currency": "USD", "rate": usd}]
    return History(
        rates=frame(rates if usd is not None else [], empty.rates),
        users=frame(user_rows, empty.users),
        orders=frame(order_rows, empty.orders),
        usage=frame(usage_rows, empty.usage),
        refund_requests=frame(request_rows, empty.refund_requests),
        labels=frame(label_rows, empty.labels),
        decisions=frame(decision_rows, empty.decisions),
    )
