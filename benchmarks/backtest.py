"""Policy backtest speed on a million refund requests (target: 1M in at most 30 s).

    python benchmarks/backtest.py [--orders 10000000 --requests 1000000 --rounds 500]

Uses the synthetic history of ``benchmarks/feature_engines.py`` (10 orders per user,
shared public IPs, a few hundred sellers). A model of ``--rounds`` trees (no early
stopping, as ``benchmarks/training_speed.py`` does: the synthetic labels are random) is
trained on a sample of the requests, then ``training.backtest.backtest`` replays every
request through the starter policy with its review threshold at the top tenth of the
scores, against the starter policy itself. Printed, in seconds:

- the point-in-time features of every request (the part the feature engine owns);
- the replay alone, on those features: model scores, ``decide_frame`` under both
  policies, the figures and the changed requests (``backtest`` with its feature step
  served from the table already built), and the model's scores alone;
- ``backtest`` end to end, features included, as ``riskmodel backtest`` runs it;
- ``riskmodel tune`` on the same requests without features: four engine runs and the
  trade-off table over 4,950 threshold pairs.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from feature_engines import synthetic_history

import features
import training.backtest as backtest_module
import training.tune as tune_module
from features.policy_fields import load_with_catalogue
from riskmodel.bundle import ModelBundle
from riskmodel.policy import STARTER_POLICY
from training import Examples, LabelPolicy, TrainConfig, latest_labels, train_on
from training.dataset import latest_time
from training.tune import Constraints, tune_period, tuning_period, with_thresholds


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--train-rows", type=int, default=50_000)
    args = parser.parse_args()

    started = time.perf_counter()
    history = synthetic_history(args.orders, args.requests)
    print(
        f"synthetic history: {len(history.orders):,} orders, "
        f"{len(history.refund_requests):,} requests ({time.perf_counter() - started:.1f} s)"
    )
    engine_frame = backtest_module.engine_frame
    started = time.perf_counter()
    frame = engine_frame(history)
    featured = time.perf_counter() - started
    print(f"features: {len(frame):,} requests x {frame.shape[1]} columns in {featured:.1f} s")

    started = time.perf_counter()
    bundle = _model(history, frame, args.rounds, args.train_rows)
    print(
        f"model: {bundle.booster.num_trees()} trees on {args.train_rows:,} requests "
        f"({time.perf_counter() - started:.1f} s, not part of the backtest)"
    )
    starter = load_with_catalogue(STARTER_POLICY)
    # Random labels give low scores: review the top tenth, so that decisions do change.
    top = float(np.quantile(bundle.score(frame.head(50_000)), 0.9))
    stricter = with_thresholds(starter, round(min(top, 0.29), 4), 0.85)
    print(
        f"policies: the starter (review 0.3) and the same with review "
        f"{stricter.spec.thresholds.review:g}"
    )

    # The replay alone: the feature step of backtest (and of tune) answers with the table
    # built above.
    def built(history: features.History, requests: pd.DataFrame | None = None) -> pd.DataFrame:
        return frame

    backtest_module.engine_frame = built
    vars(tune_module)["engine_frame"] = built  # tune imported the name itself
    try:
        started = time.perf_counter()
        result = backtest_module.backtest(history, stricter, bundle, against=starter)
        replay = time.perf_counter() - started
        started = time.perf_counter()
        period = tuning_period(history, bundle, maturity_days=0)
        tuning = tune_period(period, starter, Constraints(max_reviews_per_day=1000))
        tuned = time.perf_counter() - started
    finally:
        backtest_module.engine_frame = engine_frame
        vars(tune_module)["engine_frame"] = engine_frame
    started = time.perf_counter()
    bundle.score(frame)
    scoring = time.perf_counter() - started
    summary = result.summary["new"]
    print(
        f"replay only: {summary['requests']:,.0f} requests, 2 policies, "
        f"{len(result.changes):,} decisions change: {replay:.1f} s "
        f"({summary['requests'] / replay:,.0f} requests/s; target 30 s); the model's "
        f"scores alone take {scoring:.1f} s ({bundle.booster.num_trees()} trees)"
    )
    print(
        f"tune without features: {len(period):,} requests, {len(tuning.table):,} pairs, "
        f"proposed {tuning.proposal.review:g} / {tuning.proposal.block:g}: {tuned:.1f} s"
    )

    spent: list[float] = []

    def timed(history: features.History, requests: pd.DataFrame | None = None) -> pd.DataFrame:
        began = time.perf_counter()
        built = engine_frame(history, requests)
        spent.append(time.perf_counter() - began)
        return built

    backtest_module.engine_frame = timed
    try:
        started = time.perf_counter()
        full = backtest_module.backtest(history, stricter, bundle, against=starter)
        total = time.perf_counter() - started
    finally:
        backtest_module.engine_frame = engine_frame
    assert len(full.changes) == len(result.changes)
    print(
        f"backtest end to end: {total:.1f} s, of which features {spent[0]:.1f} s and the "
        f"replay {total - spent[0]:.1f} s"
    )
    print(f"peak RSS {_peak_rss_gb():.2f} GB")


def _model(history: features.History, frame: pd.DataFrame, rounds: int, rows: int) -> ModelBundle:
    """A model of ``rounds`` trees on a sample of the requests, with their labels."""
    sample = np.random.default_rng(0).choice(len(frame), min(rows, len(frame)), False)
    requested = pd.to_numeric(history.refund_requests["requested_at"]).to_numpy(np.int64)
    sample = sample[np.argsort(requested[sample], kind="stable")]  # examples are in time order
    table = frame.iloc[sample]
    verdicts = latest_labels(history.labels).reindex(table.index.to_numpy(dtype=object))
    examples = Examples(
        features=table[features.model_features()],
        label=verdicts.fillna(False).to_numpy(dtype=bool).astype(np.int8),
        labelled=verdicts.notna().to_numpy(),
        requested_at=requested[sample],
        amount=table["amount"].to_numpy(dtype=float),
    )
    config = TrainConfig(
        labels=LabelPolicy(maturity_days=0),
        test_share=0.0,
        max_rounds=rounds,
        early_stopping_rounds=0,
    )
    return train_on(examples, latest_time(history) + 1, config).bundle


if __name__ == "__main__":
    main()
