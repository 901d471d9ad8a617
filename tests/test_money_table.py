"""The money table: hand-chosen requests at and around every amount the policy turns on,
with what each must be paid worked out by hand from the policy's terms, decided by the
one-request engine and by the vectorised engine that backtests use.

The terms (docs/policy.md, "Money"): an approved request is paid what it asked, capped at
the price paid; a membership refunded for one of ``prorated.reasons`` is capped instead at
``price * (service_days - max(days_used_seen, min_charged_days)) / service_days - fee``,
to the nearest cent (halves up), never below 0. Nothing to pay, or an unknown
entitlement, is a review; anything but approve pays 0.

Under POLICY the fee is 1.50 and two days are always charged, so that every term of the
formula moves the answer. Each expected amount was computed by hand (the arithmetic is in
the comments), never by the code under test. The engine reads no currency: amounts are in
the order's own currency and the payout stays in it, so no case needs a rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest

from riskmodel.domain import Decision
from riskmodel.engine import REQUEST_FIELDS, Outcome, decide, decide_frame, required_fields
from riskmodel.policy import Kind, Policy, parse_policy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

POLICY = """\
version: money-table-1
thresholds:
  review: 0.30
  block: 0.90
  segments:
    - {name: large, amount_from: 300, review: 0.10, block: 0.90}
review:
  default_queue: ordinary
  queues:
    - {name: ordinary, deadline_hours: 24}
prorated: {fee: 1.50, min_charged_days: 2, reasons: [unused, partial_use]}
green_channel:
  who: user_orders_all >= 10
  max_amount: 100
  review_threshold: 0.50
