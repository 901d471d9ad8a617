"""Model quality on the simulator: our model against simple baselines.

Two modes.

**One world** (the default market, the original benchmark)::

    python benchmarks/quality.py [--data data/bench-quality-sim] [--train-days 120]

Simulates 100k users over 180 days (seed 7) unless the directory exists, trains as of
day 120 with 30-day label maturity (only labels known by then), and tests on every
request of the last 60 days against the simulator's ground truth. The baseline is the
same pipeline (same examples, splits, early stopping, calibration) on five raw fields:
amount, reason, product type, hours since payment, payment method. Prints ROC AUC,
average precision, recall at 1% false-positive rate, the abusive amount caught and the
honest amount held when reviewing the top 5%, and recall per abuse pattern.

**Many worlds** (randomised marketplaces, ``riskmodel.simulator.worlds``)::

    python benchmarks/quality.py --worlds 8                # the first 8 EVALUATION_WORLDS
    python benchmarks/quality.py --worlds 4 --set dev      # the first 4 DEVELOPMENT_WORLDS
    options: --users 20000 --days 150 --train-days 100 --data-root data/bench-quality-worlds
             --maturity-days D (default: estimated from the labels known, as in production)

Choices (features, settings) are made on ``--set dev``; ``--set eval`` only reports. Each
world is simulated into ``<data-root>/<set>-<N>-<users>x<days>`` unless already there.
Three models are trained as of start + ``--train-days`` on the same examples (labels as
known then) and judged on every later request against the ground truth:

- **ours**: the full pipeline on every model feature (what ``riskmodel train`` does);
- **LR**: a scaled logistic regression on ``BASELINE_FEATURES``, a dozen standard
  point-in-time features, fitted on every example our pipeline reads, same labels;
- **raw**: our pipeline (LightGBM, early stopping, calibration) on ``RAW_FIELDS`` only.

Both modes print money first: the starter policy with our model replayed over the test
period (``riskmodel backtest``'s figures): abusive money paid, honest money held, honest
requests blocked by cause, and how many of those were honest retries, re-submissions or
follow-ups of an order asked back before.

Prints, and writes to ``<data-root>/quality-<set>.md``: per world ROC AUC, average
precision and recall at 1% FPR of each model; their mean and worst over the worlds; and
recall per abuse pattern when reviewing the top 5%, averaged over the worlds that have it.
"""

from __future__ import annotations

import argparse
import shutil
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import features
from features.policy_fields import load_with_catalogue
from riskmodel.errors import DataError
from riskmodel.policy import STARTER_POLICY
from riskmodel.simulator import (
    DEVELOPMENT_WORLDS,
    EVALUATION_WORLDS,
    SimulationConfig,
    World,
    draw_world,
    simulate,
    write_simulation,
    write_world,
)
from riskmodel.units import DAY, iso, to_micros
from training import (
    Evaluation,
    Examples,
    LabelPolicy,
    TrainConfig,
    evaluate,
    evaluation_period,
    load_ground_truth,
    prequential,
    train_on,
    training_examples,
    write_report,
)
from training.backtest import backtest
from training.metrics import ranking_metrics, recall_by_pattern, top_share_threshold

RAW_FIELDS = ["request_amount", "reason", "product_type", "hours_paid_to_request", "payment_method"]

