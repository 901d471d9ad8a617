"""The decision engine: precedence case by case, money, queues, explanations, degraded
modes; monotone in the score; the vectorised engine equal to the one-request engine."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import features
from features.policy_fields import load_with_catalogue, policy_fields
from riskmodel.domain import Decision, Order, RefundRequest
from riskmodel.engine import (
    REQUEST_FIELDS,
    Outcome,
    ReasonKind,
    decide,
    decide_frame,
    decide_with_scorer,
    request_fields,
    required_fields,
)
from riskmodel.policy import STARTER_POLICY, Kind, Policy, parse_policy

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

POLICY = """\
version: test-1
thresholds:
  review: 0.30
  block: 0.80
  segments:
    - {name: new_accounts, account_age_below_days: 7, review: 0.20, block: 0.60}
    - {name: large, amount_from: 300, review: 0.10, block: 0.50}
rules:
  - {name: hard, code: RULE_HARD, action: block, when: flag_block == 1, message: hard block}
  - name: soft
    code: RULE_SOFT
    action: review
    queue: special
    when: flag_review == 1
    message: needs a look
  - {name: trusted, code: RULE_TRUSTED, action: approve, when: flag_approve == 1, message: ok}
  - {name: light, code: RULE_LIGHT, action: review, when: flag_light == 1, message: light}
  - name: unused_rule
    code: RULE_OFF
    action: block
    when: amount > 0
    message: never
    enabled: false
lists:
  block: {users: [u_bad], devices: [d_bad], ips: [ip_bad], payment_accounts: [p_bad]}
  allow: {users: [u_good], devices: [d_good]}
review:
  default_queue: ordinary
  queues:
    - {name: disputes, deadline_hours: 48, when: "reason == 'not_as_described'"}
    - {name: special, deadline_hours: 4}
    - {name: ordinary, deadline_hours: 24}
prorated: {fee: 1.00, min_charged_days: 1, reasons: [partial_use, unused]}
green_channel:
  who: user_orders_all >= 10
  max_amount: 100
  review_threshold: 0.50
  exempt_rules: [light]
