"""``riskmodel shadow report``: the challenger's decision is the engine's with the
challenger's score; disagreements, money, precision, recall and AP on a store whose
figures are worked out by hand below, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from features.policy_fields import load_with_catalogue
from riskmodel import units
from riskmodel.cli import main
from riskmodel.domain import Decision
from riskmodel.engine import REQUEST_FIELDS, Reason, ReasonKind, decide
from riskmodel.ingest import ingest
from riskmodel.policy import Kind, Policy, parse_policy
from riskmodel.store import decisions
from training.shadow import StoredDecision, decision_with, render, shadow_report

from .conftest import write_tables

# --- the challenger's decision is the engine's -------------------------------------------

ENGINE_POLICY = """\
version: shadow-engine
thresholds:
  review: 0.30
  block: 0.80
  segments:
    - {name: new_accounts, account_age_below_days: 7, review: 0.20, block: 0.60}
    - {name: large, amount_from: 300, review: 0.10, block: 0.50}
    - {name: members, product_types: [membership], review: 0.40, block: 1.0}
rules:
  - {name: hard, code: RULE_HARD, action: block, when: flag_block == 1, message: hard}
  - {name: soft, code: RULE_SOFT, action: review, when: flag_review == 1, message: soft}
  - {name: trusted, code: RULE_TRUSTED, action: approve, when: flag_approve == 1, message: ok}
  - {name: light, code: RULE_LIGHT, action: review, when: flag_light == 1, message: light}
lists:
  block: {users: [u_bad]}
  allow: {users: [u_good]}
review:
  default_queue: ordinary
  queues:
    - {name: ordinary, deadline_hours: 24}
prorated: {fee: 1.00, min_charged_days: 1, reasons: [partial_use, unused]}
green_channel:
  who: user_orders_all >= 10
  max_amount: 100
  review_threshold: 0.50
  exempt_rules: [light]
"""

ENGINE_FEATURES = {
    "flag_block": Kind.NUMBER,
    "flag_review": Kind.NUMBER,
    "flag_approve": Kind.NUMBER,
    "flag_light": Kind.NUMBER,
    "user_orders_all": Kind.NUMBER,
    "account_age_days": Kind.NUMBER,
    "order_days_used_seen": Kind.NUMBER,
}

NOW = datetime(2026, 3, 1, tzinfo=UTC)
HOLD = Reason("DATED_BEFORE_STORED", ReasonKind.POLICY, "dated before")
scores = st.floats(0.0, 1.0)


@pytest.fixture(scope="module")
def engine_policy() -> Policy:
    return parse_policy(ENGINE_POLICY, {**REQUEST_FIELDS, **ENGINE_FEATURES})


@settings(max_examples=400, deadline=None)
@given(
    champion=scores,
    challenger=scores,
    user=st.sampled_from(["u1", "u_bad", "u_good"]),
    flags=st.tuples(*[st.sampled_from([0.0, 1.0])] * 4),
    orders=st.sampled_from([2.0, 12.0]),
    age=st.sampled_from([None, 3.0, 100.0]),
    amount=st.sampled_from([20.0, 90.0, 150.0, 400.0]),
    product=st.sampled_from(["card_code", "membership"]),
    seen=st.sampled_from([None, 2.0, 30.0]),
    missing=st.booleans(),
    hold=st.booleans(),
)
def test_the_challengers_decision_is_the_engines_with_its_score(
    engine_policy: Policy,
    champion: float,
    challenger: float,
    user: str,
    flags: tuple[float, ...],
    orders: float,
    age: float | None,
    amount: float,
    product: str,
    seen: float | None,
    missing: bool,
    hold: bool,
) -> None:
    request = {
        "request_id": "r1",
        "order_id": "o1",
        "user_id": user,
        "device_id": "d1",
        "ip": "ip1",
        "channel": "app",
        "reason": "unused",
        "amount": amount,
        "days_used_claimed": None,
        "product_type": product,
        "order_amount": 200.0,
        "service_days": 30 if product == "membership" else None,
        "payment_account": "p1",
    }
    features: dict[str, Any] = dict(
        zip(("flag_block", "flag_review", "flag_approve", "flag_light"), flags, strict=True)
    )
    features |= {"user_orders_all": orders, "account_age_days": age, "order_days_used_seen": seen}
    if missing:
        del features["flag_light"]  # a degraded decision that still has a score
    holds = [HOLD] if hold else []

    def run(score: float) -> Decision:
        return decide(request, features, score, engine_policy, decided_at=NOW, holds=holds).decision

    stored = decide(request, features, champion, engine_policy, decided_at=NOW, holds=holds)
    kept = StoredDecision(
        reasons=tuple((r.code, r.kind.value) for r in stored.reasons),
        amount=amount,
        product_type=product,
        account_age_days=age,
    )
    assert decision_with(champion, kept, engine_policy) is stored.decision
    assert decision_with(challenger, kept, engine_policy) is run(challenger)


# --- a store worked out by hand -----------------------------------------------------------

POLICY = """\
version: shadow-test-1
thresholds:
  review: 0.30
  block: 0.80
  segments:
    - {name: large, amount_from: 300, review: 0.10, block: 0.50}