# Fixed before any run and not tuned: the textbook point-in-time features of a refund
# model, as the brief for this baseline listed them. Amounts are in the reporting
# currency (the catalogue sums orders in it), so the request amount is too.
BASELINE_FEATURES = [
    # the user's recent activity
    "account_age_days",
    "user_orders_30d",
    "user_order_amount_30d",
    "user_refunds_30d",
    "user_refunds_90d",
    # each linked entity's recent refunds and the abuse known on it
    "device_refunds_30d",
    "ip_refunds_30d",
    "payment_account_refunds_30d",
    "device_abuse_rate_90d",
    "ip_abuse_rate_90d",
    "payment_account_abuse_rate_90d",
    # the request itself
    "request_amount_base",
]
ROWS = [
    ("roc_auc", "ROC AUC"),
    ("average_precision", "average precision"),
    ("recall_at_1pct_fpr", "recall at 1% FPR"),
    ("abusive_amount_caught_top", "abusive amount caught, top 5%"),
    ("honest_amount_held_top", "honest amount held, top 5%"),
    ("brier", "Brier score"),
]
MEASURES = [
    ("roc_auc", "ROC AUC"),
    ("average_precision", "AP"),
    ("recall_at_1pct_fpr", "R@1%FPR"),
]
MODELS = [("ours", "ours"), ("lr", "LR (a)"), ("raw", "raw (b)")]
REVIEW_SHARE = 0.05  # the top share reviewed, as in training.report.evaluate
# Honest requests that look like a second request on an order: never to be blocked.
RETRIES = ("honest_retry", "honest_resubmission", "honest_partial_followup")
SETS = {"eval": EVALUATION_WORLDS, "dev": DEVELOPMENT_WORLDS}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--worlds", type=int, help="run this many randomised worlds (else: one default world)"
    )
    parser.add_argument("--set", choices=sorted(SETS), default="eval", help="world set (eval)")
    parser.add_argument("--data-root", type=Path, default=Path("data/bench-quality-worlds"))
    parser.add_argument("--data", type=Path, default=Path("data/bench-quality-sim"))
    parser.add_argument("--users", type=int, help="100000 (one world) or 20000 (worlds)")
    parser.add_argument("--days", type=int, help="180 (one world) or 150 (worlds)")
    parser.add_argument("--seed", type=int, default=7, help="one world only")
    parser.add_argument("--train-days", type=float, help="120 (one world) or 100 (worlds)")
    parser.add_argument(
        "--maturity-days",
        type=float,
        help="label maturity: 30 (one world) or estimated from the data (worlds)",
    )
    parser.add_argument("--report", type=Path, default=Path("data/bench-quality-report"))
    parser.add_argument(
        "--prequential", type=int, default=3, help="successive 20-day windows (0: none)"
    )
    args = parser.parse_args()
    if args.worlds is None:
        args.users = 100_000 if args.users is None else args.users
        args.days = 180 if args.days is None else args.days
        args.train_days = 120 if args.train_days is None else args.train_days
        args.maturity_days = 30 if args.maturity_days is None else args.maturity_days
        single_world(args)
    else:
        args.users = 20_000 if args.users is None else args.users
        args.days = 150 if args.days is None else args.days
        args.train_days = 100 if args.train_days is None else args.train_days
        many_worlds(args)


# ---------------------------------------------------------------------------------------
# One world: the default market


