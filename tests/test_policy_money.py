"""Money first in the reports of ``riskmodel backtest`` and ``riskmodel tune``.

A small hand-built history, a hand-written policy (a block list, two block rules, a pair of
thresholds) and a model whose scores are written down per request: every request's
decision, what it is paid and what blocked it are known in advance, so the money figures
are summed here from that table, independently of the code under test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

import features
import training.policy_commands
from features.policy_fields import load_with_catalogue
from riskmodel.cli import main
from riskmodel.engine import decide_frame
from riskmodel.errors import DataError
from riskmodel.policy import Policy
from training.backtest import backtest, block_causes, blocks_by_cause, engine_frame
from training.dataset import load_ground_truth
from training.tune import Constraints, grid, tune_period, tuning_period, with_thresholds

DUP, BIG, LIST, MODEL = (
    "RULE_CLAIMED_DUPLICATE",
    "RULE_BIG_CLAIM",
    "LIST_BLOCK_USER",
    "MODEL_SCORE_BLOCK",
)
# request, user, score, reason, asked, price, abusive, decision, paid, blocked by
# Under POLICY: review from 0.5, block from 0.9; block list: user ub; RULE_CLAIMED_DUPLICATE
# (DUP) blocks "duplicate_charge" claims, RULE_BIG_CLAIM (BIG) anything asking 100 or more.
CASES = [
    ("r01", "u1", 0.10, "not_delivered", 20.00, 20.00, True, "approve", 20.00, None),
    # Asks more than was paid: approved up to the price, and that is what abuse is paid.
    ("r02", "u1", 0.20, "not_delivered", 30.00, 25.00, True, "approve", 25.00, None),
    ("r03", "u2", 0.60, "other", 40.00, 40.00, True, "review", 0.0, None),
    ("r04", "u2", 0.95, "other", 15.00, 15.00, False, "block", 0.0, MODEL),
    ("r05", "u3", 0.10, "duplicate_charge", 12.00, 12.00, False, "block", 0.0, DUP),
    # Both rules and the model would block: the first rule of the file is the cause.
    ("r06", "u3", 0.95, "duplicate_charge", 150.00, 150.00, False, "block", 0.0, DUP),
    # The block list comes before every rule.
    ("r07", "ub", 0.95, "other", 200.00, 200.00, False, "block", 0.0, LIST),
    ("r08", "u4", 0.10, "other", 50.00, 50.00, False, "approve", 50.00, None),
    ("r09", "u4", 0.70, "other", 60.00, 60.00, False, "review", 0.0, None),
    ("r10", "u5", 0.20, "other", 120.00, 120.00, True, "block", 0.0, BIG),
    ("r11", "u5", 0.05, "other", 10.00, 10.00, False, "approve", 10.00, None),
]
SCORES = {case[0]: case[2] for case in CASES}

POLICY = """\
version: money-1
thresholds:
  review: 0.5
  block: 0.9
rules:
  - name: claimed_duplicate
    code: RULE_CLAIMED_DUPLICATE
    action: block
    when: reason == 'duplicate_charge'
    message: A duplicate charge is refunded by the payments team, not here.
  - name: big_claim
    code: RULE_BIG_CLAIM
    action: block
    when: amount >= 100
    message: Large claims are refused.
lists:
  block:
    users: [ub]
review:
  default_queue: ordinary
  queues:
    - name: ordinary
      deadline_hours: 24
