"""How fast the marketplace simulator runs, and what it produces.

Simulates (default) 100 000 accounts over 180 days, writes the dataset as Parquet to a
temporary directory, and prints seconds and rows per second for each step, the rows of
each table, the abusive share of refund requests and the mix of patterns. Figures only:
nothing is asserted.

    python benchmarks/simulate.py
    python benchmarks/simulate.py --users 20000 --days 90 --seed 3 --format csv
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from riskmodel.simulator import SimulationConfig, simulate, write_simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    args = parser.parse_args()

    config = SimulationConfig(users=args.users, days=args.days, seed=args.seed)
    began = time.perf_counter()
    sim = simulate(config)
    simulated = time.perf_counter() - began
    counts = {name: len(frame) for name, frame in sim.tables().items()}
    rows = sum(counts.values())

    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        paths = write_simulation(sim, Path(tmp), fmt=args.format)
        written = time.perf_counter() - began
        size = sum(p.stat().st_size for p in paths.values())

    print(f"simulator: {args.users:,} users x {args.days} days, seed {args.seed}")
    print(f"  simulate  {simulated:7.2f} s  {rows / simulated:12,.0f} rows/s")
    print(
        f"  write     {written:7.2f} s  {rows / written:12,.0f} rows/s"
        f"  ({args.format}, {size / 1e6:,.1f} MB)"
    )
    print(f"  total     {simulated + written:7.2f} s  {rows / (simulated + written):12,.0f} rows/s")
    print("rows per table:")
    for name, count in counts.items():
        print(f"  {name:<16}{count:>12,}")
    print(f"  {'ground_truth':<16}{len(sim.ground_truth):>12,}")

    truth = sim.ground_truth
    requests = len(truth)
    print(f"refund requests per order: {requests / max(counts['orders'], 1):.2%}")
    print(f"abusive share of requests: {truth['is_abuse'].mean():.2%}")
    labelled = truth["request_id"].isin(sim.labels["request_id"])
    print(
        f"requests with a label at export: {labelled.mean():.1%}"
        f" (abusive {labelled[truth['is_abuse']].mean():.1%},"
        f" honest {labelled[~truth['is_abuse']].mean():.1%})"
    )
    print("pattern mix:")
    for is_abuse in (False, True):
        part = truth[truth["is_abuse"] == is_abuse]
        kind = "abuse " if is_abuse else "honest"
        for pattern, count in part["pattern"].value_counts().items():
            print(f"  {kind} {pattern!s:<30}{count:>9,}  {count / requests:7.2%}")


if __name__ == "__main__":
    main()
