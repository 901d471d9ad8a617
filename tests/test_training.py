"""Training end to end on the sample data, the measures of the report, and the commands."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import features
from riskmodel.cli import main
from riskmodel.errors import DataError
from riskmodel.registry import Registry
from riskmodel.units import iso, to_micros
from training import (
    LabelPolicy,
    TrainConfig,
    TrainResult,
    compare,
    estimate_maturity,
    evaluation_period,
    load_ground_truth,
    prequential,
    score_requests,
    search,
    train,
    train_on,
    write_report,
)
from training.calibration import fit_calibrator
from training.metrics import (
    amount_caught_at_top,
    daily_precision_at_k,
    money_at_thresholds,
    recall_at_fpr,
    recall_by_pattern,
    reliability,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result() -> TrainResult:
    history = features.load_history(SAMPLE)
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=300)
    return train(history, config=config, ground_truth=load_ground_truth(SAMPLE))


def test_periods_follow_each_other_in_time(result: TrainResult) -> None:
    periods = result.bundle.details["periods"]
    names = ["train", "valid", "calibration", "test", "fresh"]

    assert list(periods) == names
    for earlier, later in itertools.pairwise(names):
        assert periods[earlier]["end"] <= periods[later]["start"]
    assert sum(p["requests"] for p in periods.values()) == len(result.examples)
    assert periods["fresh"]["requests"] == len(result.examples) - result.bundle.details["settled"]
    assert periods["fresh"]["requests"] > 0
    assert result.bundle.training_window.maturity_days == 20
    assert result.bundle.details["maturity"]["description"] == "label maturity 20 days (given)"
    assert result.bundle.details["best_iteration"] < 300  # early stopping stopped it


def test_fresh_verdicts_teach_the_trees_and_nothing_else(result: TrainResult) -> None:
    examples = result.examples
    fresh = ~examples.settled
    flipped = replace(examples, label=np.where(fresh, 1 - examples.label, examples.label))
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=30)
    until = to_micros(result.bundle.training_window.until)
    assert until is not None
    real, other = train_on(examples, until, config), train_on(flipped, until, config)

    assert real.bundle.model_text != other.bundle.model_text  # the trees learn from them
    for name in ("train", "valid", "calibration", "test"):  # no period judges on them
        np.testing.assert_array_equal(real.split.masks[name], other.split.masks[name])
        assert not real.split.masks[name][fresh].any()
    assert real.evaluation is not None
    assert other.evaluation is not None
    np.testing.assert_array_equal(real.evaluation.target, other.evaluation.target)


def test_calibration_keeps_the_order_of_the_trees(result: TrainResult) -> None:
    kept = result.bundle.details["calibration"]
    assert result.evaluation is not None
    test = result.evaluation.figures["calibration"]

    assert kept["method"] == result.bundle.calibrator.kind
    assert kept["test"] == {k: v for k, v in test.items() if k != "method"}
    for period in ("calibration", "test"):
        row = kept[period]
        assert row["distinct_after"] == row["distinct_before"] > 10
        assert row["average_precision_after"] == pytest.approx(row["average_precision_before"])
    assert test["requests"] == result.evaluation.summary["requests"]


def test_the_model_ranks_abuse_on_a_later_period(result: TrainResult) -> None:
    assert result.evaluation is not None
    summary = result.evaluation.summary
    # Far better than chance on requests after its data, with a usable probability.
    assert summary["roc_auc"] > 0.7
    assert summary["average_precision"] > 3 * summary["abuse_rate"]
    assert summary["brier"] < summary["abuse_rate"]
    assert result.bundle.metrics["test"]["average_precision"] == summary["average_precision"]


def test_the_report_has_every_section_and_plot(result: TrainResult, tmp_path: Path) -> None:
    assert result.evaluation is not None
    path = write_report([result.evaluation], tmp_path, "Sample")
    document = json.loads((tmp_path / "report.json").read_text())
    text = path.read_text()

    for key in ("summary", "daily_review", "thresholds", "reliability", "importance", "patterns"):
        assert key in document
    assert document["judged_against"] == "ground truth"
    assert {"gain_share", "mean_abs_shap"} <= set(document["importance"][0])
    for heading in ("| roc_auc |", "## Money and review load", "## Per pattern", "## Calibration"):
        assert heading in text
    kept = document["calibration"]
    assert kept["distinct_before"] == kept["distinct_after"]
    ap = f"{kept['average_precision_before']:.3f}"
    row = f"| {kept['method']} | {ap} | {ap} | {kept['distinct_before']:,} | "
    assert row in text
    assert document["label_maturity"] == {
        "days": 20,
        "estimated": False,
        "description": "label maturity 20 days (given)",
    }
    assert "Trained with a label maturity 20 days (given)." in text
    for name in ("reliability.png", "precision_recall.png", "importance.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


def test_a_candidate_is_compared_with_another_on_the_same_requests(result: TrainResult) -> None:
    history = features.load_history(SAMPLE)
    period = evaluation_period(history, since="2026-04-01", ground_truth=load_ground_truth(SAMPLE))
    first, second = compare([result.bundle, result.bundle], period)

    assert first.summary == second.summary
    assert first.summary["requests"] == len(period)
    assert period.truth is not None


def test_batch_scores_match_the_bundle(result: TrainResult) -> None:
    history = features.load_history(SAMPLE)
    scores = score_requests(result.bundle, history, since="2026-04-01")
    since = to_micros("2026-04-01")
    expected = history.refund_requests[
        pd.to_numeric(history.refund_requests["requested_at"]) >= since
    ]

    assert sorted(scores["request_id"]) == sorted(expected["request_id"])
    table = features.build_features(history).loc[scores["request_id"]]
    np.testing.assert_array_equal(scores["score"], result.bundle.score(table))


def test_prequential_trains_as_of_each_window_and_tests_after_it() -> None:
    history = features.load_history(SAMPLE)
    config = TrainConfig(labels=LabelPolicy(maturity_days=15), max_rounds=30)
    result = prequential(
        history,
        count=2,
        test_days=14,
        gap_days=1,
        config=config,
        ground_truth=load_ground_truth(SAMPLE),
    )

    first, second = result.windows
    assert first["test_end"] == second["test_start"]
    for row in result.windows:
        assert row["until"] < row["test_start"]
        assert row["requests"] > 100
    aucs = [first["roc_auc"], second["roc_auc"]]
    assert result.mean["roc_auc"] == pytest.approx(np.mean(aucs))
    assert result.spread["roc_auc"] == pytest.approx(np.std(aucs, ddof=1))


def test_the_search_reads_the_validation_period_only(result: TrainResult) -> None:
    examples = result.examples
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=60)
    grid = {"num_leaves": (7, 31), "learning_rate": (0.05, 0.2)}
    found = search(examples, config, grid, trials=3)
    judged = result.split.masks["calibration"] | result.split.masks["test"]
    flipped = replace(examples, label=np.where(judged, 1 - examples.label, examples.label))
    again = search(flipped, config, grid, trials=3)

    assert len(found.trials) == 3
    best = max(found.trials, key=lambda t: t["valid_average_precision"])
    assert (found.best.num_leaves, found.best.learning_rate) == (
        best["num_leaves"],
        best["learning_rate"],
    )
    assert again.trials == found.trials
    with pytest.raises(DataError, match="cannot search over depth"):
        search(examples, config, {"depth": (3,)})


def test_recall_at_fpr_and_amounts_on_a_small_case() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    score = np.array([0.9, 0.2, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    amount = np.array([100.0, 50, 10, 1, 1, 1, 1, 1, 1, 1])

    assert recall_at_fpr(y, score, 0.0) == 0.5  # the 0.9 before any honest one
    assert recall_at_fpr(y, score, 0.125) == 1.0
    top = amount_caught_at_top(y, score, amount, share=0.2)  # the 0.9 and the 0.8
    assert top["abusive_amount_caught"] == pytest.approx(100 / 150)
    assert top["honest_amount_held"] == pytest.approx(10 / 17)
    rows = money_at_thresholds(y, score, amount, np.zeros(10, dtype=int), [0.5])
    assert rows[0]["flagged"] == 2
    assert rows[0]["precision"] == 0.5
    assert rows[0]["honest_amount_held"] == 10
    assert recall_at_fpr(np.zeros(3), np.zeros(3)) is None


def test_daily_precision_reviews_the_top_of_each_day() -> None:
    y = np.array([1, 0, 0, 1, 1, 0])
    score = np.array([0.9, 0.8, 0.1, 0.2, 0.7, 0.6])
    day = np.array([0, 0, 0, 1, 1, 1])

    daily = daily_precision_at_k(y, score, day, capacity=1)
    assert daily["mean_precision"] == 1.0  # 0.9 on day 0, 0.7 on day 1
    assert daily["abuse_caught"] == pytest.approx(2 / 3)
    assert daily_precision_at_k(y, score, day, capacity=2)["mean_precision"] == 0.5


def test_reliability_and_patterns() -> None:
    score = np.linspace(0, 1, 100)
    y = (score > 0.5).astype(int)
    bins = reliability(y, score, bins=4)
    assert [b["count"] for b in bins] == [25, 25, 25, 25]
    assert bins[0]["observed_rate"] == 0
    assert bins[-1]["observed_rate"] == 1

    pattern = np.array(["ring"] * 50 + ["honest_unused"] * 50, dtype=object)
    by = recall_by_pattern(pattern, np.arange(100) < 50, np.r_[np.ones(50), np.zeros(50)], 0.5)
    assert by["ring"] == {"abusive": True, "requests": 50, "flagged_share": 1.0}
    assert by["honest_unused"]["flagged_share"] == 0.0


def test_calibration_needs_both_outcomes() -> None:
    with pytest.raises(DataError, match="needs both outcomes"):
        fit_calibrator(np.zeros(10), np.zeros(10))


# -- the command line --------------------------------------------------------------------


def test_train_list_promote_score_evaluate_rollback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = str(tmp_path / "registry")
    common = ["--from", str(SAMPLE), "--registry", registry]

    first_run = ["--until", "2026-04-10", "--maturity-days", "20", "--search", "2"]
    assert main(["train", *common, *first_run]) == 0
    assert main(["train", *common, "--maturity-days", "20", "--promote", "champion"]) == 0
    first, second = Registry(registry).versions()
    out = capsys.readouterr().out
    assert f"registered {first}" in out
    assert out.count("label maturity 20 days (given)") == 2
    assert out.count("  tried num_leaves=") == 2
    assert "roc_auc" in out
    assert (Registry(registry).report_dir(first) / "report.md").is_file()
    assert Registry(registry).load(first).training_window.until == "2026-04-10T00:00:00+00:00"

    scores = tmp_path / "scores.csv"
    assert main(["score", *common, "--since", "2026-04-10", "--out", str(scores)]) == 0
    written = pd.read_csv(scores)
    assert list(written.columns) == ["request_id", "score"]
    assert written["score"].between(0, 1).all()
    assert len(written) > 50

    report = tmp_path / "compare"
    assert main(["evaluate", first, *common, "--against", "champion", "--out", str(report)]) == 0
    out = capsys.readouterr().out
    assert "from 2026-04-10" in out
    assert "judged against ground truth" in out
    assert first in out
    assert second in out
    assert len(json.loads((report / "report.json").read_text())["compared_with"]) == 1

    assert main(["models", "promote", first, "--registry", registry]) == 0
    assert main(["models", "list", "--registry", registry]) == 0
    listing = capsys.readouterr().out
    assert f"champion: {second} -> {first}" in listing
    assert any(line.startswith(first) and "champion" in line for line in listing.splitlines())

    assert main(["models", "rollback", "--registry", registry]) == 0
    assert Registry(registry).aliases()["champion"] == second
    assert main(["models", "show", "champion", "--registry", registry]) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert shown["version"] == second
    assert shown["sha256"]


KEPT = re.compile(
    r"    (\w+) period, ([\d,]+) requests: average precision ([\d.-]+) -> ([\d.-]+), "
    r"distinct scores ([\d,]+) -> ([\d,]+)"
)


def test_train_estimates_the_maturity_and_prints_the_order_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(tmp_path / "registry")
    args = ["--from", str(SAMPLE), "--until", "2026-04-01", "--registry", str(registry.path)]

    assert main(["train", *args]) == 0
    out = capsys.readouterr().out
    history = features.load_history(SAMPLE)
    estimate = estimate_maturity(history, to_micros("2026-04-01"))
    bundle = registry.load(registry.versions()[0])

    assert out.splitlines()[0] == estimate.describe()
    assert out.startswith("label maturity ")
    assert "(estimated: 90% of abuse verdicts arrive within it, n=" in out
    assert bundle.training_window.maturity_days == estimate.days
    assert bundle.details["maturity"]["estimate"]["days"] == estimate.days
    assert f"raw margin -> calibrated score ({bundle.calibrator.kind}):" in out
    rows = {m[1]: m.groups()[1:] for m in (KEPT.match(line) for line in out.splitlines()) if m}
    assert set(rows) == {"calibration", "test"}
    for period, (requests, ap_before, ap_after, before, after) in rows.items():
        kept = bundle.details["calibration"][period]
        assert int(requests.replace(",", "")) == kept["requests"]
        assert ap_before == ap_after
        assert before == after == f"{kept['distinct_before']:,}"
    report = json.loads((registry.report_dir(bundle.version) / "report.json").read_text())
    assert report["label_maturity"]["estimated"] is True
    assert report["label_maturity"]["description"] == estimate.describe()
    assert report["calibration"]["distinct_after"] == report["calibration"]["distinct_before"]


def test_score_with_a_policy_adds_the_decisions(
    result: TrainResult, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = Registry(tmp_path / "registry")
    registry.register(result.bundle)
    registry.promote(result.bundle.version)
    out = tmp_path / "decided.csv"
    starter = Path(__file__).resolve().parents[1] / "riskmodel" / "policy" / "starter.yaml"

    source = ["--from", str(SAMPLE), "--since", "2026-04-15", "--registry", str(registry.path)]
    status = main(["score", *source, "--out", str(out), "--policy", str(starter)])

    assert status == 0
    assert "decided by policy" in capsys.readouterr().out
    written = pd.read_csv(out)
    expected = ["request_id", "score", "decision", "approved_amount", "review_queue"]
    assert list(written.columns) == [*expected, "reason_codes"]
    assert set(written["decision"]) <= {"approve", "review", "block"}
    assert written["decision"].nunique() > 1
    assert (written.loc[written["decision"] != "approve", "approved_amount"] == 0).all()
    scores = score_requests(result.bundle, features.load_history(SAMPLE), "2026-04-15")
    np.testing.assert_allclose(written["score"], scores["score"], atol=1e-6)


def test_the_prequential_command_prints_each_window_and_the_spread(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--windows", "2", "--test-days", "14", "--maturity-days", "15"]
    assert main(["prequential", "--from", str(SAMPLE), *args]) == 0

    out = capsys.readouterr().out
    assert "judged against ground truth" in out
    assert out.count("  as of ") == 2
    assert out.count(": label maturity 15.0 d, ") == 2
    assert "average_precision" in out


def test_commands_report_mistakes_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ["--registry", str(tmp_path / "empty")]

    assert main(["score", "--from", str(SAMPLE), "--out", str(tmp_path / "s.csv"), *registry]) == 1
    assert "no model is champion yet" in capsys.readouterr().err
    assert main(["train", "--from", str(SAMPLE), "--until", "2026-01-05", *registry]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no refund request is mature before 2026-01-05")
    assert main(["models", "rollback", *registry]) == 1
    assert "no earlier version" in capsys.readouterr().err
    assert iso(to_micros("2026-01-05T00:00:00") or 0) == "2026-01-05T00:00:00+00:00"


@pytest.mark.parametrize("valid_positives", [0, 3])
def test_a_valid_period_too_thin_to_stop_on_joins_the_trees(valid_positives: int) -> None:
    from riskmodel.bundle import FeatureSpec
    from training.model import TrainConfig, fit_trees

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 2))
    y = (x[:, 0] + rng.normal(scale=0.5, size=600) > 1.2).astype(float)
    valid_x = rng.normal(size=(200, 2))
    valid_y = np.zeros(200)
    valid_y[:valid_positives] = 1.0
    specs = (FeatureSpec("a", "number"), FeatureSpec("b", "number"))
    config = TrainConfig(fallback_rounds=37, early_stopping_rounds=5)

    booster = fit_trees(specs, (x, y), (valid_x, valid_y), config)

    # Not stopped after a few noisy rounds, nor refused: the fixed number of rounds.
    assert booster.current_iteration() == 37