explanations: {top_contributions: 0}
"""

FEATURES = {
    "order_days_used_seen": Kind.NUMBER,
    "account_age_days": Kind.NUMBER,
    "user_orders_all": Kind.NUMBER,
}

MONEY_CODES = ("PRORATED_CAP", "AMOUNT_ABOVE_PAID", "NOTHING_REFUNDABLE", "ENTITLEMENT_UNKNOWN")
CAP, ABOVE, NOTHING, UNKNOWN = MONEY_CODES


@dataclass(frozen=True)
class Case:
    """One request, and what the policy says it is paid."""

    name: str
    product: str
    reason: str
    price: float | None  # paid for the order
    asked: float
    decision: str
    paid: str  # currency units, as the API writes them
    money: tuple[str, ...] = ()  # the money reason codes expected, in order
    service_days: int | None = None
    seen: float | None = None  # order_days_used_seen
    claimed: int | None = None  # days_used_claimed
    score: float = 0.05
    green: bool = False  # a green-channel buyer (user_orders_all >= 10)


def membership(
    name: str,
    price: float,
    days: int | None,
    seen: float | None,
    asked: float,
    decision: str,
    paid: str,
    money: tuple[str, ...] = (),
    **more: Any,
) -> Case:
    more.setdefault("reason", "partial_use")
    return Case(
        name,
        "membership",
        price=price,
        service_days=days,
        seen=seen,
        asked=asked,
        decision=decision,
        paid=paid,
        money=money,
        **more,
    )


def goods(
    name: str,
    product: str,
    price: float | None,
    asked: float,
    decision: str,
    paid: str,
    money: tuple[str, ...] = (),
    **more: Any,
) -> Case:
    more.setdefault("reason", "not_delivered")
    return Case(
        name, product, price=price, asked=asked, decision=decision, paid=paid, money=money, **more
    )


A, R, B = "approve", "review", "block"

TABLE = [
    # --- anything but a prorated membership: capped at the price, no fee ------------------
    goods("card code, a cent under the price", "card_code", 50.00, 49.99, A, "49.99"),
    goods("card code, the price", "card_code", 50.00, 50.00, A, "50.00"),
    goods("card code, a cent over the price", "card_code", 50.00, 50.01, A, "50.00", (ABOVE,)),
    goods("game currency, more than paid", "game_currency", 6.48, 10.00, A, "6.48", (ABOVE,)),
    goods("service, half of it", "service", 120.50, 60.25, A, "60.25"),
    goods("no fee outside memberships", "card_code", 1.00, 1.00, A, "1.00"),
    # A free order has nothing to pay back: a person tells the buyer.
    goods("free order", "card_code", 0.00, 5.00, R, "0.00", (ABOVE, NOTHING)),
    goods("price unknown", "card_code", None, 5.00, R, "0.00", (UNKNOWN,)),
    # --- a membership refunded for a reason outside prorated.reasons: the price caps it ----
    membership("not delivered", 30.00, 30, 10, 30.00, A, "30.00", reason="not_delivered"),
    membership(
        "other reason: a cent over", 30.00, 30, 10, 30.01, A, "30.00", (ABOVE,), reason="other"
    ),
    # not_as_described is prorated under the starter policy, not under this one.
    membership("not as described", 30.00, 30, 29, 30.00, A, "30.00", reason="not_as_described"),
    # --- prorated: days used (price 30.00, 30 days, fee 1.50, 2 days always charged) -------
    # 30.00 x (30 - 2) / 30 = 28.00; - 1.50 = 26.50
    membership("nothing used: 2 days charged", 30.00, 30, 0, 30.00, A, "26.50", (CAP,)),
    membership("1 day used: 2 days charged", 30.00, 30, 1, 30.00, A, "26.50", (CAP,)),
    membership("2 days used, asks the entitlement", 30.00, 30, 2, 26.50, A, "26.50"),
    membership("2 days used, a cent under", 30.00, 30, 2, 26.49, A, "26.49"),
    membership("2 days used, a cent over", 30.00, 30, 2, 26.51, A, "26.50", (CAP,)),
    # 30.00 x 20 / 30 = 20.00; - 1.50 = 18.50
    membership("10 of 30 days used", 30.00, 30, 10, 20.00, A, "18.50", (CAP,)),
    # What the platform saw counts, not what the buyer claims.
    membership("claims 0 days, 10 seen", 30.00, 30, 10, 30.00, A, "18.50", (CAP,), claimed=0),
    membership("claims 20 days, 10 seen", 30.00, 30, 10, 18.50, A, "18.50", claimed=20),
    # 30.00 x 1 / 30 = 1.00; - 1.50 < 0: nothing
    membership("29 of 30 used", 30.00, 30, 29, 1.00, R, "0.00", (CAP, NOTHING)),
    membership("all days used", 30.00, 30, 30, 5.00, R, "0.00", (CAP, NOTHING)),
    membership("more days seen than sold", 30.00, 30, 31, 5.00, R, "0.00", (CAP, NOTHING)),
    membership("far more days seen", 30.00, 30, 400, 5.00, R, "0.00", (CAP, NOTHING)),
    # One day sold, two charged: nothing left.
    membership("one-day membership", 5.00, 1, 0, 5.00, R, "0.00", (CAP, NOTHING)),
    # 365.00 x 265 / 365 = 265.00; - 1.50 = 263.50
    membership("a year, 100 days used", 365.00, 365, 100, 263.50, A, "263.50"),
    membership("usage unknown", 30.00, 30, None, 5.00, R, "0.00", (UNKNOWN,)),
    membership("service days unknown", 30.00, None, 10, 5.00, R, "0.00", (UNKNOWN,)),
    membership("zero service days", 30.00, 0, 0, 5.00, R, "0.00", (UNKNOWN,)),
    # --- the fee: one day left (30 days, 29 used) worth the fee, a cent more, a cent less --
    # 45.00 / 30 = 1.50; - 1.50 = 0
    membership("one day left worth the fee", 45.00, 30, 29, 1.00, R, "0.00", (CAP, NOTHING)),
    # 45.30 / 30 = 1.51; - 1.50 = 0.01
    membership("a cent above the fee", 45.30, 30, 29, 1.00, A, "0.01", (CAP,)),
    membership("a cent above the fee, asks it", 45.30, 30, 29, 0.01, A, "0.01"),
    # 44.70 / 30 = 1.49; - 1.50 = -0.01: never below 0
    membership("a cent below the fee", 44.70, 30, 29, 1.00, R, "0.00", (CAP, NOTHING)),
    # --- to the nearest cent, halves up, before the fee --------------------------------------
    # 10.01 x 2 / 4 = 5.005 -> 5.01; - 1.50 = 3.51
    membership("half a cent rounds up", 10.01, 4, 2, 5.00, A, "3.51", (CAP,)),
    # 10.01 x 1 / 4 = 2.5025 -> 2.50; - 1.50 = 1.00
    membership("under half a cent rounds down", 10.01, 4, 3, 1.00, A, "1.00"),
    # 20.00 x 1 / 3 = 6.666.. -> 6.67; - 1.50 = 5.17
    membership("two thirds", 20.00, 3, 0, 20.00, A, "5.17", (CAP,)),
    # --- the model's thresholds by amount: at or above 300 the review threshold is 0.10 ----
    goods("score 0.20, a cent under 300", "card_code", 500.00, 299.99, A, "299.99", score=0.20),
    goods("score 0.20, 300", "card_code", 500.00, 300.00, R, "0.00", score=0.20),
    goods("score 0.20, a cent over 300", "card_code", 500.00, 300.01, R, "0.00", score=0.20),
    goods("score just under review", "card_code", 50.00, 50.00, A, "50.00", score=0.2999),
    goods("score at review", "card_code", 50.00, 50.00, R, "0.00", score=0.30),
    goods("score at block", "card_code", 50.00, 50.00, B, "0.00", score=0.90),
    # 900.00 x 28 / 30 = 840.00; - 1.50 = 838.50: the 300 asked is within it
    membership("large membership, low score", 900.00, 30, 0, 300.00, A, "300.00", score=0.05),
    membership("large membership, score 0.20", 900.00, 30, 0, 300.00, R, "0.00", score=0.20),
    # --- the green channel: up to 100 asked, review from 0.50 --------------------------------
    goods("green, a cent under 100", "card_code", 150.00, 99.99, A, "99.99", score=0.4, green=True),
    goods("green, 100", "card_code", 150.00, 100.00, A, "100.00", score=0.4, green=True),
    goods("green, a cent over 100", "card_code", 150.00, 100.01, R, "0.00", score=0.4, green=True),
    goods("not green, 100", "card_code", 150.00, 100.00, R, "0.00", score=0.4),
    # The green channel looks at the amount asked; the payout is still capped.
    # 120.00 x 20 / 30 = 80.00; - 1.50 = 78.50
    membership("green membership", 120.0, 30, 10, 100.0, A, "78.50", (CAP,), score=0.4, green=True),
]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY, {**REQUEST_FIELDS, **FEATURES})


def row_of(case: Case, number: int = 0) -> dict[str, Any]:
    return {
        "request_id": f"r{number}",
        "order_id": f"o{number}",
        "user_id": "u1",
        "device_id": "d1",
        "ip": "10.0.0.1",
        "channel": "app",
        "reason": case.reason,
        "amount": case.asked,
        "days_used_claimed": case.claimed,
        "product_type": case.product,
        "order_amount": case.price,
        "service_days": case.service_days,
        "payment_account": "pa1",
        "order_days_used_seen": case.seen,
        "account_age_days": 400.0,
        "user_orders_all": 12.0 if case.green else 1.0,
    }


def decide_row(case: Case, policy: Policy) -> Outcome:
    row = row_of(case)
    request = {k: v for k, v in row.items() if k in REQUEST_FIELDS}
    features = {k: v for k, v in row.items() if k not in REQUEST_FIELDS}
    return decide(request, features, case.score, policy, decided_at=NOW)


def test_the_table_covers_what_it_claims() -> None:
    names = [case.name for case in TABLE]
    assert len(names) == len(set(names))
    assert {case.product for case in TABLE} == {
        "card_code",
        "game_currency",
        "service",
        "membership",
    }
    assert {case.decision for case in TABLE} == {A, R, B}
    assert {case.seen for case in TABLE if case.product == "membership"} >= {0, 1, 2, 29, 30, 31}


@pytest.mark.parametrize("case", TABLE, ids=[case.name for case in TABLE])
def test_each_request_is_paid_what_the_policy_says(case: Case, policy: Policy) -> None:
    one = decide_row(case, policy)
    frame = pd.DataFrame([row_of(case)])
    many = decide_frame(frame, np.array([case.score]), policy, decided_at=NOW).iloc[0]

    assert one.decision is Decision(case.decision)
    assert one.approved_amount == Decimal(case.paid)
    assert tuple(c for c in one.codes if c in MONEY_CODES) == case.money
    assert many["decision"] == case.decision
    assert many["approved_cents"] == int(Decimal(case.paid) * 100)
    assert many["reason_codes"] == one.codes


def test_the_whole_table_at_once_as_a_backtest_decides_it(policy: Policy) -> None:
    # One frame of every case: columns mix nulls and numbers as a backtest's frames do.
    frame = pd.DataFrame([row_of(case, i) for i, case in enumerate(TABLE)])
    assert required_fields(policy) <= set(frame.columns)
    scores = np.array([case.score for case in TABLE])

    decided = decide_frame(frame, scores, policy, decided_at=NOW)

    wrong = []
    for case, (_, got) in zip(TABLE, decided.iterrows(), strict=True):
        one = decide_row(case, policy)
        expected = (case.decision, int(Decimal(case.paid) * 100))
        if (got["decision"], got["approved_cents"]) != expected or one.codes != got["reason_codes"]:
            wrong.append(
                f"{case.name}: expected {expected}, frame {got['decision']} "
                f"{got['approved_cents']} {got['reason_codes']}, row {one.codes}"
            )
    assert not wrong, "\n".join(wrong)
