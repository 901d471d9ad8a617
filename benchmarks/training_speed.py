"""Training and batch-scoring speed on a million refund requests.

    python benchmarks/training_speed.py [--orders 10000000 --requests 1000000 --rounds 500]

Uses the synthetic history of ``benchmarks/feature_engines.py`` (10 orders per user,
shared public IPs, a few hundred sellers). Its labels are random, so early stopping would
stop at once; the benchmark instead boosts and keeps a fixed ``--rounds`` (no early
stopping) to time the work of a real model, in training and in scoring. Prints, in
seconds: assembling the examples (as-of cut, label maturity, point-in-time features),
fitting the trees and the calibrator, and scoring every request offline (features, then
the model), with the peak resident memory.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
from feature_engines import synthetic_history

from features import build_features, load_history
from riskmodel.bundle import ModelBundle
from training import LabelPolicy, TrainConfig, train, train_on, training_examples
from training.dataset import latest_time


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="LightGBM threads (0: all)")
    parser.add_argument(
        "--sample-only",
        action="store_true",
        help="time score_one only, with a model trained on data/sample (fast)",
    )
    args = parser.parse_args()
    if args.sample_only:
        sample = load_history(Path("data/sample"))
        config = TrainConfig(max_rounds=args.rounds, early_stopping_rounds=0, test_share=0.0)
        bundle = train(sample, config=config).bundle
        _single_rows(bundle, build_features(sample))
        return

    started = time.perf_counter()
    history = synthetic_history(args.orders, args.requests)
    print(
        f"synthetic history: {len(history.orders):,} orders, "
        f"{len(history.refund_requests):,} requests ({time.perf_counter() - started:.1f} s)"
    )
    # Maturity 0 and a cutoff after the last event: every request is an example.
    policy = LabelPolicy(maturity_days=0)
    until = latest_time(history) + 1
    started = time.perf_counter()
    examples = training_examples(history, until, policy)
    assembled = time.perf_counter() - started
    config = TrainConfig(
        labels=policy,
        test_share=0.0,
        max_rounds=args.rounds,
        early_stopping_rounds=0,
        num_threads=args.threads,
    )
    started = time.perf_counter()
    bundle = train_on(examples, until, config).bundle
    fitted = time.perf_counter() - started
    print(
        f"train: {len(examples):,} requests; examples {assembled:.1f} s + trees and "
        f"calibration {fitted:.1f} s ({bundle.details['rounds_boosted']} rounds boosted, "
        f"best {bundle.details['best_iteration']}) = {assembled + fitted:.1f} s"
    )

    started = time.perf_counter()
    table = build_features(history)
    featured = time.perf_counter() - started
    started = time.perf_counter()
    scores = bundle.score(table)
    scored = time.perf_counter() - started
    print(
        f"score: {len(scores):,} requests; features {featured:.1f} s + model {scored:.1f} s "
        f"= {featured + scored:.1f} s ({len(scores) / (featured + scored):,.0f} requests/s)"
    )
    _single_rows(bundle, table)
    print(f"peak RSS {_peak_rss_gb():.2f} GB")


def _single_rows(bundle: ModelBundle, table: pd.DataFrame, count: int = 5_000) -> None:
    """The serving path: one request's features as a mapping, as the online engine gives."""
    rows = table.iloc[:: max(len(table) // count, 1)].head(count)
    mappings = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in rows.astype(object).to_dict("records")
    ]
    for row in mappings[:200]:  # warm up
        bundle.score_one(row)
        bundle.score(pd.DataFrame([row]))
        bundle.contributions_one(row)
    paths = {
        "score_one (LightGBM's single-row API)": bundle.score_one,
        # The same row through ``Booster.predict``, which sets up a predictor every call.
        "score_one through Booster.predict": lambda row: bundle.calibrator.apply_one(
            float(bundle.booster.predict(bundle.row_vector(row), raw_score=True, num_threads=1)[0])
        ),
        # What a first version would write: the batch path on a one-row DataFrame, with
        # its categorical casts. Beside ours, to show what the row path saves.
        "score on a one-row DataFrame (naive)": lambda row: bundle.score(pd.DataFrame([row])),
        # Exact SHAP contributions, computed only for review and block answers.
        "contributions_one (pred_contrib)": bundle.contributions_one,
    }
    trees = bundle.booster.num_trees()
    for label, path in paths.items():
        timings = []
        for row in mappings if label.startswith("score_one") else mappings[:1_000]:
            started = time.perf_counter()
            path(row)
            timings.append(time.perf_counter() - started)
        micros = np.array(timings) * 1e6
        print(
            f"{label}: {len(micros):,} requests, p50 {np.percentile(micros, 50):.0f} us, "
            f"p99 {np.percentile(micros, 99):.0f} us ({trees} trees)"
        )


if __name__ == "__main__":
    main()