"""


class Listed:
    """A model whose score for each request is written down in ``SCORES``."""

    version = "listed-1"
    training_window = SimpleNamespace(until="2026-01-01T00:00:00+00:00", maturity_days=0.0)

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array([SCORES[r] for r in frame["request_id"]], dtype=float)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"amount": frame["amount"].astype(float)}, index=frame.index)

    def score_one(self, row: Mapping[str, object]) -> float:
        return SCORES[str(row["request_id"])]

    def contributions_one(self, row: Mapping[str, object]) -> dict[str, float]:
        return {"amount": float(row["amount"])}  # type: ignore[arg-type]


def write_history(directory: Path, ground_truth: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    users = sorted({case[1] for case in CASES})
    pd.DataFrame(
        {"user_id": users, "registered_at": "2025-06-01T00:00:00Z", "phone_verified": "true"}
    ).to_csv(directory / "users.csv", index=False)
    orders, requests = [], []
    for i, (request, user, _, reason, asked, price, *_) in enumerate(CASES):
        orders.append(
            {
                "order_id": f"o{i:02d}",
                "user_id": user,
                "product_type": "card_code",
                "amount": f"{price:.2f}",
                "paid_at": f"2026-03-{i + 1:02d}T10:00:00Z",
            }
        )
        requests.append(
            {
                "request_id": request,
                "order_id": f"o{i:02d}",
                "user_id": user,
                "requested_at": f"2026-03-{i + 1:02d}T12:00:00Z",
                "amount": f"{asked:.2f}",
                "reason": reason,
            }
        )
    pd.DataFrame(orders).to_csv(directory / "orders.csv", index=False)
    pd.DataFrame(columns=["order_id", "used_at"]).to_csv(directory / "usage.csv", index=False)
    pd.DataFrame(requests).to_csv(directory / "refund_requests.csv", index=False)
    # Labels agree with the truth on the abusive requests and one honest one; the rest
    # are unlabelled, which counts as honest.
    labelled = [c for c in CASES if c[6]] + [CASES[7]]
    pd.DataFrame(
        {
            "request_id": [c[0] for c in labelled],
            "is_abuse": ["true" if c[6] else "false" for c in labelled],
            "labeled_at": "2026-03-28T00:00:00Z",
            "source": "review",
        }
    ).to_csv(directory / "labels.csv", index=False)
    if ground_truth:
        pd.DataFrame(
            {
                "request_id": [c[0] for c in CASES],
                "is_abuse": [c[6] for c in CASES],
                "pattern": ["hand" for _ in CASES],
            }
        ).to_parquet(directory / "ground_truth.parquet")
    return directory


def expected(cases: list[tuple[Any, ...]] = CASES) -> dict[str, Any]:
    """The money figures, summed from the hand-written table."""
    abusive = [c for c in cases if c[6]]
    honest = [c for c in cases if not c[6]]
    blocked = [c for c in honest if c[7] == "block"]
    by_cause: dict[str, tuple[int, float]] = {}
    for c in blocked:
        count, amount = by_cause.get(c[9], (0, 0.0))
        by_cause[c[9]] = (count + 1, round(amount + c[4], 2))
    paid = sum(c[8] for c in abusive)
    abusive_asked = sum(c[4] for c in abusive)
    honest_asked = sum(c[4] for c in honest)
    held = sum(c[4] for c in honest if c[7] != "approve")
    return {
        "paid_to_abuse": paid,
        "paid_to_abuse_share": paid / abusive_asked,
        "honest_held_amount": held,
        "honest_held_amount_share": held / honest_asked,
        "honest_blocked": len(blocked),
        "honest_block_rate": len(blocked) / len(honest),
        "honest_blocked_amount": sum(c[4] for c in blocked),
        "by_cause": by_cause,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_history(tmp_path_factory.mktemp("money") / "history")


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "money.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture(scope="module")
def policy(policy_file: Path) -> Policy:
    return load_with_catalogue(policy_file)


@pytest.fixture(scope="module")
def history(data: Path) -> features.History:
    return features.load_history(data)


@pytest.fixture
def listed_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands load ``Listed`` whatever model they are asked for."""

    class Registry:
        def __init__(self, root: object = None) -> None:
            pass

        def load(self, version: str, expect: object = None) -> Listed:
            return Listed()

    monkeypatch.setattr(training.policy_commands, "Registry", Registry)


def current_policy(tmp_path: Path) -> Policy:
    """The policy in service: no duplicate-claim rule, and blocks from 0.99."""
    text = POLICY.replace("version: money-1", "version: money-0")
    text = text.replace("  block: 0.9\n", "  block: 0.99\n")
    text = text.replace(
        "    when: reason == 'duplicate_charge'\n",
        "    when: reason == 'duplicate_charge'\n    enabled: false\n",
    )
    path = tmp_path / "current.yaml"
    path.write_text(text)
    return load_with_catalogue(path)


# What the policy in service decides differently from CASES: r04 is only reviewed, r05 is
# approved (the duplicate-claim rule is off), r06 is blocked by the big-claim rule.
CURRENT = [
    {
        "r04": (*c[:7], "review", 0.0, None),
        "r05": (*c[:7], "approve", 12.00, None),
        "r06": (*c[:7], "block", 0.0, "RULE_BIG_CLAIM"),
    }.get(c[0], c)
    for c in CASES
]


# --- the backtest ---------------------------------------------------------------------------