explanations: {top_contributions: 2}
"""

FEATURES = {
    "flag_block": Kind.NUMBER,
    "flag_review": Kind.NUMBER,
    "flag_approve": Kind.NUMBER,
    "flag_light": Kind.NUMBER,
    "user_orders_all": Kind.NUMBER,
    "account_age_days": Kind.NUMBER,
    "order_days_used_seen": Kind.NUMBER,
}


@pytest.fixture(scope="module")
def policy() -> Policy:
    return parse_policy(POLICY, {**REQUEST_FIELDS, **FEATURES})


def base(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": "r1",
        "order_id": "o1",
        "user_id": "u1",
        "device_id": "d1",
        "ip": "ip1",
        "channel": "app",
        "reason": "not_delivered",
        "amount": 50.0,
        "days_used_claimed": None,
        "product_type": "card_code",
        "order_amount": 50.0,
        "service_days": None,
        "payment_account": "p1",
        "flag_block": 0.0,
        "flag_review": 0.0,
        "flag_approve": 0.0,
        "flag_light": 0.0,
        "user_orders_all": 2.0,
        "account_age_days": 100.0,
        "order_days_used_seen": 0.0,
    }
    row.update(changes)
    return row


def run(policy: Policy, score: float | None, **changes: Any) -> Outcome:
    row = base(**changes)
    request = {k: v for k, v in row.items() if k in REQUEST_FIELDS}
    feats = {k: v for k, v in row.items() if k not in REQUEST_FIELDS}
    return decide(request, feats, score, policy, decided_at=NOW, model_version="m1")


# --- precedence, case by case -------------------------------------------------------------
# Each case: (score, changes) -> (decision, reason codes). Read top to bottom, they walk the
# order of precedence in riskmodel.engine's docstring.
CASES = [
    # 3. the model alone, default thresholds
    ("low score approves", 0.29, {}, "approve", ()),
    ("review threshold is inclusive", 0.30, {}, "review", ("MODEL_SCORE_REVIEW",)),
    ("block threshold is inclusive", 0.80, {}, "block", ("MODEL_SCORE_BLOCK",)),
    # 1. block lists beat everything, whichever kind
    ("blocked user", 0.0, {"user_id": "u_bad"}, "block", ("LIST_BLOCK_USER",)),
    ("blocked device", 0.0, {"device_id": "d_bad"}, "block", ("LIST_BLOCK_DEVICE",)),
    ("blocked IP", 0.0, {"ip": "ip_bad"}, "block", ("LIST_BLOCK_IP",)),
    (
        "blocked payment",
        0.0,
        {"payment_account": "p_bad"},
        "block",
        ("LIST_BLOCK_PAYMENT_ACCOUNT",),
    ),
    (
        "a block list beats an allow list",
        0.0,
        {"user_id": "u_good", "device_id": "d_bad"},
        "block",
        ("LIST_BLOCK_DEVICE", "LIST_ALLOW_USER"),
    ),
    # 2. hard block rules beat the model, allow lists and approve rules
    ("hard block rule", 0.0, {"flag_block": 1.0}, "block", ("RULE_HARD",)),
    (
        "an allow list does not lift a block rule",
        0.0,
        {"flag_block": 1.0, "user_id": "u_good"},
        "block",
        ("LIST_ALLOW_USER", "RULE_HARD"),
    ),
    (
        "an approve rule does not lift a block rule",
        0.0,
        {"flag_block": 1.0, "flag_approve": 1.0},
        "block",
        ("RULE_HARD", "RULE_TRUSTED"),
    ),
    ("a disabled rule never fires", 0.0, {"amount": 10.0}, "approve", ()),
    # 3. segments: the first match wins; unknown account age counts as new
    (
        "new account, lower review",
        0.2,
        {"account_age_days": 3.0},
        "review",
        ("MODEL_SCORE_REVIEW",),
    ),
    ("unknown age is new", 0.2, {"account_age_days": None}, "review", ("MODEL_SCORE_REVIEW",)),
    ("new account, lower block", 0.6, {"account_age_days": 3.0}, "block", ("MODEL_SCORE_BLOCK",)),
    (
        "first segment wins over a later one",
        0.55,
        {"account_age_days": 3.0, "amount": 300.0, "order_amount": 300.0},
        "review",
        ("MODEL_SCORE_REVIEW",),
    ),
    (
        "large amounts",
        0.55,
        {"amount": 300.0, "order_amount": 300.0},
        "block",
        ("MODEL_SCORE_BLOCK",),
    ),
    (
        "just below the band",
        0.55,
        {"amount": 299.99, "order_amount": 300.0},
        "review",
        ("MODEL_SCORE_REVIEW",),
    ),
    # 3. no score: degraded review, whatever else says approve
    ("no score", None, {}, "review", ("DEGRADED",)),
    ("NaN score", math.nan, {}, "review", ("DEGRADED",)),
    ("score out of range", 1.5, {}, "review", ("DEGRADED",)),
    (
        "allow list does not lift degraded",
        None,
        {"user_id": "u_good"},
        "review",
        ("LIST_ALLOW_USER", "DEGRADED"),
    ),
    (
        "degraded still blocks on a list",
        None,
        {"user_id": "u_bad"},
        "block",
        ("LIST_BLOCK_USER", "DEGRADED"),
    ),
    # 4. review rules
    ("review rule", 0.0, {"flag_review": 1.0}, "review", ("RULE_SOFT",)),
    (
        "review rule and model block",
        0.9,
        {"flag_review": 1.0},
        "block",
        ("RULE_SOFT", "MODEL_SCORE_BLOCK"),
    ),
    # 5. allow lists and approve rules soften the model's verdict by one step only
    (
        "allow list: model review -> approve",
        0.5,
        {"user_id": "u_good"},
        "approve",
        ("LIST_ALLOW_USER", "MODEL_SCORE_REVIEW"),
    ),
    (
        "allow list: model block -> review",
        0.9,
        {"user_id": "u_good"},
        "review",
        ("LIST_ALLOW_USER", "MODEL_SCORE_BLOCK"),
    ),
    (
        "allowed device",
        0.5,
        {"device_id": "d_good"},
        "approve",
        ("LIST_ALLOW_DEVICE", "MODEL_SCORE_REVIEW"),
    ),
    (
        "allow list does not lift a review rule",
        0.0,
        {"user_id": "u_good", "flag_review": 1.0},
        "review",
        ("LIST_ALLOW_USER", "RULE_SOFT"),
    ),
    (
        "approve rule: model review -> approve",
        0.5,
        {"flag_approve": 1.0},
        "approve",
        ("RULE_TRUSTED", "MODEL_SCORE_REVIEW"),
    ),
    (
        "approve rule: model block -> review",
        0.9,
        {"flag_approve": 1.0},
        "review",
        ("RULE_TRUSTED", "MODEL_SCORE_BLOCK"),
    ),
    (
        "two softeners still soften one step",
        0.9,
        {"flag_approve": 1.0, "user_id": "u_good"},
        "review",
        ("LIST_ALLOW_USER", "RULE_TRUSTED", "MODEL_SCORE_BLOCK"),
    ),
    # 5. green channel: a higher review threshold, exempt review rules, never a lighter block
    ("green: lighter review", 0.45, {"user_orders_all": 12.0}, "approve", ("GREEN_CHANNEL",)),
    (
        "green: still reviews above",
        0.5,
        {"user_orders_all": 12.0},
        "review",
        ("GREEN_CHANNEL", "MODEL_SCORE_REVIEW"),
    ),
    (
        "green: block unchanged",
        0.8,
        {"user_orders_all": 12.0},
        "block",
        ("GREEN_CHANNEL", "MODEL_SCORE_BLOCK"),
    ),
    (
        "green: exempt rule",
        0.0,
        {"user_orders_all": 12.0, "flag_light": 1.0},
        "approve",
        ("RULE_LIGHT", "GREEN_CHANNEL"),
    ),
    ("not green: the rule applies", 0.0, {"flag_light": 1.0}, "review", ("RULE_LIGHT",)),
    (
        "green: other review rules apply",
        0.0,
        {"user_orders_all": 12.0, "flag_review": 1.0},
        "review",
        ("RULE_SOFT", "GREEN_CHANNEL"),
    ),
    (
        "green: only up to max_amount",
        0.45,
        {"user_orders_all": 12.0, "amount": 100.01, "order_amount": 200.0},
        "review",
        ("MODEL_SCORE_REVIEW",),
    ),
    (
        "green: the segment's block caps the review threshold",
        0.55,
        {"user_orders_all": 12.0, "account_age_days": 3.0},
        "review",
        ("GREEN_CHANNEL", "MODEL_SCORE_REVIEW"),
    ),
    (
        "green: a block rule is never exempt",
        0.0,
        {"user_orders_all": 12.0, "flag_block": 1.0},
        "block",
        ("RULE_HARD", "GREEN_CHANNEL"),
    ),
]


@pytest.mark.parametrize(
    ("score", "changes", "decision", "codes"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_precedence(
    policy: Policy,
    score: float | None,
    changes: dict[str, Any],
    decision: str,
    codes: tuple[str, ...],
) -> None:
    outcome = run(policy, score, **changes)

    assert outcome.decision is Decision(decision)
    assert outcome.codes == codes
    if outcome.decision is not Decision.APPROVE:
        assert outcome.approved_amount == 0  # nothing is paid before a person decides


def test_green_channel_review_threshold_is_capped_by_the_block_threshold(policy: Policy) -> None:
    # new_accounts: review 0.2, block 0.6; green would raise review to 0.5 - below 0.6.
    outcome = run(policy, 0.49, user_orders_all=12.0, account_age_days=3.0)

    assert outcome.decision is Decision.APPROVE
    assert "review threshold 0.5" in outcome.reasons[0].message


# --- money --------------------------------------------------------------------------------


def membership(**changes: Any) -> dict[str, Any]:
    return {
        "product_type": "membership",
        "order_amount": 30.0,
        "service_days": 30,
        "reason": "partial_use",
        **changes,
    }


@pytest.mark.parametrize(
    ("changes", "decision", "paid", "codes"),
    [
        # 30.00 x (30 - 10) / 30 - 1.00 fee = 19.00
        (membership(amount=19.0, order_days_used_seen=10.0), "approve", "19.00", ()),
        (membership(amount=25.0, order_days_used_seen=10.0), "approve", "19.00", ("PRORATED_CAP",)),
        # min_charged_days: nothing seen still charges one day: 30 x 29 / 30 - 1 = 28.00
        (membership(amount=30.0, order_days_used_seen=0.0), "approve", "28.00", ("PRORATED_CAP",)),
        # to the nearest cent: 10.00 x 2 / 3 = 6.666.. -> 6.67, minus the fee
        (
            membership(amount=9.0, order_amount=10.0, service_days=3, order_days_used_seen=1.0),
            "approve",
            "5.67",
            ("PRORATED_CAP",),
        ),
        # all days used: nothing to refund, a person tells the buyer
        (
            membership(amount=5.0, order_days_used_seen=30.0),
            "review",
            "0.00",
            ("PRORATED_CAP", "NOTHING_REFUNDABLE"),
        ),
        (
            membership(amount=5.0, order_days_used_seen=None),
            "review",
            "0.00",
            ("ENTITLEMENT_UNKNOWN",),
        ),
        (membership(amount=5.0, service_days=None), "review", "0.00", ("ENTITLEMENT_UNKNOWN",)),
        # a reason outside prorated.reasons: capped at the price only
        (
            membership(amount=30.0, order_days_used_seen=10.0, reason="not_delivered"),
            "approve",
            "30.00",
            (),
        ),
        ({"amount": 60.0, "order_amount": 50.0}, "approve", "50.00", ("AMOUNT_ABOVE_PAID",)),
        ({"order_amount": None}, "review", "0.00", ("ENTITLEMENT_UNKNOWN",)),
    ],
)
def test_money(
    policy: Policy, changes: dict[str, Any], decision: str, paid: str, codes: tuple[str, ...]
) -> None:
    outcome = run(policy, 0.0, **changes)

    assert outcome.decision is Decision(decision)
    assert outcome.approved_amount == Decimal(paid)
    assert outcome.approved_cents == int(Decimal(paid) * 100)
    assert outcome.codes == codes
    assert all(r.kind is ReasonKind.POLICY for r in outcome.reasons)


def test_the_cap_explains_itself(policy: Policy) -> None:
    outcome = run(policy, 0.0, **membership(amount=25.0, order_days_used_seen=10.0))

    assert outcome.reasons[0].message == (
        "asked 25.00, the prorated entitlement is 19.00 (price 30.00, 10 of 30 days charged "
        "as used, fee 1.00); at most 19.00 can be paid"
    )


# --- queues, versions, explanations -------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "queue", "hours"),
    [
        ({}, "ordinary", 24),
        ({"reason": "not_as_described"}, "disputes", 48),
        ({"reason": "not_as_described", "flag_review": 1.0}, "special", 4),  # the rule's queue
    ],
)
def test_review_queues_and_deadlines(
    policy: Policy, changes: dict[str, Any], queue: str, hours: int
) -> None:
    outcome = run(policy, 0.5, **changes)

    assert outcome.review is not None
    assert outcome.review.queue == queue
    assert outcome.review.due_at == NOW + timedelta(hours=hours)
    assert outcome.review.due_at_us == int((NOW + timedelta(hours=hours)).timestamp()) * 10**6


def test_an_outcome_records_what_made_it(policy: Policy) -> None:
    outcome = run(policy, 0.1)

    assert outcome.review is None
    assert outcome.policy_version == "test-1"
    assert outcome.policy_hash == policy.sha256
    assert outcome.model_version == "m1"
    assert outcome.decided_at == NOW
    assert outcome.approved_cents == 5000
    assert outcome.decision is Decision.APPROVE


def test_decided_at_must_say_its_zone(policy: Policy) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(base(), {}, 0.1, policy, decided_at=datetime(2026, 3, 1))


def test_missing_inputs_are_degraded_never_approved(policy: Policy) -> None:
    row = base()
    del row["account_age_days"]

    outcome = decide(row, {}, 0.0, policy, decided_at=NOW)

    assert outcome.decision is Decision.REVIEW
    assert outcome.codes == ("DEGRADED",)
    assert "account_age_days" in outcome.reasons[0].message


def test_top_contributions_become_sentences() -> None:
    starter = load_with_catalogue(STARTER_POLICY)
    row = base(user_refunds_7d=1.0, order_earlier_refunds=0.0, account_age_days=12.5)

    outcome = decide(
        row,
        {},
        0.4,
        starter,
        decided_at=NOW,
        contributions={
            "user_refunds_7d": 0.9,
            "account_age_days": 1.4,
            "order_earlier_refunds": 0.2,
            "user_orders_all": -2.0,  # pushed towards honest: not a reason to hold
        },
    )

    model = [r for r in outcome.reasons if r.feature is not None]
    assert [(r.code, r.feature, r.value, r.contribution) for r in model] == [
        ("MODEL_ACCOUNT_AGE_DAYS", "account_age_days", 12.5, 1.4),
        ("MODEL_USER_REFUNDS_7D", "user_refunds_7d", 1.0, 0.9),
        ("MODEL_ORDER_EARLIER_REFUNDS", "order_earlier_refunds", 0.0, 0.2),
    ]
    assert model[1].message == (
        "Refund requests of the user in the 7 days before the request's day, and on that day "
        "before the request: 1; this raised the risk score (+0.90)"
    )
    assert model[0].as_dict()["contribution"] == 1.4


class FakeScorer:
    version = "fake-1"

    def __init__(self, score: float, fail: bool = False) -> None:
        self.value = score
        self.fail = fail
        self.contribution_calls = 0

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), self.value)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"flag_review": np.ones(len(frame))})

    def score_one(self, row: Mapping[str, object]) -> float:
        if self.fail:
            raise RuntimeError("corrupt bundle")
        return self.value

    def contributions_one(self, row: Mapping[str, object]) -> dict[str, float]:
        self.contribution_calls += 1
        return {"flag_review": 0.5}


def test_the_scorer_helper(policy: Policy) -> None:
    low, high = FakeScorer(0.1), FakeScorer(0.5)

    approved = decide_with_scorer(low, base(), {}, policy, decided_at=NOW)
    reviewed = decide_with_scorer(high, base(), {}, policy, decided_at=NOW)

    assert (approved.decision, approved.model_version, low.contribution_calls) == (
        Decision.APPROVE,
        "fake-1",
        0,  # contributions are paid for only where a person reads them
    )
    assert reviewed.decision is Decision.REVIEW
    assert reviewed.codes == ("MODEL_SCORE_REVIEW", "MODEL_FLAG_REVIEW")
    assert high.contribution_calls == 1


@pytest.mark.parametrize("scorer", [None, FakeScorer(0.1, fail=True)])
def test_no_model_or_a_broken_one_is_a_degraded_review(
    policy: Policy, scorer: FakeScorer | None
) -> None:
    outcome = decide_with_scorer(scorer, base(), {}, policy, decided_at=NOW)

    assert outcome.decision is Decision.REVIEW
    assert outcome.codes == ("DEGRADED",)
    assert outcome.score is None


def test_request_fields_from_domain_objects() -> None:
    request = RefundRequest(
        request_id="r1",
        order_id="o1",
        user_id="u1",
        requested_at="2026-02-01T00:00:00Z",
        amount="12.34",
        reason="partial_use",
        days_used_claimed=3,
    )
    order = Order(
        order_id="o1",
        user_id="u1",
        product_type="membership",
        amount="30.00",
        paid_at="2026-01-01T00:00:00Z",
        service_days=30,
        payment_account="p9",
    )

    fields = request_fields(request, order)

    assert set(fields) == set(REQUEST_FIELDS)
    assert fields["amount"] == 12.34  # currency units, not cents
    assert fields["order_amount"] == 30.0
    assert (fields["reason"], fields["product_type"]) == ("partial_use", "membership")
    assert (fields["service_days"], fields["payment_account"]) == (30, "p9")


# --- properties: monotone, and the frame engine equal to the row engine -------------------

ROWS = st.fixed_dictionaries(
    {
        "user_id": st.sampled_from(["u1", "u_bad", "u_good"]),
        "device_id": st.sampled_from(["d1", "d_bad", "d_good", None]),
        "ip": st.sampled_from(["ip1", "ip_bad", None]),
        "payment_account": st.sampled_from(["p1", "p_bad", None]),
        "reason": st.sampled_from(["not_delivered", "partial_use", "unused", "not_as_described"]),
        "product_type": st.sampled_from(["card_code", "membership"]),
        "amount": st.sampled_from([0.01, 5.0, 30.0, 99.99, 100.0, 299.99, 300.0, 1000.0]),
        "order_amount": st.sampled_from([None, 10.0, 30.0, 300.0]),
        "service_days": st.sampled_from([None, 1, 30, 365]),
        "order_days_used_seen": st.sampled_from([None, 0.0, 1.0, 15.0, 400.0]),
        "account_age_days": st.sampled_from([None, 0.5, 6.99, 7.0, 500.0]),
        "user_orders_all": st.sampled_from([0.0, 9.0, 10.0, math.nan]),
        "flag_block": st.sampled_from([0.0, 1.0, None]),
        "flag_review": st.sampled_from([0.0, 1.0]),
        "flag_approve": st.sampled_from([0.0, 1.0]),
        "flag_light": st.sampled_from([0.0, 1.0]),
    }
)
SCORES = st.one_of(st.none(), st.floats(0.0, 1.0), st.just(math.nan))


@settings(max_examples=300, deadline=None)
@given(changes=ROWS, low=st.floats(0.0, 1.0), high=st.floats(0.0, 1.0))
def test_raising_the_score_never_softens_the_decision(
    policy: Policy, changes: dict[str, Any], low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)

    before = run(policy, low, **changes).decision
    after = run(policy, high, **changes).decision

    assert after.severity >= before.severity


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(st.tuples(ROWS, SCORES), min_size=1, max_size=15))
def test_the_frame_engine_equals_the_row_engine(
    policy: Policy, rows: list[tuple[dict[str, Any], float | None]]
) -> None:
    full = [base(request_id=f"r{i}", **changes) for i, (changes, _) in enumerate(rows)]
    scores = [score for _, score in rows]
    frame = pd.DataFrame(full)

    assert_engines_agree(frame, scores, policy, full)


def assert_engines_agree(
    frame: pd.DataFrame,
    scores: list[float | None] | np.ndarray,
    policy: Policy,
    rows: list[dict[str, Any]],
) -> None:
    table = decide_frame(frame, np.array(scores, dtype=float), policy, decided_at=NOW)
    assert table.index.equals(frame.index)
    for row, score, (_, got) in zip(rows, scores, table.iterrows(), strict=True):
        one = decide(row, {}, score, policy, decided_at=NOW)
        assert got["decision"] == one.decision.value, row
        assert got["approved_cents"] == one.approved_cents, row
        assert got["reason_codes"] == one.codes, row
        assert got["review_queue"] == (one.review.queue if one.review else None), row
        assert got["review_due_at"] == (one.review.due_at_us if one.review else -1), row
        assert (np.isnan(got["score"]) and one.score is None) or got["score"] == one.score


def test_the_frame_needs_every_column(policy: Policy) -> None:
    frame = pd.DataFrame([base()]).drop(columns=["flag_light"])

    with pytest.raises(KeyError, match="flag_light"):
        decide_frame(frame, [0.1], policy, decided_at=NOW)


def test_the_starter_policy_on_the_sample_data_agrees_row_by_row() -> None:
    """Real features of every sample request, decided both ways with scores spread over
    [0, 1]: the starter rules fire on real data and both engines give the same answers."""
    history = features.load_history("data/sample")
    table = features.build_features(history)
    requests = history.refund_requests.set_index("request_id")
    orders = history.orders.set_index("order_id")
    order = orders.loc[requests["order_id"].to_numpy()]
    frame = table.copy()
    for name in ("order_id", "user_id", "device_id", "ip", "channel"):
        frame[name] = requests[name].to_numpy(dtype=object)
    frame["request_id"] = table.index.to_numpy(dtype=object)
    frame["amount"] = requests["amount"].to_numpy(dtype=float) / 100  # store cents -> units
    frame["service_days"] = pd.to_numeric(order["service_days"]).to_numpy(dtype=float)
    frame["payment_account"] = order["payment_account"].to_numpy(dtype=object)
    starter = load_with_catalogue(STARTER_POLICY)
    assert required_fields(starter) <= set(frame.columns)
    scores = np.random.default_rng(5).random(len(frame))
    scores[::50] = np.nan

    decided = decide_frame(frame, scores, starter, decided_at=NOW)

    fired = {c for codes in decided["reason_codes"] for c in codes}
    assert {"RULE_DUPLICATE_REFUND", "RULE_REDEEMED_THEN_INVALID", "PRORATED_CAP"} <= fired
    assert set(decided["decision"]) == {"approve", "review", "block"}
    fields = policy_fields()
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.reset_index(drop=True).to_dict("records")
    ]
    assert all(name in fields for name in frame.columns)
    assert_engines_agree(frame, scores, starter, rows)


def test_a_block_threshold_of_one_means_the_model_never_blocks() -> None:
    text = POLICY.replace("  block: 0.80\n", "  block: 1.0\n", 1)
    never = parse_policy(text, {**REQUEST_FIELDS, **FEATURES})
    certain = run(never, 1.0, user_orders_all=0.0)

    assert certain.decision is Decision.REVIEW
    assert certain.codes == ("MODEL_SCORE_REVIEW",)
    full = [base(request_id=f"r{i}") for i in range(3)]
    assert_engines_agree(pd.DataFrame(full), [0.2, 0.99, 1.0], never, full)
