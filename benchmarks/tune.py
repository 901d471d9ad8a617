"""Threshold tuning on the simulator: the trade-off table and the proposed pair.

    python benchmarks/tune.py [--data data/sim100k] [--max-reviews-per-day 20]

Simulates 100k users over 180 days (seed 7; the same as ``riskmodel simulate --out
data/sim100k --users 100000 --days 180 --seed 7``) unless the directory exists, trains as
of day 120 with 30-day label maturity as ``benchmarks/quality.py`` does, puts the model
in a scratch registry as champion, and runs ``riskmodel tune`` with the starter policy on
the last 60 days (from the model's training window end), against the ground truth. Then
the proposal for a range of review capacities, on the same period, and the seconds taken.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import features
from features.policy_fields import load_with_catalogue
from riskmodel.cli import main as riskmodel
from riskmodel.policy import STARTER_POLICY
from riskmodel.registry import Registry
from riskmodel.simulator import SimulationConfig, simulate, write_simulation
from riskmodel.units import DAY, to_micros
from training import LabelPolicy, TrainConfig, load_ground_truth, train_on, training_examples
from training.tune import Constraints, tune_period, tuning_period


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/sim100k"))
    parser.add_argument("--train-days", type=float, default=120)
    parser.add_argument("--max-reviews-per-day", type=float, default=20)
    parser.add_argument("--max-honest-blocked-share", type=float, default=0.005)
    parser.add_argument("--out", type=Path, default=Path("data/bench-tune"))
    args = parser.parse_args()

    if not (args.data / "refund_requests.parquet").is_file():
        print(f"simulating 100,000 users x 180 days (seed 7) into {args.data}...")
        write_simulation(simulate(SimulationConfig(users=100_000, days=180, seed=7)), args.data)
    history = features.load_history(args.data)
    truth = load_ground_truth(args.data)
    assert truth is not None, f"{args.data} has no ground_truth.parquet"
    first = to_micros("2026-01-01")
    assert first is not None
    until = first + int(args.train_days * DAY)
    labels = LabelPolicy(maturity_days=30)
    began = time.perf_counter()
    examples = training_examples(history, until, labels)
    bundle = train_on(examples, until, TrainConfig(labels=labels, test_share=0.0)).bundle
    print(
        f"trained {bundle.version} as of day {args.train_days:g} in "
        f"{time.perf_counter() - began:.0f} s\n"
    )

    with tempfile.TemporaryDirectory() as scratch:
        registry = Registry(Path(scratch) / "registry")
        registry.register(bundle)
        registry.promote(bundle.version)
        command = [
            "tune",
            "--from",
            str(args.data),
            "--registry",
            str(registry.path),
            "--policy",
            str(STARTER_POLICY),
            "--max-reviews-per-day",
            f"{args.max_reviews_per_day:g}",
            "--max-honest-blocked-share",
            f"{args.max_honest_blocked_share:g}",
            "--out",
            str(args.out),
        ]
        print("riskmodel " + " ".join(command) + "\n")
        began = time.perf_counter()
        status = riskmodel(command)
        print(f"\nexit status {status}; {time.perf_counter() - began:.1f} s with features\n")

    policy = load_with_catalogue(STARTER_POLICY)
    began = time.perf_counter()
    period = tuning_period(history, bundle, since=until, ground_truth=truth)
    built = time.perf_counter() - began
    print(
        f"proposals by review capacity ({len(period):,} requests; features and scores "
        f"{built:.1f} s):\n"
    )
    print(
        "| reviews a day at most | review | block | reviews a day | abusive amount held "
        "| honest amount held | honest amount blocked | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for capacity in (5, 10, 20, 40, 80, 160):
        began = time.perf_counter()
        constraints = Constraints(
            max_reviews_per_day=capacity,
            max_honest_blocked_share=args.max_honest_blocked_share,
        )
        result = tune_period(period, policy, constraints)
        row = result.proposal.row
        mark = "" if result.proposal.feasible else " (none fits; closest)"
        print(
            f"| {capacity} | {row['review']:g}{mark} | {row['block']:g} "
            f"| {row['reviews_per_day_mean']:.1f} | {row['abuse_caught_amount_share']:.1%} "
            f"| {row['honest_held_amount_share']:.2%} "
            f"| {row['honest_blocked_amount_share']:.3%} "
            f"| {time.perf_counter() - began:.2f} |"
        )


if __name__ == "__main__":
    main()
