"""Drift monitoring on a simulated shift.

A small model is trained on the sample marketplace (simulated) as of CUT and registered as
champion. Two stores hold the same history and the decisions the starter policy gives with
that model: in one the traffic after CUT is as simulated, in the other half of the refund
requests after CUT claim an invalid code (an invalid-code abuse wave). The monitor must
flag the reason and what is computed from it in the second and leave the rest alone.

The sample's own traffic is not stable from month to month (its marketplace grows and
its few sellers' counts move together), so the unshifted store is the yardstick: the wave
must add to the index exactly where it can reach and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import Engine

from features import History
from features.policy_fields import load_with_catalogue
from riskmodel import dataset, store
from riskmodel.cli import main
from riskmodel.ingest import ingest_tables
from riskmodel.policy import STARTER_POLICY
from riskmodel.registry import Registry
from riskmodel.units import to_micros
from training import LabelPolicy, TrainConfig, train
from training.backtest import backtest
from training.monitor import (
    MAJOR,
    MODERATE,
    DriftReport,
    Reference,
    build_reference,
    compare,
    psi,
    reference_for,
    reference_path,
)

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
CUT = "2026-04-01"
# The inputs an invalid-code wave may move: the reason itself, counts of past refunds by
# reason, and counts of the decisions the policy gave (the wave changes them).
_MOVED_BY_REASON = re.compile(r"^reason$|invalid_code|_refunds_\w+_all$|_decisions_all$")


def _shifted(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    requests = tables["refund_requests"].copy()
    after = requests.index[pd.to_numeric(requests["requested_at"]) >= to_micros(CUT)]
    requests.loc[after[::2], "reason"] = "invalid_code"
    return {**tables, "refund_requests": requests}


def _store(tables: dict[str, pd.DataFrame], registry: Registry, url: str) -> Engine:
    """A store with ``tables`` and the decisions the champion and the starter policy give,
    each made as its request arrived."""
    engine = store.open_store(url)
    ingest_tables(engine, tables)
    history = History.from_store(engine)
    replay = backtest(history, load_with_catalogue(STARTER_POLICY), registry.load("champion"))
    decided = replay.decisions
    scores = decided["score"].astype(object).where(decided["score"].notna(), None)
    rows = [
        {
            **dict.fromkeys(store.DECISION_COLUMNS),
            "request_id": request_id,
            "decision": decided.at[request_id, "decision"],
            "score": scores[request_id],
            "approved_amount": round(decided.at[request_id, "approved_amount"] * 100),
            "reasons": "[]",
            "model_version": replay.model_version,
            "decided_at": int(decided.at[request_id, "requested_at"]),
            "request_hash": "0" * 64,
        }
        for request_id in decided.index
    ]
    with engine.begin() as conn:
        for row in rows:
            store.insert_decision(conn, row)
    return engine


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    history = History.from_tables(dataset.read_dataset(SAMPLE))
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=100, test_share=0)
    result = train(history, until=CUT, config=config)
    registry = Registry(tmp_path_factory.mktemp("registry"))
    registry.register(result.bundle)
    registry.promote(result.bundle.version)
    return registry


@pytest.fixture(scope="module")
def urls(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tables = dataset.read_dataset(SAMPLE)
    folder = tmp_path_factory.mktemp("stores")
    urls = {name: f"sqlite:///{folder / name}.db" for name in ("same", "shifted")}
    engines = [
        _store(tables, registry, urls["same"]),
        _store(_shifted(tables), registry, urls["shifted"]),
    ]
    yield urls
    for engine in engines:
        engine.dispose()


def _report(registry: Registry, url: str) -> DriftReport:
    engine = store.open_store(url)
    try:
        history = History.from_store(engine)
    finally:
        engine.dispose()
    bundle = registry.load("champion")
    reference, _ = reference_for(registry, bundle, history)
    return compare(reference, bundle, history, since=to_micros(CUT) or 0)


@pytest.fixture(scope="module")
def reports(registry: Registry, urls: dict[str, str]) -> dict[str, DriftReport]:
    return {name: _report(registry, url) for name, url in urls.items()}


def test_psi_is_zero_for_equal_shares_and_grows_with_the_move() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0
    small, large = psi([0.5, 0.5], [0.45, 0.55]), psi([0.5, 0.5], [0.2, 0.8])
    assert 0 < small < MODERATE
    assert large > MAJOR
    # an empty bin is floored, not infinite
    assert np.isfinite(psi([0.5, 0.5, 0.0], [0.4, 0.4, 0.2]))


def test_the_live_window_is_the_decisions_made_after_the_cut(
    reports: dict[str, DriftReport],
) -> None:
    same = reports["same"]

    assert same.source == "decisions"
    assert same.live_requests > 300
    assert same.reference.decisions is not None
    assert same.reference.start == "2026-03-02T00:00:00+00:00"  # the last 30 days


def test_the_invalid_code_wave_is_flagged_and_nothing_else_moves(
    reports: dict[str, DriftReport],
) -> None:
    same = {d.name: d.psi for d in reports["same"].features}
    shifted = {d.name: d.psi for d in reports["shifted"].features}
    added = {name: shifted[name] - same[name] for name in shifted}

    assert "reason" in reports["shifted"].flagged()
    assert added["reason"] > 1
    assert added["user_refunds_invalid_code_all"] > MODERATE
    # Every input the wave cannot reach reads exactly what it read without the wave.
    for name in shifted:
        if not _MOVED_BY_REASON.search(name):
            assert added[name] == pytest.approx(0, abs=1e-9), name


def test_missing_shares_and_decision_rates_are_reported(
    reports: dict[str, DriftReport],
) -> None:
    report = reports["shifted"]
    assert report.decisions is not None
    assert sum(report.decisions.counts.values()) == report.live_requests
    for drift in report.features:
        assert 0 <= drift.missing_live <= 1
        assert sum(drift.live) == pytest.approx(1)


def test_the_reference_is_computed_once_and_kept_beside_the_bundle(
    registry: Registry, urls: dict[str, str], reports: dict[str, DriftReport]
) -> None:
    bundle = registry.load("champion")
    path = reference_path(registry, bundle.version)
    assert path.is_file()
    assert path.parent == registry.bundle_path(bundle.version).parent
    engine = store.open_store(urls["same"])
    try:
        history = History.from_store(engine)
    finally:
        engine.dispose()
    kept, built = reference_for(registry, bundle, history)
    assert not built
    assert kept == Reference.from_json(path.read_text())
    fresh = build_reference(bundle, history)
    assert [b.shares for b in fresh.features] == [b.shares for b in kept.features]
    assert fresh.requests == kept.requests


def test_monitor_command_prints_writes_a_page_and_a_textfile(
    registry: Registry,
    urls: dict[str, str],
    reports: dict[str, DriftReport],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    page, prom = tmp_path / "drift.html", tmp_path / "drift.prom"
    status = main(
        [
            "monitor",
            "--since",
            CUT,
            "--database-url",
            urls["shifted"],
            "--registry",
            str(registry.path),
            "--html",
            str(page),
            "--prometheus",
            str(prom),
            "--top",
            "300",
        ]
    )
    out = capsys.readouterr().out
    print(out)  # shown with -s: the report on the simulated shift

    assert status == 0
    assert re.search(r"^  reason +\d+\.\d+  major shift", out, re.MULTILINE)
    assert "score PSI" in out
    text = page.read_text()
    assert text.count("data:image/png;base64,") >= 3
    assert "http://" not in text
    assert "https://" not in text
    metrics = prom.read_text()
    assert 'riskmodel_feature_psi{feature="reason"}' in metrics
    assert re.search(r"^riskmodel_score_psi \S+$", metrics, re.MULTILINE)
    assert 'riskmodel_missing_share{feature="reason"}' in metrics


def test_a_span_counts_back_from_the_latest_decision(
    registry: Registry,
    urls: dict[str, str],
    reports: dict[str, DriftReport],
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(
        [
            "monitor",
            "--since",
            "7d",
            "--database-url",
            urls["same"],
            "--registry",
            str(registry.path),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "[2026-04-23T22:15:08+00:00, 2026-04-30T22:15:08+00:00)" in out