rules:
  - name: second_request
    code: RULE_SECOND_REQUEST
    action: review
    when: order_earlier_refunds >= 1
    message: another request on this order
lists:
  block: {users: [u_bad]}
review:
  default_queue: ordinary
  queues:
    - {name: ordinary, deadline_hours: 24}
prorated: {fee: 0, min_charged_days: 0, reasons: [partial_use, unused]}
"""

DAY0 = units.micros(datetime(2026, 1, 10, tzinfo=UTC))


def _at(day: int) -> str:
    return units.iso(DAY0 + day * units.DAY)


def _shadow(score: float, version: str = "m-challenger") -> str:
    return json.dumps({"model_version": version, "score": score})


# request id -> (amount asked, user, champion score, stored decision, champion approved,
# stored reason codes, shadow column, day decided, decided with the test policy).
# The challenger's decision under the policy is in the comment.
CASES: dict[
    str, tuple[str, str, float | None, str, str, tuple[str, ...], str | None, int, bool]
] = {
    # r1: 0.50 >= 0.30 -> review: the champion paid 50.00, the challenger would hold it
    "r1": ("50.00", "u1", 0.10, "approve", "50.00", (), _shadow(0.50), 1, True),
    # r2: 0.05 -> approve: the champion held 20.00, the challenger would pay it
    "r2": ("20.00", "u1", 0.40, "review", "0", ("MODEL_SCORE_REVIEW",), _shadow(0.05), 1, True),
    # r3: 0.85 -> block, as the champion
    "r3": ("30.00", "u1", 0.90, "block", "0", ("MODEL_SCORE_BLOCK",), _shadow(0.85), 2, True),
    # r4: 0.10 -> approve, as the champion
    "r4": ("40.00", "u1", 0.05, "approve", "40.00", (), _shadow(0.10), 2, True),
    # r5: 0.95 -> block where the champion reviewed
    "r5": ("60.00", "u1", 0.50, "review", "0", ("MODEL_SCORE_REVIEW",), _shadow(0.95), 3, True),
    # r6: 400.00 is the segment "large" (review 0.10): 0.15 -> review, as the champion
    # (under the default thresholds it would approve)
    "r6": ("400.00", "u1", 0.20, "review", "0", ("MODEL_SCORE_REVIEW",), _shadow(0.15), 3, True),
    # r7: the user is on the block list: block whatever the score
    "r7": ("10.00", "u_bad", 0.05, "block", "0", ("LIST_BLOCK_USER",), _shadow(0.01), 4, True),
    # r8: a review rule held: review at least; 0.90 -> block
    "r8": ("25.00", "u1", 0.05, "review", "0", ("RULE_SECOND_REQUEST",), _shadow(0.90), 4, True),
    # left out: the challenger failed; no challenger; another policy; no champion score;
    # a stored decision its reasons and score do not give; another challenger version;
    # decided before the period
    "r9": (
        "10.00",
        "u1",
        0.10,
        "approve",
        "10.00",
        (),
        '{"model_version": "m-challenger", "error": "boom"}',
        5,
        True,
    ),
    "r10": ("10.00", "u1", 0.10, "approve", "10.00", (), None, 5, True),
    "r11": ("10.00", "u1", 0.10, "approve", "10.00", (), _shadow(0.90), 5, False),
    "r12": ("10.00", "u1", None, "review", "0", ("DEGRADED",), _shadow(0.90), 5, True),
    "r13": ("10.00", "u1", 0.50, "approve", "10.00", (), _shadow(0.90), 5, True),
    "r14": ("10.00", "u1", 0.10, "approve", "10.00", (), _shadow(0.90, "m-old"), 0, True),
    "r15": ("10.00", "u1", 0.10, "approve", "10.00", (), _shadow(0.90), -1, True),
}
SINCE = DAY0  # r15 is before it
KINDS = {"MODEL": "model", "LIST": "list", "RULE": "rule"}

# Labels: r2's later verdict (honest) corrects its first; r5 has none.
LABELS = [
    ("r1", "true", 8),
    ("r2", "true", 6),
    ("r2", "false", 9),
    ("r3", "true", 8),
    ("r4", "false", 8),
    ("r6", "true", 8),
    ("r7", "true", 8),
    ("r8", "false", 8),
]


def _store(engine: Engine, database_url: str, directory: Path, policy: Policy) -> None:
    ids = list(CASES)
    tables = {
        "users": pd.DataFrame({"user_id": ["u1", "u_bad"], "registered_at": [_at(-30)] * 2}),
        "orders": pd.DataFrame(
            {
                "order_id": [f"o{r}" for r in ids],
                "user_id": [CASES[r][1] for r in ids],
                "product_type": ["card_code"] * len(ids),
                "amount": ["500.00"] * len(ids),
                "paid_at": [_at(-5)] * len(ids),
            }
        ),
        "refund_requests": pd.DataFrame(
            {
                "request_id": ids,
                "order_id": [f"o{r}" for r in ids],
                "user_id": [CASES[r][1] for r in ids],
                "requested_at": [_at(CASES[r][7]) for r in ids],
                "amount": [CASES[r][0] for r in ids],
                "reason": ["not_delivered"] * len(ids),
            }
        ),
        "labels": pd.DataFrame(
            {
                "request_id": [r for r, _, _ in LABELS],
                "is_abuse": [abuse for _, abuse, _ in LABELS],
                "labeled_at": [_at(day) for _, _, day in LABELS],
            }
        ),
    }
    ingest(write_tables(directory / "dataset", tables), database_url)
    rows = []
    for request_id, (_, _, score, decision, approved, codes, shadow, day, same) in CASES.items():
        reasons = [
            {"code": c, "kind": KINDS.get(c.split("_")[0], "policy"), "message": c} for c in codes
        ]
        rows.append(
            {
                "request_id": request_id,
                "decision": decision,
                "score": score,
                "approved_amount": units.cents(float(approved)),
                "reasons": json.dumps(reasons),
                "model_version": "m-champion",
                "policy_version": policy.version if same else "shadow-test-0",
                "policy_hash": policy.sha256 if same else "0" * 64,
                "decided_at": DAY0 + day * units.DAY + units.HOUR,
                "request_hash": "x" * 64,
                "shadow": shadow,
            }
        )
    with engine.begin() as conn:
        conn.execute(decisions.insert(), rows)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def filled(engine: Engine, database_url: str, tmp_path: Path, policy_file: Path) -> Engine:
    _store(engine, database_url, tmp_path, load_with_catalogue(policy_file))
    return engine


def test_the_figures_worked_out_by_hand(filled: Engine, policy_file: Path) -> None:
    report = shadow_report(filled, load_with_catalogue(policy_file), since=SINCE)

    assert report.decisions == 14  # r15 is before the period
    assert report.challenger_version == "m-challenger"  # it scored the latest decision
    assert report.left_out == {
        "no challenger score": 1,  # r10
        "challenger failed": 1,  # r9
        "another challenger version": 1,  # r14
        "made with another policy": 1,  # r11
        "no champion score": 1,  # r12
        "not rebuilt from its reasons": 1,  # r13
    }
    assert report.other_policies == {"shadow-test-0": 1}
    assert report.compared == 8  # r1 to r8
    assert report.champion_versions == {"m-champion": 8}
    # Rows: the champion's decision; columns: the challenger's.
    assert report.changes == {
        "approve": {"approve": 1, "review": 1, "block": 0},  # r4; r1
        "review": {"approve": 1, "review": 1, "block": 2},  # r2; r6; r5, r8
        "block": {"approve": 0, "review": 0, "block": 2},  # r3, r7
    }
    assert report.differ == 4  # r1, r2, r5, r8
    assert report.differ_asked == 50_00 + 20_00 + 60_00 + 25_00
    assert report.differ_approved == 50_00  # r1, the only one the champion paid
    assert (report.withheld, report.withheld_approved) == (1, 50_00)  # r1
    assert (report.released, report.released_asked) == (1, 20_00)  # r2

    assert (report.labelled, report.unlabelled, report.abusive) == (7, 1, 4)  # r5 unlabelled
    # Abuse: r1, r3, r6, r7. Honest: r2 (its later verdict), r4, r8.
    champion, challenger = report.champion, report.challenger
    assert champion is not None
    assert challenger is not None
    # Champion holds r2, r3, r6, r7, r8 (3 abuse), blocks r3, r7 (2 abuse).
    assert champion.held == 5
    assert champion.held_precision == pytest.approx(3 / 5)
    assert champion.held_recall == pytest.approx(3 / 4)
    assert champion.blocked == 2
    assert champion.block_precision == pytest.approx(1.0)
    assert champion.block_recall == pytest.approx(2 / 4)
    # Challenger holds r1, r3, r6, r7, r8 (4 abuse), blocks r3, r7, r8 (2 abuse).
    assert challenger.held == 5
    assert challenger.held_precision == pytest.approx(4 / 5)
    assert challenger.held_recall == pytest.approx(1.0)
    assert challenger.blocked == 3
    assert challenger.block_precision == pytest.approx(2 / 3)
    assert challenger.block_recall == pytest.approx(2 / 4)
    # AP: the precision at each abusive request, ranked by score (ties together), / 4.
    # Champion: r3 .90 (1/1), r2 .40, r6 .20 (2/3), r1 .10 (3/4), r4 r7 r8 .05 (4/7).
    assert champion.average_precision == pytest.approx((1 + 2 / 3 + 3 / 4 + 4 / 7) / 4)
    # Challenger: r8 .90, r3 .85 (1/2), r1 .50 (2/3), r6 .15 (3/4), r4, r2, r7 .01 (4/7).
    assert challenger.average_precision == pytest.approx((1 / 2 + 2 / 3 + 3 / 4 + 4 / 7) / 4)


def test_each_difference_goes_from_the_champion_to_the_challenger(
    filled: Engine, policy_file: Path
) -> None:
    # With the two scores swapped, r1 (champion approves at 0.10) and r5, r8 (champion
    # reviews, challenger blocks) would read the other way round.
    report = shadow_report(filled, load_with_catalogue(policy_file), since=SINCE)

    assert report.changes["review"]["block"] == 2
    assert report.changes["block"]["review"] == 0
    assert report.withheld_approved == 50_00
    assert report.released_asked == 20_00
    assert report.champion is not None
    assert report.challenger is not None
    assert report.champion.held_recall == pytest.approx(3 / 4)
    assert report.challenger.held_recall == pytest.approx(1.0)


def test_a_period_and_a_challenger_version_narrow_the_report(
    filled: Engine, policy_file: Path
) -> None:
    policy = load_with_catalogue(policy_file)

    early = shadow_report(filled, policy, since=SINCE, until=DAY0 + 2 * units.DAY)
    old = shadow_report(filled, policy, challenger="m-old")

    assert early.decisions == 3  # r1, r2 and r14
    assert early.compared == 2
    assert early.differ == 2
    assert old.challenger_version == "m-old"
    assert old.compared == 1  # r14: 0.90 -> block where the champion approved
    assert old.changes["approve"]["block"] == 1


def test_a_store_without_shadow_scores_says_so(
    engine: Engine, policy_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = shadow_report(engine, load_with_catalogue(policy_file))

    assert report.challenger_version is None
    assert report.compared == 0
    assert report.champion is None
    assert "no decision in the period has a challenger score" in render(report)
    assert json.loads(json.dumps(report.as_dict()))["compared"] == 0


def test_the_command_prints_the_figures(
    filled: Engine,
    database_url: str,
    policy_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["shadow", "report", "--policy", str(policy_file), "--database-url", database_url]
    since = ["--since", "2026-01-10"]

    assert main([*argv, *since]) == 0
    out = capsys.readouterr().out
    assert main([*argv, *since, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)

    assert "decide differently: 4 of 8 (50.0%)" in out
    assert "asked 155.00, champion approved 50.00" in out
    assert "champion approves, challenger holds: 1, champion paid 50.00" in out
    assert "champion holds, challenger approves: 1, asked 20.00" in out
    assert "precision (held)               0.600       0.800" in out
    assert "1 without a label" in out
    assert "    policy shadow-test-0" in out
    assert figures["differ"] == 4
    assert figures["money_where_they_differ"]["asked"] == "155.00"
    assert figures["champion"]["held_precision"] == pytest.approx(3 / 5)
    assert figures["challenger"]["held_precision"] == pytest.approx(4 / 5)
    assert figures["left_out"]["no challenger score"] == 1