def test_the_hand_built_cases_decide_as_written(history: features.History, policy: Policy) -> None:
    frame = engine_frame(history)
    decided = decide_frame(frame, Listed().score(frame), policy, decided_at=datetime.now(UTC))

    causes = block_causes(decided, policy)

    by_id = dict(
        zip(frame["request_id"], zip(decided["decision"], causes, strict=True), strict=True)
    )
    assert by_id == {c[0]: (c[7], c[9]) for c in CASES}
    paid = dict(zip(frame["request_id"], decided["approved_cents"] / 100, strict=True))
    assert paid == pytest.approx({c[0]: c[8] for c in CASES})


@pytest.mark.parametrize("truth", [True, False], ids=["ground truth", "labels"])
def test_the_backtest_money_figures_are_the_hand_sums(
    data: Path, history: features.History, policy: Policy, tmp_path: Path, truth: bool
) -> None:
    result = backtest(
        history,
        policy,
        Listed(),
        against=current_policy(tmp_path),
        ground_truth=load_ground_truth(data) if truth else None,
    )

    assert result.judged_against == ("ground truth" if truth else "labels (unlabelled as honest)")
    for name, cases in (("new", CASES), ("current", CURRENT)):
        want = expected(cases)
        got = result.summary[name]
        for key, value in want.items():
            if key != "by_cause":
                assert got[key] == pytest.approx(value), (name, key)
        blocks = result.blocks[name]
        split = {
            str(cause): (int(row["honest_blocked"]), round(float(row["honest_blocked_amount"]), 2))
            for cause, row in blocks.iterrows()
            if row["honest_blocked"] > 0
        }
        assert split == want["by_cause"]
        # The split adds up, honest and abusive blocks alike.
        assert blocks["honest_blocked"].sum() == got["honest_blocked"]
        assert blocks["honest_blocked_amount"].sum() == pytest.approx(got["honest_blocked_amount"])
        assert blocks["abuse_blocked"].sum() == got["abuse_blocked"]
    assert expected()["by_cause"] == {MODEL: (1, 15.0), DUP: (2, 162.0), LIST: (1, 200.0)}
    assert result.decisions.loc["r06", "blocked_by"] == "RULE_CLAIMED_DUPLICATE"
    assert result.decisions.loc["r06", "current_blocked_by"] == "RULE_BIG_CLAIM"


def test_blocks_by_cause_by_hand() -> None:
    causes = np.array([None, "RULE_A", "MODEL_SCORE_BLOCK", "RULE_A", None], dtype=object)
    amount = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    is_abuse = np.array([False, False, False, True, True])

    table = blocks_by_cause(causes, amount, is_abuse)

    assert table.to_dict("index") == {
        "RULE_A": {
            "honest_blocked": 1,
            "honest_blocked_amount": 2.0,
            "abuse_blocked": 1,
            "abuse_blocked_amount": 8.0,
        },
        "MODEL_SCORE_BLOCK": {
            "honest_blocked": 1,
            "honest_blocked_amount": 4.0,
            "abuse_blocked": 0,
            "abuse_blocked_amount": 0.0,
        },
    }


def money_block(printed: str) -> list[str]:
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("money first"))
    end = next(i for i, line in enumerate(lines) if line.startswith("rates and counts"))
    return lines[start:end]