def single_world(args: argparse.Namespace) -> None:
    """Ours against the raw request fields on the default market, with a full report."""
    start = "2026-01-01"
    if not (args.data / "refund_requests.parquet").is_file():
        print(f"simulating {args.users:,} users x {args.days} days (seed {args.seed})...")
        market = SimulationConfig(users=args.users, days=args.days, seed=args.seed)
        write_simulation(simulate(market), args.data)
        start = market.start.date().isoformat()
    history = features.load_history(args.data)
    truth = load_ground_truth(args.data)
    assert truth is not None, f"{args.data} has no ground_truth.parquet"
    first = to_micros(start)
    assert first is not None
    until = first + int(args.train_days * DAY)

    began = time.perf_counter()
    examples = training_examples(history, until, LabelPolicy(maturity_days=args.maturity_days))
    built = time.perf_counter() - began
    config = TrainConfig(labels=LabelPolicy(maturity_days=args.maturity_days), test_share=0.0)
    began = time.perf_counter()
    ours = train_on(examples, until, config).bundle
    trained = time.perf_counter() - began
    raw = replace(examples, features=examples.features[RAW_FIELDS])
    baseline = train_on(raw, until, config).bundle

    test = evaluation_period(history, since=until, ground_truth=truth)
    mine, theirs = evaluate(ours, test), evaluate(baseline, test)
    write_report([mine, theirs], args.report, "Quality benchmark: ours vs raw request fields")
    money = starter_money(history, truth, ours, until)

    print(
        f"train: {len(examples):,} examples before {iso(until)} "
        f"({int(examples.labelled.sum()):,} labelled, {int(examples.label.sum()):,} abuse "
        f"labels; features {built:.1f} s, training {trained:.1f} s, "
        f"{ours.details['best_iteration']} trees, {ours.calibrator.kind} calibration)"
    )
    print(
        f"test:  {len(test):,} requests from {iso(until)} on, "
        f"{int(test.target().sum()):,} abusive by ground truth\n"
    )
    print(f"money, the starter policy with our model: {money.line()}\n")
    print(f"| measure | ours ({len(ours.features)} features) | raw request fields (5) |")
    print("|---|---|---|")
    for key, label in ROWS:
        print(f"| {label} | {mine.summary[key]:.3f} | {theirs.summary[key]:.3f} |")
    print("\nRecall per abuse pattern (share flagged when reviewing the top 5%):\n")
    print("| pattern | requests | ours | raw fields |")
    print("|---|---|---|---|")
    patterns, base = mine.figures["patterns"], theirs.figures["patterns"]
    for name, row in sorted(patterns.items(), key=lambda kv: -kv[1]["flagged_share"]):
        if row["abusive"]:
            print(
                f"| {name} | {row['requests']} | {row['flagged_share']:.3f} "
                f"| {base[name]['flagged_share']:.3f} |"
            )
    print("\nHonest requests held in the top 5%, per kind:\n")
    print("| kind | requests | ours | raw fields |")
    print("|---|---|---|---|")
    for name, row in sorted(patterns.items(), key=lambda kv: -kv[1]["flagged_share"]):
        if not row["abusive"]:
            print(
                f"| {name} | {row['requests']} | {row['flagged_share']:.3f} "
                f"| {base[name]['flagged_share']:.3f} |"
            )
    print(f"\nreport: {args.report / 'report.md'}")
    if args.prequential:
        _prequential(history, truth, args)


def _prequential(
    history: features.History, truth: pd.DataFrame | None, args: argparse.Namespace
) -> None:
    config = TrainConfig(labels=LabelPolicy(maturity_days=args.maturity_days))
    result = prequential(
        history, count=args.prequential, test_days=20, config=config, ground_truth=truth
    )
    print(f"\nPrequential: {args.prequential} models, each tested on the 20 days after it\n")
    print("| trained as of | test requests | abusive | ROC AUC | average precision |")
    print("|---|---|---|---|---|")
    for row in result.windows:
        print(
            f"| {row['until'][:10]} | {row['requests']:,} | {row['abusive']} "
            f"| {row['roc_auc']:.3f} | {row['average_precision']:.3f} |"
        )
    print("\n| measure | mean | spread (sd) |")
    print("|---|---|---|")
    for key, label in ROWS:
        mean, spread = result.mean[key], result.spread[key]
        print(f"| {label} | {mean:.3f} | {'-' if spread is None else f'{spread:.3f}'} |")


# ---------------------------------------------------------------------------------------
# Money: the starter policy with our model, on the test period


