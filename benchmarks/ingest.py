"""Ingest throughput: rows per second from a dataset directory into SQLite and PostgreSQL.

    python benchmarks/ingest.py                       # simulates 100k users x 180 days first
    python benchmarks/ingest.py --from data/sim       # an existing dataset directory
    python benchmarks/ingest.py --postgres-url postgresql://postgres@127.0.0.1:5432/riskmodel_bench

Each backend starts empty. The second load of the same directory is timed too: it must
write nothing, and shows the cost of checking that.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from riskmodel import store
from riskmodel.ingest import IngestReport, ingest
from riskmodel.simulator import SimulationConfig, simulate, write_simulation


def _fresh_postgres(url: str) -> str:
    store.create_database(url, replace=True)
    return url


def _line(label: str, report: IngestReport) -> str:
    return (
        f"{label:<28} {report.total_read:>11,} rows {report.seconds:>8.1f} s "
        f"{report.rows_per_second:>11,.0f} rows/s  written {sum(report.rows_written.values()):,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="dataset directory")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument(
        "--postgres-url", default="postgresql://postgres@127.0.0.1:5432/riskmodel_bench"
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            started = time.perf_counter()
            source = Path(tmp) / "dataset"
            sim = simulate(SimulationConfig(users=args.users, days=args.days, seed=1))
            write_simulation(sim, source)
            print(
                f"simulated {args.users:,} users x {args.days} days "
                f"in {time.perf_counter() - started:.1f} s"
            )

        targets = [("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}")]
        if not args.skip_postgres:
            targets.append(("PostgreSQL", _fresh_postgres(args.postgres_url)))
        for name, url in targets:
            first = ingest(source, url)
            for table, rows in first.rows_read.items():
                print(f"  {table:<18} {rows:>11,} rows")
            print(_line(f"{name}: first load", first))
            print(_line(f"{name}: same load again", ingest(source, url)))
            engine = store.open_store(url)
            engine.dispose()


if __name__ == "__main__":
    main()