def test_the_backtest_command_prints_the_money_first_and_reports_it(
    data: Path,
    policy_file: Path,
    tmp_path: Path,
    listed_registry: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    current_policy(tmp_path)
    out = tmp_path / "report"

    code = main(
        [
            "backtest",
            "--from",
            str(data),
            "--policy",
            str(policy_file),
            "--against",
            str(tmp_path / "current.yaml"),
            "--out",
            str(out),
        ]
    )

    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = printed.splitlines()
    # The money comes right after the opening line, before any rate.
    assert lines[1].startswith("money first")
    assert printed.index("abusive money paid") < printed.index("approve_rate")
    new, current = expected(CASES), expected(CURRENT)
    block = money_block(printed)
    assert "new money-1" in block[0]
    assert "current money-0" in block[0]
    rows = {line[:42].strip(): line[42:].split() for line in block[1:]}
    assert rows["abusive money paid (of abusive asked)"] == [
        "45.00",
        f"({new['paid_to_abuse_share']:.2%})",
        "45.00",
        f"({current['paid_to_abuse_share']:.2%})",
    ]
    assert rows["honest money held (reviewed/blocked)"][0] == f"{new['honest_held_amount']:,.2f}"
    assert rows["honest requests blocked (of honest)"] == [
        "4",
        f"({4 / 7:.2%})",
        "2",
        f"({2 / 7:.2%})",
    ]
    assert rows["honest money blocked"][0] == "377.00"
    assert rows["by RULE_CLAIMED_DUPLICATE"] == ["2", "(162.00)", "0"]
    assert rows["by LIST_BLOCK_USER"] == ["1", "(200.00)", "1", "(200.00)"]
    assert rows["by MODEL_SCORE_BLOCK"] == ["1", "(15.00)", "0"]
    assert rows["by RULE_BIG_CLAIM"] == ["0", "1", "(150.00)"]

    document = json.loads((out / "report.json").read_text())
    assert [p["role"] for p in document["policies"]] == ["new", "current"]
    first = document["policies"][0]
    assert list(first)[:4] == ["role", "name", "money", "blocked_by"]  # money before rates
    assert first["money"]["paid_to_abuse"] == 45.0
    assert first["money"]["honest_blocked"] == 4
    assert first["money"]["honest_held_amount"] == pytest.approx(new["honest_held_amount"])
    assert {b["cause"]: b["honest_blocked"] for b in first["blocked_by"]} == {
        "RULE_CLAIMED_DUPLICATE": 2,
        "LIST_BLOCK_USER": 1,
        "MODEL_SCORE_BLOCK": 1,
        "RULE_BIG_CLAIM": 0,  # it blocks the abusive r10 only
    }
    assert document["changes"]["moves"] == {"approve -> block": 1, "review -> block": 1}
    markdown = (out / "report.md").read_text()
    assert markdown.index("## Money") < markdown.index("## Rates and counts")
    assert "| abusive money paid (of abusive asked) | 45.00 (21.43%) | 45.00 (21.43%) |" in markdown


# --- tuning ---------------------------------------------------------------------------------


def test_the_tuning_split_by_cause_is_what_the_engine_decides(
    history: features.History, policy: Policy, data: Path
) -> None:
    period = tuning_period(history, Listed(), ground_truth=load_ground_truth(data))
    # Every pair on a 0.05 grid (0.95, r04's score and r06's, among the levels).
    result = tune_period(period, policy, Constraints(max_reviews_per_day=10), levels=grid(0.05))

    assert len(result.table) == 190
    for _, row in result.table.iterrows():
        patched = with_thresholds(policy, row["review"], row["block"])
        decided = decide_frame(period.frame, period.scores, patched, decided_at=datetime.now(UTC))
        want = blocks_by_cause(block_causes(decided, patched), period.amount, period.is_abuse)
        got = result.blocks(row)
        for column in ("honest_blocked", "abuse_blocked"):
            assert got[column].to_dict() == want[column].to_dict(), (row["review"], row["block"])
        assert got["honest_blocked"].sum() == row["honest_blocked"]
        assert got["honest_blocked_amount"].sum() == pytest.approx(row["honest_blocked_amount"])


def test_the_ceiling_on_honest_blocks_excludes_the_pairs_above_it(
    history: features.History, policy: Policy, data: Path
) -> None:
    period = tuning_period(history, Listed(), ground_truth=load_ground_truth(data))
    # Reviews are scarce, so without a ceiling blocking r04 (honest, score 0.95) pays off.
    loose = tune_period(
        period, policy, Constraints(max_reviews_per_day=0.2, max_honest_blocked_share=1.0)
    )
    assert loose.proposal.feasible
    assert loose.proposal.row["honest_blocked"] > 3

    # The list and the rules block three honest requests whatever the pair.
    for ceiling in (
        Constraints(max_reviews_per_day=0.2, max_honest_blocked_share=1.0, max_honest_blocks=3),
        Constraints(
            max_reviews_per_day=0.2, max_honest_blocked_share=1.0, max_honest_block_rate=3 / 7
        ),
    ):
        result = tune_period(period, policy, ceiling)
        proposal = result.proposal
        assert proposal.feasible
        assert proposal.row["honest_blocked"] == 3
        assert proposal.block > 0.95  # r04 is no longer blocked
        fits = result.table["honest_blocked"] <= 3
        assert proposal.candidates == int(
            (fits & (result.table["reviews_per_day_mean"] <= 0.2)).sum()
        )
        assert proposal.candidates < loose.proposal.candidates

    result = tune_period(period, policy, Constraints(max_reviews_per_day=10, max_honest_blocks=2))
    assert not result.proposal.feasible
    assert [v.constraint for v in result.proposal.violations] == ["max_honest_blocks"]
    assert result.proposal.best["max_honest_blocks"] == 3
    assert result.fixed_blocks["honest_blocked"].sum() == 3


def test_bad_ceilings_say_what_is_wrong() -> None:
    with pytest.raises(DataError, match="max_honest_blocks is a number of honest requests"):
        Constraints(max_reviews_per_day=5, max_honest_blocks=-1)
    with pytest.raises(DataError, match="whole number"):
        Constraints(max_reviews_per_day=5, max_honest_blocks=1.5)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="max_honest_block_rate is a share"):
        Constraints(max_reviews_per_day=5, max_honest_block_rate=1.5)