@dataclass(frozen=True)
class Money:
    """What the starter policy with our model would have done with the test period."""

    abusive_asked: float
    paid_to_abuse: float
    honest_asked: float
    honest_held: float
    honest_requests: int
    honest_blocked: int
    retries_blocked: int  # honest retries, re-submissions and follow-ups blocked
    blocked_by: dict[str, int]  # honest blocks per cause

    @property
    def paid_share(self) -> float:
        return self.paid_to_abuse / self.abusive_asked if self.abusive_asked else 0.0

    @property
    def held_share(self) -> float:
        return self.honest_held / self.honest_asked if self.honest_asked else 0.0

    @property
    def block_rate(self) -> float:
        return self.honest_blocked / self.honest_requests if self.honest_requests else 0.0

    def line(self) -> str:
        causes = ", ".join(f"{c} {n}" for c, n in self.blocked_by.items()) or "none"
        return (
            f"abusive money paid {self.paid_to_abuse:,.2f} of {self.abusive_asked:,.2f} "
            f"({self.paid_share:.1%}); honest money held {self.honest_held:,.2f} "
            f"({self.held_share:.1%}); honest requests blocked {self.honest_blocked:,} of "
            f"{self.honest_requests:,} ({self.block_rate:.2%}; by {causes}), of them "
            f"retries or re-submissions {self.retries_blocked}"
        )


def starter_money(history: features.History, truth: pd.DataFrame, scorer: Any, since: int) -> Money:
    """Replay every request from ``since`` through the starter policy with ``scorer``."""
    policy = load_with_catalogue(STARTER_POLICY)
    result = backtest(history, policy, scorer, ground_truth=truth, since=since)
    figures = result.summary["new"]
    decisions = result.decisions
    pattern = truth.set_index("request_id")["pattern"].reindex(decisions.index)
    honest_block = (decisions["decision"] == "block") & ~decisions["is_abuse"]
    causes = decisions.loc[honest_block, "blocked_by"].value_counts()
    return Money(
        abusive_asked=figures["abusive_amount"],
        paid_to_abuse=figures["paid_to_abuse"],
        honest_asked=figures["honest_amount"],
        honest_held=figures["honest_held_amount"],
        honest_requests=int(figures["honest_requests"]),
        honest_blocked=int(figures["honest_blocked"]),
        retries_blocked=int((honest_block & pattern.isin(RETRIES).to_numpy()).sum()),
        blocked_by={str(k): int(v) for k, v in causes.items()},
    )


# ---------------------------------------------------------------------------------------
# Many worlds: ours against two baselines on randomised marketplaces


@dataclass(frozen=True)
class Scored:
    """One model's figures on one world's test period."""

    summary: dict[str, float | None]  # the MEASURES keys; None when undefined
    patterns: dict[str, float]  # abuse pattern -> share flagged in the top REVIEW_SHARE


@dataclass(frozen=True)
class WorldResult:
    number: int
    regime: str
    requests: int  # in the test period
    abusive: int  # in the test period, by ground truth
    maturity_days: float
    seconds: float
    models: dict[str, Scored]  # by the keys of MODELS
    pattern_requests: dict[str, int]  # abusive requests of each pattern in the test period
    money: Money  # the starter policy with our model


def many_worlds(args: argparse.Namespace) -> None:
    """Run the first ``args.worlds`` worlds of ``args.set`` and print the tables."""
    numbers = SETS[args.set][: args.worlds]
    if args.worlds < 1 or len(numbers) < args.worlds:
        raise SystemExit(f"--worlds must be 1 to {len(SETS[args.set])} for --set {args.set}")
    maturity = "estimated" if args.maturity_days is None else f"{args.maturity_days:g} days"
    header = (
        f"Quality on {len(numbers)} {args.set} worlds ({', '.join(map(str, numbers))}): "
        f"{args.users:,} users x {args.days} days, trained as of day {args.train_days:g} "
        f"(label maturity {maturity}), tested on every later request against the ground "
        "truth."
    )
    print(header + "\n")
    began = time.perf_counter()
    results: list[WorldResult] = []
    failed: list[str] = []
    for number in numbers:
        try:
            results.append(run_world(number, args))
        except DataError as exc:  # e.g. no mature request, one outcome only: say so, go on
            failed.append(f"world {number}: {exc}")
            print(f"world {number} FAILED: {exc}\n")
    lines = [header, ""]
    if results:
        lines += [*money_table(results), ""]
        lines += [*world_table(results), "", *summary_table(results), ""]
        lines += [*pattern_table(results), ""]
    if failed:
        lines += ["Worlds that could not be run (left out of every figure above):", ""]
        lines += [f"- {why}" for why in failed] + [""]
    lines.append(f"Total time {time.perf_counter() - began:.0f} s.")
    text = "\n".join(lines) + "\n"
    print("\n".join(lines[2:]))  # the header was printed first
    out = args.data_root / f"quality-{args.set}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"written to {out}")


