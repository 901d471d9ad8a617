"""Model quality on the simulator, against a LightGBM on the raw request fields alone.

    python benchmarks/quality.py [--data data/bench-quality-sim] [--train-days 120]

Simulates 100k users over 180 days (seed 7) unless the directory exists, trains as of
day 120 with 30-day label maturity (only labels known by then), and tests on every
request of the last 60 days against the simulator's ground truth. The baseline is the
same pipeline (same examples, splits, early stopping, calibration) on five raw fields:
amount, reason, product type, hours since payment, payment method. Prints ROC AUC,
average precision, recall at 1% false-positive rate, the abusive amount caught and the
honest amount held when reviewing the top 5%, and recall per abuse pattern.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

import features
from riskmodel.simulator import SimulationConfig, simulate, write_simulation
from training import (
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
from training.dataset import DAY_US, iso, to_micros

RAW_FIELDS = ["request_amount", "reason", "product_type", "hours_paid_to_request", "payment_method"]
ROWS = [
    ("roc_auc", "ROC AUC"),
    ("average_precision", "average precision"),
    ("recall_at_1pct_fpr", "recall at 1% FPR"),
    ("abusive_amount_caught_top", "abusive amount caught, top 5%"),
    ("honest_amount_held_top", "honest amount held, top 5%"),
    ("brier", "Brier score"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/bench-quality-sim"))
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train-days", type=float, default=120)
    parser.add_argument("--maturity-days", type=float, default=30)
    parser.add_argument("--report", type=Path, default=Path("data/bench-quality-report"))
    parser.add_argument(
        "--prequential", type=int, default=3, help="successive 20-day windows (0: none)"
    )
    args = parser.parse_args()

    start = "2026-01-01"
    if not (args.data / "refund_requests.parquet").is_file():
        print(f"simulating {args.users:,} users x {args.days} days (seed {args.seed})...")
        config = SimulationConfig(users=args.users, days=args.days, seed=args.seed)
        write_simulation(simulate(config), args.data)
        start = config.start.date().isoformat()
    history = features.load_history(args.data)
    truth = load_ground_truth(args.data)
    assert truth is not None, f"{args.data} has no ground_truth.parquet"
    first = to_micros(start)
    assert first is not None
    until = first + int(args.train_days * DAY_US)

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

    print(
        f"train: {len(examples):,} mature requests before {iso(until)} "
        f"({int(examples.labelled.sum()):,} labelled, {int(examples.label.sum()):,} abuse "
        f"labels; features {built:.1f} s, training {trained:.1f} s, "
        f"{ours.details['best_iteration']} trees, {ours.calibrator.kind} calibration)"
    )
    print(
        f"test:  {len(test):,} requests from {iso(until)} on, "
        f"{int(test.target().sum()):,} abusive by ground truth\n"
    )
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


if __name__ == "__main__":
    main()