def test_the_tune_command_money_first_ceiling_and_status_3(
    data: Path,
    policy_file: Path,
    tmp_path: Path,
    listed_registry: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = ["tune", "--from", str(data), "--policy", str(policy_file), "--since", "2026-03-01"]
    out, written = tmp_path / "tune", tmp_path / "tuned.yaml"
    limits = ["--max-reviews-per-day", "0.2", "--max-honest-blocked-share", "1"]

    code = main(
        [
            *source,
            *limits,
            "--max-honest-blocks",
            "3",
            "--out",
            str(out),
            "--write-policy",
            str(written),
        ]
    )

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "honest requests blocked <= 3" in printed
    assert (
        printed.index("money first")
        < printed.index("rates and counts")
        < printed.index("review_rate")
    )
    rows = {line[:42].strip(): line[42:].split() for line in money_block(printed)[1:]}
    # The policy's own pair (0.5 / 0.9) blocks r04; the proposal does not.
    assert rows["honest requests blocked (of honest)"] == [
        "4",
        f"({4 / 7:.2%})",
        "3",
        f"({3 / 7:.2%})",
    ]
    assert rows["by MODEL_SCORE_BLOCK"] == ["1", "(15.00)", "0"]
    assert rows["by RULE_CLAIMED_DUPLICATE"] == ["2", "(162.00)", "2", "(162.00)"]
    assert load_with_catalogue(written).spec.thresholds.block > 0.95
    document = json.loads((out / "report.json").read_text())
    assert document["feasible"] is True
    assert document["constraints"]["max_honest_blocks"] == 3
    assert [p["role"] for p in document["pairs"]] == ["current", "proposed"]
    assert document["pairs"][1]["money"]["honest_blocked"] == 3
    assert document["pairs"][0]["money"]["paid_to_abuse"] == 45.0
    table = pd.read_csv(out / "tradeoff.csv")
    assert list(table.columns[3:7]) == [
        "paid_to_abuse",
        "paid_to_abuse_share",
        "honest_held_amount",
        "honest_held_amount_share",
    ]

    missed = tmp_path / "missed.yaml"
    code = main(
        [
            *source,
            *limits,
            "--max-honest-blocks",
            "2",
            "--out",
            str(out),
            "--write-policy",
            str(missed),
        ]
    )

    printed = capsys.readouterr().out
    assert code == 3
    assert "NO threshold pair meets every constraint" in printed
    assert "max_honest_blocks: 3 against a limit of 2" in printed
    assert f"3 honest requests are blocked whatever the pair: {DUP} 2, {LIST} 1" in printed
    assert not missed.exists()
    assert json.loads((out / "report.json").read_text())["feasible"] is False

    code = main([*source, *limits, "--max-honest-block-rate", "0.25", "--out", str(out)])
    assert code == 3
    assert "honest requests blocked (of honest requests) <= 25.000%" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-honest-blocks", "-1", "must be 0 or more"),
        ("--max-honest-blocks", "2.5", "is not a whole number"),
        ("--max-honest-blocks", "many", "is not a whole number"),
        ("--max-honest-block-rate", "-0.1", "share of the honest requests"),
        ("--max-honest-block-rate", "2", "share of the honest requests"),
        ("--max-honest-block-rate", "nan", "share of the honest requests"),
    ],
)
def test_bad_ceilings_on_the_command_line(
    data: Path,
    policy_file: Path,
    option: str,
    value: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "tune",
                "--from",
                str(data),
                "--policy",
                str(policy_file),
                "--max-reviews-per-day",
                "3",
                f"{option}={value}",
            ]
        )

    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert option in error
    assert message in error