def world_dir(world: World, set_name: str, root: Path) -> Path:
    """The world's dataset directory, simulated and written there unless already present."""
    c = world.config
    directory = root / f"{set_name}-{world.number}-{c.users}x{c.days}"
    if (directory / "ground_truth.parquet").is_file():
        return directory
    # Written next to it then renamed: an interrupted run leaves no half-written world
    # that a later run would take for a finished one.
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write_simulation(simulate(c), partial)
    write_world(world, partial)
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    return directory


def run_world(number: int, args: argparse.Namespace) -> WorldResult:
    """Simulate (if needed), train the three models as of the cutoff and score the rest."""
    began = time.perf_counter()
    world = draw_world(number, users=args.users, days=args.days)
    directory = world_dir(world, args.set, args.data_root)
    history = features.load_history(directory)
    truth = load_ground_truth(directory)
    assert truth is not None, f"{directory} has no ground_truth.parquet"
    first = to_micros(world.config.start)
    assert first is not None
    until = first + int(args.train_days * DAY)
    loaded = time.perf_counter()

    policy = LabelPolicy(maturity_days=args.maturity_days)
    examples = training_examples(history, until, policy)
    config = TrainConfig(labels=policy, test_share=0.0)
    test = evaluation_period(history, since=until, ground_truth=truth)
    built = time.perf_counter()

    result = train_on(examples, until, config)
    ours = evaluate(result.bundle, test)
    trained = time.perf_counter()
    # The logistic regression learns from every example, with the labels our model
    # reads: the settled requests (their verdict, else honest by silence) and the fresh
    # verdicts. Our pipeline uses all of them too (trees: train and fresh; early
    # stopping: valid; the probability map: calibration); the regression needs no
    # held-out period, and keeping the latest settled ones from it would only weaken it.
    lr_model, notes = fit_logistic(examples)
    lr = score_figures(lr_scores(lr_model, test), test)
    fitted = time.perf_counter()
    raw = train_on(replace(examples, features=examples.features[RAW_FIELDS]), until, config)
    theirs = evaluate(raw.bundle, test)
    done = time.perf_counter()
    money = starter_money(history, truth, result.bundle, until)
    replayed = time.perf_counter()
    mine = from_evaluation(ours)
    _check_same_figures(mine, score_figures(ours.scores, test))
    maturity = examples.maturity_days
    assert maturity is not None
    regime = world.label_regime
    if regime == "fixed_delay":
        regime += f" ({world.config.fixed_label_delay_days:g} d)"
    labelled = int(examples.labelled.sum())
    print(
        f"world {number} ({regime}): {len(examples):,} examples ({labelled:,} with a verdict, "
        f"{int(examples.label.sum()):,} abuse) before {iso(until)[:10]}; "
        f"{len(test):,} test requests, {int(test.target().sum()):,} abusive"
    )
    if examples.maturity is not None:
        print(f"  {examples.maturity.describe()}")
    print(
        f"  ours {result.bundle.details['best_iteration']} trees, "
        f"{result.bundle.calibrator.kind}; raw {raw.bundle.details['best_iteration']} trees; "
        f"LR on {len(examples):,} rows" + (f" ({'; '.join(notes)})" if notes else "")
    )
    print(f"  money, the starter policy with our model: {money.line()}")
    print(
        f"  {replayed - began:.1f} s: data {loaded - began:.1f}, features {built - loaded:.1f}, "
        f"ours {trained - built:.1f}, LR {fitted - trained:.1f}, raw {done - fitted:.1f}, "
        f"policy replay {replayed - done:.1f}\n"
    )
    return WorldResult(
        number=number,
        regime=regime,
        requests=len(test),
        abusive=int(test.target().sum()),
        maturity_days=maturity,
        seconds=replayed - began,
        models={"ours": mine, "lr": lr, "raw": from_evaluation(theirs)},
        pattern_requests=abuse_counts(test),
        money=money,
    )


