"""Policy backtests: replayed decisions, figures that add up, the requests that change."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import features
from features.policy_fields import load_with_catalogue
from riskmodel.cli import main
from riskmodel.engine import required_fields
from riskmodel.policy import STARTER_POLICY, Policy
from training.backtest import backtest, engine_frame, summarise
from training.dataset import load_ground_truth

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


class RefundCountScorer:
    """A stand-in model: the more refunds in 30 days, the riskier."""

    version = "count-1"

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.clip(frame["user_refunds_30d"].to_numpy(dtype=float) / 6, 0.0, 1.0)

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[["user_refunds_30d"]].astype(float)

    def score_one(self, row: Mapping[str, object]) -> float:
        return float(self.score(pd.DataFrame([dict(row)]))[0])

    def contributions_one(self, row: Mapping[str, object]) -> dict[str, float]:
        return {"user_refunds_30d": float(row["user_refunds_30d"])}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def history() -> features.History:
    return features.load_history(SAMPLE)


@pytest.fixture(scope="module")
def starter() -> Policy:
    return load_with_catalogue(STARTER_POLICY)


def stricter(tmp_path: Path) -> Policy:
    text = STARTER_POLICY.read_text()
    text = text.replace("version: starter-2", "version: strict-1")
    text = text.replace("  review: 0.30\n", "  review: 0.10\n")
    path = tmp_path / "strict.yaml"
    path.write_text(text)
    return load_with_catalogue(path)


def test_the_engine_frame_has_what_the_policy_reads(
    history: features.History, starter: Policy
) -> None:
    frame = engine_frame(history)

    assert required_fields(starter) <= set(frame.columns)
    assert len(frame) == len(history.refund_requests)
    cents = pd.to_numeric(history.refund_requests["amount"]).to_numpy(dtype=float)
    assert np.allclose(frame["amount"].to_numpy(dtype=float), cents / 100)  # currency units


def test_a_backtest_against_the_policy_in_service(
    history: features.History, starter: Policy, tmp_path: Path
) -> None:
    truth = load_ground_truth(SAMPLE)
    assert truth is not None
    result = backtest(
        history, stricter(tmp_path), RefundCountScorer(), against=starter, ground_truth=truth
    )

    new, current = result.summary["new"], result.summary["current"]
    assert result.judged_against == "ground truth"
    assert result.model_version == "count-1"
    assert new["requests"] == current["requests"] == len(history.refund_requests)
    assert new["approve_rate"] + new["review_rate"] + new["block_rate"] == pytest.approx(1.0)
    assert new["abusive_requests"] == truth["is_abuse"].sum()
    # A lower review threshold holds at least as much, of abuse and of honest refunds alike.
    assert new["abuse_caught"] >= current["abuse_caught"]
    assert new["honest_held"] >= current["honest_held"] > 0
    assert new["paid_total"] <= current["paid_total"]
    changed = result.decisions["decision"] != result.decisions["current_decision"]
    assert result.changes.index.equals(result.decisions.index[changed.to_numpy()])
    assert len(result.changes) > 0
    assert set(result.changes["current_decision"]) == {"approve"}
    assert all("MODEL_SCORE_REVIEW" in codes for codes in result.changes["reason_codes"])


def test_outcomes_from_labels_and_a_time_window(history: features.History, starter: Policy) -> None:
    times = pd.to_numeric(history.refund_requests["requested_at"]).to_numpy()
    middle = int(np.median(times))

    result = backtest(history, starter, RefundCountScorer(), since=middle)

    assert result.judged_against == "labels (unlabelled as honest)"
    assert len(result.decisions) == (times >= middle).sum()
    assert result.decisions["requested_at"].min() >= middle
    assert len(result.changes) == 0  # nothing to compare with


def test_no_model_means_every_request_is_reviewed(
    history: features.History, starter: Policy
) -> None:
    result = backtest(history, starter, None)

    assert set(result.decisions["decision"]) <= {"review", "block"}
    assert all("DEGRADED" in codes for codes in result.decisions["reason_codes"])


def test_the_figures_by_hand() -> None:
    decided = pd.DataFrame(
        {
            "decision": ["approve", "review", "block", "review", "approve"],
            "approved_cents": [1000, 0, 0, 0, 250],
        }
    )
    amount = np.array([10.0, 20.0, 30.0, 40.0, 2.5])
    is_abuse = np.array([False, True, True, False, True])
    day = np.array([1, 1, 2, 2, 2])

    figures = summarise(decided, amount, is_abuse, day)

    assert figures["abuse_caught"] == 2
    assert figures["abuse_caught_amount"] == 50.0
    assert figures["abuse_caught_share"] == pytest.approx(2 / 3)
    assert figures["paid_to_abuse"] == 2.5
    assert figures["paid_to_abuse_share"] == pytest.approx(2.5 / 52.5)
    assert figures["honest_held_amount_share"] == pytest.approx(40.0 / 50.0)
    assert figures["honest_blocked"] == 0
    assert figures["honest_block_rate"] == 0.0
    assert figures["honest_held"] == 1
    assert figures["honest_held_amount"] == 40.0
    assert figures["honest_blocked_amount"] == 0.0
    assert figures["paid_total"] == 12.5
    assert figures["reviews_per_day_mean"] == 1.0
    assert figures["review_rate"] == 0.4


def test_the_backtest_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "registry"
    assert (
        main(
            [
                "train",
                "--from",
                str(SAMPLE),
                "--registry",
                str(registry),
                "--max-rounds",
                "20",
                "--promote",
                "champion",
            ]
        )
        == 0
    )
    capsys.readouterr()
    strict = tmp_path / "strict.yaml"
    strict.write_text(STARTER_POLICY.read_text().replace("  review: 0.30\n", "  review: 0.05\n"))
    changes = tmp_path / "changes.csv"

    code = main(
        [
            "backtest",
            "--from",
            str(SAMPLE),
            "--registry",
            str(registry),
            "--policy",
            str(strict),
            "--against",
            str(STARTER_POLICY),
            "--changes",
            str(changes),
        ]
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "outcomes from ground truth" in out
    # Money first: what abuse is paid, honest money held, honest requests blocked.
    lines = out.splitlines()
    assert lines[1].startswith("money first")
    assert [line.split("(")[0].strip() for line in lines[2:5]] == [
        "abusive money paid",
        "honest money held",
        "honest requests blocked",
    ]
    assert out.index("honest requests blocked") < out.index("approve_rate")
    assert "abuse_caught_amount" in out
    assert "decisions that change:" in out
    table = pd.read_csv(changes)
    assert len(table) > 0
    assert {"request_id", "decision", "current_decision", "reason_codes", "blocked_by"} <= set(
        table.columns
    )
