"""The committed sample dataset: what the README's command makes, and loadable as it is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from riskmodel import dataset, store
from riskmodel.ingest import ingest
from riskmodel.simulator import SimulationConfig, simulate

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
# The command the README gives to regenerate data/sample.
SAMPLE_CONFIG = SimulationConfig(users=5000, days=120, seed=20260101)


def test_sample_is_small_and_complete() -> None:
    files = sorted(p.name for p in SAMPLE.iterdir())
    size = sum(p.stat().st_size for p in SAMPLE.iterdir())

    assert files == sorted([*(f"{t}.parquet" for t in dataset.TABLES), "ground_truth.parquet"])
    assert size < 2 * 1024 * 1024


def test_sample_matches_what_the_simulator_makes() -> None:
    sim = simulate(SAMPLE_CONFIG)

    for name in [*dataset.TABLES, "ground_truth"]:
        committed = pd.read_parquet(SAMPLE / f"{name}.parquet")
        pd.testing.assert_frame_equal(committed, getattr(sim, name), obj=name)


def test_sample_ingests_on_both_backends(database_url: str) -> None:
    report = ingest(SAMPLE, database_url)

    engine = store.open_store(database_url)
    counts = store.table_counts(engine)
    engine.dispose()
    assert {t: counts[t] for t in dataset.TABLES} == report.rows_read
    assert report.ignored_files == ("ground_truth.parquet",)