def baseline_matrix(examples: Examples) -> np.ndarray:
    """BASELINE_FEATURES as floats, missing values (no history, nothing judged) as 0."""
    frame = examples.features[BASELINE_FEATURES].astype("float64")
    return frame.fillna(0.0).to_numpy()


def fit_logistic(examples: Examples) -> tuple[Pipeline, list[str]]:
    """The baseline (a) model on ``examples``, and notes on any warning while fitting."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(baseline_matrix(examples), examples.label.astype(int))
    return model, sorted({f"{w.category.__name__}: {w.message}" for w in caught})


def lr_scores(model: Pipeline, examples: Examples) -> np.ndarray:
    return np.asarray(model.predict_proba(baseline_matrix(examples))[:, 1], dtype=float)


def score_figures(score: np.ndarray, test: Examples) -> Scored:
    """The figures ``training.report.evaluate`` gives, from a score array: the same metric
    functions on the same target and the same top-share threshold."""
    y = test.target().astype(np.int8)
    ranking = ranking_metrics(y, score)
    assert test.pattern is not None, "the test period needs the ground truth"
    assert test.truth is not None, "the test period needs the ground truth"
    patterns = recall_by_pattern(
        test.pattern, test.truth, score, top_share_threshold(score, REVIEW_SHARE)
    )
    return Scored(
        summary={key: ranking[key] for key, _ in MEASURES},
        patterns={
            name: float(row["flagged_share"]) for name, row in patterns.items() if row["abusive"]
        },
    )


def abuse_counts(test: Examples) -> dict[str, int]:
    """Abusive requests of each pattern in ``test`` (by ground truth)."""
    assert test.pattern is not None, "the test period needs the ground truth"
    assert test.truth is not None, "the test period needs the ground truth"
    names, counts = np.unique(test.pattern[test.truth].astype(str), return_counts=True)
    return {str(name): int(count) for name, count in zip(names, counts, strict=True)}


def from_evaluation(evaluation: Evaluation) -> Scored:
    patterns: dict[str, Any] = evaluation.figures["patterns"]
    return Scored(
        summary={key: evaluation.summary[key] for key, _ in MEASURES},
        patterns={
            name: float(row["flagged_share"]) for name, row in patterns.items() if row["abusive"]
        },
    )


def _check_same_figures(reported: Scored, computed: Scored) -> None:
    """The LR's figures come from ``score_figures``; on our scores it must agree with
    ``evaluate``, or the comparison would not be like for like."""
    for key, _ in MEASURES:
        a, b = reported.summary[key], computed.summary[key]
        if (a is None) != (b is None) or (a is not None and b is not None and abs(a - b) > 1e-9):
            raise AssertionError(f"score_figures gives {key}={b}, evaluate {a}")
    if reported.patterns != computed.patterns:
        raise AssertionError("score_figures and evaluate disagree on recall per pattern")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _values(results: list[WorldResult], model: str, key: str) -> list[float]:
    return [v for r in results if (v := r.models[model].summary[key]) is not None]


def money_table(results: list[WorldResult]) -> list[str]:
    """Money first: the starter policy with our model, per world."""
    lines = [
        "Money: the starter policy with our model on each test period (amounts in each "
        "world's currency units).",
        "",
        "| world | abusive money paid | share of abusive asked | honest money held | share "
        "of honest asked | honest blocked | honest block rate | retries blocked |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m = r.money
        lines.append(
            f"| {r.number} | {m.paid_to_abuse:,.2f} | {m.paid_share:.1%} | "
            f"{m.honest_held:,.2f} | {m.held_share:.1%} | {m.honest_blocked:,} | "
            f"{m.block_rate:.2%} | {m.retries_blocked} |"
        )
    return lines


def world_table(results: list[WorldResult]) -> list[str]:
    """One row per world: its regime, the test period and each model's measures."""
    columns = [f"{label} {name}" for _, label in MODELS for _, name in MEASURES]
    lines = [
        "| world | labels | test requests | abusive | "
        + " | ".join(columns)
        + " | maturity (d) | time (s) |",
        "|---|---|---|---|" + "---|" * len(columns) + "---|---|",
    ]
    for r in results:
        cells = [_fmt(r.models[m].summary[k]) for m, _ in MODELS for k, _ in MEASURES]
        lines.append(
            f"| {r.number} | {r.regime} | {r.requests:,} | {r.abusive:,} | "
            + " | ".join(cells)
            + f" | {r.maturity_days:.1f} | {r.seconds:.0f} |"
        )
    return lines


