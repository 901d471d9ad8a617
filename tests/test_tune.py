"""Threshold tuning: the table is what the engine decides, the proposal keeps the
constraints, tighter capacity never adds reviews, misses are reported, the command works."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import features
from features.policy_fields import load_with_catalogue
from riskmodel.cli import main
from riskmodel.engine import decide_frame
from riskmodel.errors import DataError
from riskmodel.policy import STARTER_POLICY, Policy
from riskmodel.units import DAY
from training.backtest import block_causes, blocks_by_cause, summarise
from training.dataset import latest_time, load_ground_truth
from training.tune import (
    Constraints,
    Period,
    current_pair,
    grid,
    patch_policy_text,
    propose,
    tradeoff,
    tune_period,
    tuning_period,
    with_thresholds,
    write_policy,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
COMPARED = (
    "paid_to_abuse_share",
    "honest_held_amount_share",
    "honest_blocked",
    "honest_block_rate",
    "honest_blocked_amount_share",
    "review_rate",
    "block_rate",
    "abuse_caught",
    "abuse_caught_amount",
    "abuse_blocked",
    "paid_to_abuse",
    "honest_held",
    "honest_held_amount",
    "honest_blocked_amount",
    "paid_total",
    "reviews_per_day_mean",
    "reviews_per_day_max",
)


class StandIn:
    """A model that spreads its scores over (0, 1): more recent refunds and larger
    amounts look riskier."""

    version = "stand-in-1"

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        refunds = frame["user_refunds_30d"].to_numpy(dtype=float)
        amount = frame["amount"].to_numpy(dtype=float)
        return np.asarray(1 / (1 + np.exp(2 - 0.7 * refunds - amount / 300)), dtype=float)

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
def period(history: features.History) -> Period:
    return tuning_period(history, StandIn(), ground_truth=load_ground_truth(SAMPLE))


@pytest.fixture(scope="module")
def starter() -> Policy:
    return load_with_catalogue(STARTER_POLICY)


@pytest.fixture(scope="module")
def busy_policy(period: Period, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """The starter policy with an approve rule on and users on the allow list, so that
    softening takes part too."""
    users = sorted(set(period.frame["user_id"]))[::25][:20]
    text = STARTER_POLICY.read_text()
    text = text.replace("    enabled: false          # an example", "    enabled: true  # on")
    text = text.replace(
        "  allow:\n    users: []", "  allow:\n    users: [" + ", ".join(users) + "]"
    )
    path = tmp_path_factory.mktemp("policy") / "busy.yaml"
    path.write_text(text)
    return load_with_catalogue(path)


def replayed(period: Period, policy: Policy) -> dict[str, float]:
    decided = decide_frame(period.frame, period.scores, policy, decided_at=datetime.now(UTC))
    return summarise(decided, period.amount, period.is_abuse, period.day)


@pytest.mark.parametrize("segment", [None, "large_amounts", "new_accounts"])
def test_every_row_of_the_table_is_what_the_engine_decides(
    period: Period, busy_policy: Policy, segment: str | None
) -> None:
    table = tradeoff(period, busy_policy, segment=segment)
    decided = decide_frame(period.frame, period.scores, busy_policy, decided_at=datetime.now(UTC))
    codes = [c for row in decided["reason_codes"] for c in row]
    # The parts that interact with the thresholds are exercised on this data.
    assert {"GREEN_CHANNEL", "LIST_ALLOW_USER", "RULE_SMALL_FIRST_REFUND"} <= set(codes)
    assert table["current"].sum() == 1

    rows = np.random.default_rng(7).choice(len(table), 30, replace=False)
    for position in [*rows, int(np.flatnonzero(table["current"])[0])]:
        row = table.iloc[position]
        patched = with_thresholds(busy_policy, row["review"], row["block"], segment)
        expected = replayed(period, patched)
        for key in COMPARED:
            assert row[key] == pytest.approx(expected[key], abs=1e-9), (row["review"], key)


def test_each_pair_s_blocks_by_cause_are_the_engine_s(period: Period, busy_policy: Policy) -> None:
    result = tune_period(period, busy_policy, Constraints(max_reviews_per_day=5))
    table = result.table
    # Pairs that block: the model's blocks come and go, the rules' and lists' stay.
    blocking = np.flatnonzero(table["block"].to_numpy() <= 0.5)
    rows = np.random.default_rng(3).choice(blocking, 15, replace=False)
    for position in [*rows, int(np.flatnonzero(table["current"])[0])]:
        row = table.iloc[position]
        patched = with_thresholds(busy_policy, row["review"], row["block"])
        decided = decide_frame(period.frame, period.scores, patched, decided_at=datetime.now(UTC))
        want = blocks_by_cause(block_causes(decided, patched), period.amount, period.is_abuse)

        got = result.blocks(row)

        for column in ("honest_blocked", "abuse_blocked"):
            assert got[column].to_dict() == want[column].to_dict(), (row["review"], row["block"])
        assert got["honest_blocked_amount"].to_dict() == pytest.approx(
            want["honest_blocked_amount"].to_dict()
        )
        assert got["honest_blocked"].sum() == row["honest_blocked"]
    assert len(result.fixed_blocks) > 0  # the rules block some requests whatever the pair


def test_the_grid_and_the_table_shape(period: Period, starter: Policy) -> None:
    table = tradeoff(period, starter, levels=grid(0.1))

    assert len(grid()) == 100
    assert (grid()[0], grid()[-1]) == (0.01, 1.0)
    levels = sorted({*grid(0.1), *current_pair(starter)})
    assert len(table) == len(levels) * (len(levels) - 1) // 2
    assert (table["review"] < table["block"]).all()
    rates = table["approve_rate"] + table["review_rate"] + table["block_rate"]
    assert np.allclose(rates, 1.0)
    # Lowering the review threshold (block fixed) never holds less of anything.
    at = table[table["block"] == 0.9].sort_values("review")
    assert (np.diff(at["abuse_caught"].to_numpy()) <= 0).all()
    assert (np.diff(at["honest_held_amount"].to_numpy()) <= 1e-9).all()


def test_the_proposal_meets_the_constraints_on_the_data_it_was_tuned_on(
    period: Period, starter: Policy
) -> None:
    constraints = Constraints(max_reviews_per_day=2.0, max_honest_blocked_share=0.02)

    result = tune_period(period, starter, constraints)

    proposal = result.proposal
    assert proposal.feasible
    assert proposal.violations == ()
    replay = replayed(period, with_thresholds(starter, proposal.review, proposal.block))
    honest_total = period.amount[~period.is_abuse].sum()
    assert replay["reviews_per_day_mean"] <= 2.0
    assert replay["honest_blocked_amount"] / honest_total <= 0.02
    # No pair that meets them holds more net money than the proposal.
    table = result.table
    fits = (table["reviews_per_day_mean"] <= 2.0) & (table["honest_blocked_amount_share"] <= 0.02)
    net = table["abuse_caught_amount"] - 0.1 * table["honest_held_amount"]
    assert net[fits].max() == pytest.approx(
        proposal.row["abuse_caught_amount"] - 0.1 * proposal.row["honest_held_amount"]
    )


@pytest.mark.parametrize("weight", [0.0, 0.1, 1.0])
def test_a_tighter_review_capacity_never_proposes_more_reviews(
    period: Period, starter: Policy, weight: float
) -> None:
    table = tradeoff(period, starter)
    low, high = table["reviews_per_day_mean"].min(), table["reviews_per_day_mean"].max()
    reviews = []
    for cap in np.linspace(high, low, 40):
        proposal = propose(table, Constraints(max_reviews_per_day=cap), weight)
        assert proposal.feasible
        assert proposal.row["reviews_per_day_mean"] <= cap
        reviews.append(int(proposal.row["reviews"]))

    assert reviews == sorted(reviews, reverse=True)
    assert reviews[0] > reviews[-1]


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0.0, 10.0),
    st.floats(0.0, 10.0),
    st.sampled_from([None, 0.0, 0.01, 0.05]),
    st.sampled_from(["mean", "max"]),
)
def test_tighter_capacity_property(
    tight: float, loose: float, blocked: float | None, statistic: str
) -> None:
    table = _TABLE.get("table")
    if table is None:
        history = features.load_history(SAMPLE)
        period = tuning_period(history, StandIn(), ground_truth=load_ground_truth(SAMPLE))
        table = _TABLE["table"] = tradeoff(period, load_with_catalogue(STARTER_POLICY))
    tight, loose = min(tight, loose), max(tight, loose)

    def chosen(cap: float) -> tuple[bool, int]:
        constraints = Constraints(
            max_reviews_per_day=cap, reviews_per_day=statistic, max_honest_blocked_share=blocked
        )
        proposal = propose(table, constraints)
        return proposal.feasible, int(proposal.row["reviews"])

    (tight_fits, tight_reviews), (loose_fits, loose_reviews) = chosen(tight), chosen(loose)
    if tight_fits:
        assert loose_fits
        assert tight_reviews <= loose_reviews


_TABLE: dict[str, pd.DataFrame] = {}


def test_no_pair_fits_is_reported_with_the_closest(period: Period, starter: Policy) -> None:
    table = tradeoff(period, starter)
    floor = table["reviews_per_day_mean"].min()

    proposal = propose(table, Constraints(max_reviews_per_day=floor / 2))

    assert not proposal.feasible
    assert [v.constraint for v in proposal.violations] == ["max_reviews_per_day"]
    assert proposal.violations[0].value == pytest.approx(floor)
    assert proposal.best["max_reviews_per_day"] == pytest.approx(floor)
    assert proposal.candidates == 0
    assert "against a limit of" in str(proposal.violations[0])


def test_outcomes_from_labels_leave_out_immature_requests(history: features.History) -> None:
    period = tuning_period(history, StandIn(), maturity_days=30)

    assert period.judged_against == "labels (unlabelled as honest)"
    assert period.requested_at.max() < latest_time(history) + 1 - 30 * DAY
    assert 0 < period.is_abuse.sum() < len(period)
    with pytest.raises(DataError, match="no refund request in the tuning period"):
        tuning_period(history, StandIn(), since="2026-04-20", maturity_days=30)


def test_bad_constraints_and_arguments_say_what_is_wrong(
    period: Period, starter: Policy, tmp_path: Path
) -> None:
    with pytest.raises(DataError, match="max_reviews_per_day"):
        Constraints(max_honest_blocked_share=0.01)
    with pytest.raises(DataError, match="must be >= 0"):
        Constraints(max_reviews_per_day=-1)
    with pytest.raises(DataError, match="max_honest_blocked_share is a share"):
        Constraints(max_reviews_per_day=5, max_honest_blocked_share=1.5)
    with pytest.raises(DataError, match="'mean' or 'max'"):
        Constraints(max_reviews_per_day=5, reviews_per_day="median")
    with pytest.raises(
        DataError, match=r"no segment 'vip' \(segments: new_accounts, large_amounts\)"
    ):
        tradeoff(period, starter, segment="vip")
    nobody = STARTER_POLICY.read_text().replace("amount_from: 300.00", "amount_from: 90000.00")
    path = tmp_path / "nobody.yaml"
    path.write_text(nobody)
    with pytest.raises(
        DataError, match=rf"segment 'large_amounts' of policy {starter.version} decides none of"
    ):
        tradeoff(period, load_with_catalogue(path), segment="large_amounts")
    with pytest.raises(DataError, match="grid step"):
        grid(0.0)
    with pytest.raises(DataError, match="review < block"):
        with_thresholds(starter, 0.5, 0.5)


def test_the_patched_policy_changes_those_values_and_nothing_else(
    starter: Policy, tmp_path: Path
) -> None:
    original = STARTER_POLICY.read_text()

    patched = patch_policy_text(original, 0.12, 0.9, version="tuned-1")
    segment = patch_policy_text(original, 0.07, 0.6, segment="large_amounts")

    lines = original.splitlines()

    def edited(prefix: str, value: str, after: str = "") -> tuple[str, str]:
        """The first line from ``after`` on that starts with ``prefix``, and the same line
        with its value (the word after the colon) replaced: comments and spacing stay."""
        start = next(i for i, line in enumerate(lines) if after in line)
        line = next(line for line in lines[start:] if line.startswith(prefix))
        key, rest = line.split(":", 1)
        old = rest.split()[0]
        return line, f"{key}:{rest.replace(old, value, 1)}"

    changed = [
        (a, b) for a, b in zip(original.splitlines(), patched.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        edited("version:", "tuned-1"),
        edited("  review:", "0.12"),
        edited("  block:", "0.9"),
    ]
    changed = [
        (a, b) for a, b in zip(original.splitlines(), segment.splitlines(), strict=True) if a != b
    ]
    assert changed == [
        edited("      review:", "0.07", after="name: large_amounts"),
        edited("      block:", "0.6", after="name: large_amounts"),
    ]
    out = tmp_path / "tuned.yaml"
    written = write_policy(STARTER_POLICY, out, 0.12, 0.9, version="tuned-1")
    assert written.version == "tuned-1"
    assert (written.spec.thresholds.review, written.spec.thresholds.block) == (0.12, 0.9)
    assert written.spec.rules == starter.spec.rules
    assert out.read_text() == patched
    with pytest.raises(DataError, match="not over"):
        write_policy(out, out, 0.1, 0.9)
    with pytest.raises(DataError, match="review < block"):
        write_policy(STARTER_POLICY, tmp_path / "bad.yaml", 0.9, 0.1)
    assert not (tmp_path / "bad.yaml").exists()


def test_the_tune_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry = tmp_path / "registry"
    trained = main(
        [
            "train",
            "--from",
            str(SAMPLE),
            "--registry",
            str(registry),
            "--until",
            "2026-04-01",
            "--maturity-days",
            "10",
            "--test-share",
            "0",
            "--max-rounds",
            "20",
            "--promote",
            "champion",
        ]
    )
    assert trained == 0
    capsys.readouterr()
    source = ["--from", str(SAMPLE), "--registry", str(registry), "--policy", str(STARTER_POLICY)]
    out, policy = tmp_path / "tune", tmp_path / "tuned.yaml"

    code = main(
        [
            "tune",
            *source,
            "--max-reviews-per-day",
            "3",
            "--max-honest-blocked-share",
            "0.01",
            "--out",
            str(out),
            "--write-policy",
            str(policy),
            "--new-version",
            "starter-2-tuned",
        ]
    )

    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "from 2026-04-01" in printed
    assert "outcomes from ground truth" in printed
    assert "PROPOSED review" in printed
    table = pd.read_csv(out / "tradeoff.csv")
    assert len(table) == 4950
    assert (out / "tradeoff.png").stat().st_size > 10_000
    written = load_with_catalogue(policy)
    chosen = table[
        (table["review"] == written.spec.thresholds.review)
        & (table["block"] == written.spec.thresholds.block)
    ]
    assert written.version == "starter-2-tuned"
    assert len(chosen) == 1
    assert chosen["reviews_per_day_mean"].iloc[0] <= 3
    assert main(["policy", "check", str(policy)]) == 0
    capsys.readouterr()

    missed = tmp_path / "missed.yaml"
    code = main(
        [
            *["tune", *source],
            "--max-reviews-per-day",
            "0.01",
            "--out",
            str(out),
            "--write-policy",
            str(missed),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 3
    assert "NO threshold pair meets every constraint" in printed
    assert "max_reviews_per_day:" in printed
    assert not missed.exists()

    # From the store there is no ground truth: labels, and only requests mature by its end.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    assert main(["ingest", str(SAMPLE), "--database-url", url]) == 0
    capsys.readouterr()
    stored = ["--database-url", url, "--registry", str(registry), "--policy", str(STARTER_POLICY)]
    code = main(["tune", *stored, "--max-reviews-per-day", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, 3)
    assert "outcomes from labels (unlabelled as honest)" in printed
    assert "to 2026-04-20" in printed  # 10 days of label maturity before the data's end

    assert main(["tune", *source, "--out", str(out)]) == 1
    assert "--max-reviews-per-day" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tune", *source, "--max-reviews-per-day", "3", "--max-honest-blocked-share", "2"])
    assert "between 0 and 1" in capsys.readouterr().err