def summary_table(results: list[WorldResult]) -> list[str]:
    """Mean and worst of each measure over the worlds; wins and the AP margin."""
    lines = [
        f"Over {len(results)} worlds (worst: the lowest value in any world):",
        "",
        "| measure | " + " | ".join(f"{label} mean | {label} worst" for _, label in MODELS) + " |",
        "|---|" + "---|---|" * len(MODELS),
    ]
    for key, name in MEASURES:
        cells = []
        for model, _ in MODELS:
            values = _values(results, model, key)
            cells += [_fmt(float(np.mean(values)) if values else None)]
            cells += [_fmt(min(values) if values else None)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ap = "average_precision"
    wins = sum(
        1
        for r in results
        if all(
            (ours := r.models["ours"].summary[ap]) is not None
            and ((other := r.models[m].summary[ap]) is None or ours > other)
            for m in ("lr", "raw")
        )
    )
    ours_ap, lr_ap = _values(results, "ours", ap), _values(results, "lr", ap)
    margin = float(np.mean(ours_ap) - np.mean(lr_ap)) if ours_ap and lr_ap else None
    lines += [
        "",
        f"Ours beats both baselines on AP in {wins} of {len(results)} worlds; "
        f"mean AP of ours minus mean AP of the LR baseline (a): "
        f"{'-' if margin is None else f'{margin:+.3f}'}.",
    ]
    return lines


def pattern_table(results: list[WorldResult]) -> list[str]:
    """Recall of each abuse pattern reviewing the top 5%, averaged over the worlds whose
    test period has that pattern (each world counts once, however many requests)."""
    names = sorted({name for r in results for name in r.models["ours"].patterns})
    lines = [
        f"Recall per abuse pattern (share flagged reviewing the top {REVIEW_SHARE:.0%} by "
        "score), mean over the worlds whose test period has it; requests: its abusive "
        f"requests in those test periods. Where abuse is over {REVIEW_SHARE:.0%} of "
        "requests the top cannot hold it all, so patterns compete for it.",
        "",
        "| pattern | worlds | requests | " + " | ".join(label for _, label in MODELS) + " |",
        "|---|---|---|" + "---|" * len(MODELS),
    ]
    rows = []
    for name in names:
        having = [r for r in results if name in r.models["ours"].patterns]
        requests = sum(r.pattern_requests.get(name, 0) for r in having)
        means = [
            float(np.mean([r.models[model].patterns[name] for r in having])) for model, _ in MODELS
        ]
        rows.append((name, len(having), requests, means))
    for name, count, requests, means in sorted(rows, key=lambda row: -row[3][0]):
        cells = " | ".join(f"{m:.3f}" for m in means)
        lines.append(f"| {name} | {count} | {requests:,} | {cells} |")
    return lines


if __name__ == "__main__":
    main()
