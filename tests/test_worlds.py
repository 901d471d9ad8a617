"""Randomised worlds: drawn from a number and nothing else, the development and evaluation
sets disjoint and each covering every new pattern, oddity and export coverage, every
world's output within the dataset contract, its honest look-alikes shaped as they should
be, and the default market pinned."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pytest

from riskmodel import dataset
from riskmodel.cli import main
from riskmodel.ingest import ingest
from riskmodel.simulator import (
    DEVELOPMENT_WORLDS,
    EVALUATION_WORLDS,
    Simulation,
    SimulationConfig,
    draw_world,
    simulate,
    write_simulation,
    write_world,
)
from riskmodel.simulator.abuse import late_exploit_start
from riskmodel.simulator.currencies import rate_table
from riskmodel.simulator.output import CREDIT_COLUMNS, OUTCOME_COLUMNS
from riskmodel.simulator.patterns import LOOKALIKE_PATTERNS, WORLD_PATTERNS, Pattern
from riskmodel.simulator.worlds import COVERAGES, LABEL_REGIMES, SWITCHES, WORLD_FILE, World

SIZE = {"users": 2_000, "days": 60}


@pytest.fixture(scope="module")
def worlds() -> dict[int, World]:
    return {n: draw_world(n, **SIZE) for n in EVALUATION_WORLDS}


@pytest.fixture(scope="module")
def sims(worlds: dict[int, World]) -> dict[int, Simulation]:
    return {n: simulate(world.config) for n, world in worlds.items()}


@pytest.fixture(scope="module")
def requests(sims: dict[int, Simulation]) -> dict[int, pd.DataFrame]:
    return {n: _requests(sim) for n, sim in sims.items()}


def _requests(sim: Simulation) -> pd.DataFrame:
    """Requests with their truth and their order's columns (suffix ``_order``)."""
    merged = sim.refund_requests.merge(sim.ground_truth, on="request_id", validate="1:1")
    return merged.merge(
        sim.orders, on="order_id", how="left", suffixes=("", "_order"), validate="m:1"
    )


def _with(requests: dict[int, pd.DataFrame], pattern: Pattern) -> list[tuple[int, pd.DataFrame]]:
    """The requests of ``pattern`` in each evaluation world that has any, by world."""
    found = [(n, r[r["pattern"] == pattern]) for n, r in requests.items()]
    return [(n, rows) for n, rows in found if len(rows)]


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# --- drawn from the number ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_number_gives_the_same_world_and_bytes(
    tmp_path: Path, fmt: Literal["parquet", "csv"]
) -> None:
    for out in ("a", "b"):
        world = draw_world(105, users=600, days=30)
        write_simulation(simulate(world.config), tmp_path / out, fmt=fmt)
        write_world(world, tmp_path / out)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert WORLD_FILE in first
    assert first == second


def test_different_numbers_give_different_parameters() -> None:
    drawn = [draw_world(n) for n in (*DEVELOPMENT_WORLDS, *EVALUATION_WORLDS)]
    configs = [json.dumps(w.parameters()["config"] | {"seed": 0}) for w in drawn]
    assert len(set(configs)) == len(configs)


def test_size_and_seed_leave_the_parameters_alone() -> None:
    small, large = draw_world(7, users=500, days=20), draw_world(7, users=9_000, days=200, seed=3)
    assert dataclasses.replace(large.config, users=500, days=20, seed=7) == small.config
    assert small.config.seed == 7


def test_world_json_rebuilds_the_config(tmp_path: Path) -> None:
    world = draw_world(103, users=700, days=40)
    recorded: dict[str, Any] = json.loads(write_world(world, tmp_path).read_text())["config"]
    values = {
        k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
        for k, v in recorded.items()
    }
    values["start"] = datetime.fromisoformat(values["start"])
    assert SimulationConfig(**values) == world.config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"foreign_currency_share": 0.2}, "foreign_rates"),
        ({"foreign_rates": (("CNY", 1.0),)}, "foreign_rates"),
        ({"foreign_rates": (("USD", 0.0),)}, "foreign_rates"),
        ({"abuse_band": (300.0, 100.0)}, "abuse_band"),
        ({"late_exploit_start": 1.0}, "late_exploit_start"),
        ({"weekly_amplitude": 1.0}, "weekly_amplitude"),
        ({"price_level": 0.0}, "price_level"),
        ({"burst_size": (1, 5)}, "ring"),
        ({"turned_days": (0, 5)}, "turned_days"),
        ({"band_abuser_share": 0.6}, "half of the users"),
    ],
)
def test_config_rejects_bad_world_values(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationConfig(**change)


def test_world_numbers_start_at_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        draw_world(0)


# --- the two sets --------------------------------------------------------------------------


def test_development_and_evaluation_worlds_are_fixed_and_disjoint() -> None:
    assert tuple(range(1, 13)) == DEVELOPMENT_WORLDS
    assert tuple(range(101, 109)) == EVALUATION_WORLDS
    assert not set(DEVELOPMENT_WORLDS) & set(EVALUATION_WORLDS)


@pytest.mark.parametrize("numbers", [DEVELOPMENT_WORLDS, EVALUATION_WORLDS])
def test_each_set_covers_every_switch_and_label_regime(numbers: tuple[int, ...]) -> None:
    drawn = [draw_world(n) for n in numbers]
    assert {s for w in drawn for s in w.switched_on} == set(SWITCHES)
    assert {w.label_regime for w in drawn} == set(LABEL_REGIMES)
    assert any(w.dominant for w in drawn)
    assert any(0 in w.abuse_scale.values() for w in drawn)
    assert {w.outcomes for w in drawn} == set(COVERAGES)
    assert {w.credits for w in drawn} == set(COVERAGES)
    assert any(w.outcomes == w.credits == "absent" for w in drawn)


def test_each_world_draws_its_own_lookalike_rates_and_export() -> None:
    drawn = [draw_world(n) for n in (*DEVELOPMENT_WORLDS, *EVALUATION_WORLDS)]
    for name in (
        "retry_rate",
        "resubmission_rate",
        "partial_followup_rate",
        "elapsed_proration_rate",
        "activation_failure_rate",
        "sold_used_rate",
        "honest_refusal_rate",
        "abuse_refusal_rate",
    ):
        values = [getattr(w.config, name) for w in drawn]
        assert len(set(values)) == len(values), name
    for w in drawn:
        rates = (w.config.outcome_report_rate, w.config.credit_report_rate)
        for coverage, rate in zip((w.outcomes, w.credits), rates, strict=True):
            assert {"absent": rate == 0, "full": rate == 1}.get(coverage, 0 < rate < 1)
        assert w.config.sold_used_rate > 0


@pytest.mark.parametrize("pattern", WORLD_PATTERNS, ids=str)
def test_every_new_pattern_appears_in_some_evaluation_world(
    requests: dict[int, pd.DataFrame], pattern: Pattern
) -> None:
    found = _with(requests, pattern)
    assert found, f"no evaluation world shows {pattern}"
    for _, rows in found:
        assert (rows["is_abuse"] == pattern.is_abuse).all()


def test_evaluation_worlds_together_show_every_pattern(sims: dict[int, Simulation]) -> None:
    seen = {p for sim in sims.values() for p in sim.ground_truth["pattern"]}
    assert seen == {p.value for p in Pattern}


# --- the contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("number", EVALUATION_WORLDS)
def test_world_output_keeps_the_contract_and_its_invariants(
    sims: dict[int, Simulation],
    worlds: dict[int, World],
    requests: dict[int, pd.DataFrame],
    number: int,
) -> None:
    sim, cfg, rows = sims[number], worlds[number].config, requests[number]
    left_out = (() if cfg.outcome_report_rate else OUTCOME_COLUMNS) + (
        () if cfg.credit_report_rate else CREDIT_COLUMNS
    )
    for name, frame in sim.tables().items():
        names = dataset.TABLES[name].names
        assert tuple(frame.columns) == tuple(c for c in names if c not in left_out)
        dataset.normalise(name, frame)
    if "paid_amount" in rows:
        answered = rows[rows["paid_amount"].notna()]
        assert (answered["resolved_at"] > answered["requested_at"]).all()
        assert (answered["resolved_at"] < pd.Timestamp(cfg.end)).all()
        assert (answered["paid_amount"] <= answered["amount"] + 1e-9).all()
    if "credited_at" in rows:
        credited = sim.orders[sim.orders["credited_at"].notna()]
        assert (credited["credited_at"] >= credited["paid_at"]).all()
    assert (rows["user_id"] == rows["user_id_order"]).all()
    assert (rows["requested_at"] >= rows["paid_at"]).all()
    assert (rows["requested_at"] < pd.Timestamp(cfg.end)).all()
    assert (rows["amount"] <= rows["amount_order"] + 1e-9).all()
    registered = sim.orders["user_id"].map(sim.users.set_index("user_id")["registered_at"])
    assert (sim.orders["paid_at"] >= registered).all()
    labels = sim.labels.merge(sim.refund_requests, on="request_id", validate="m:1")
    assert (labels["labeled_at"] >= labels["requested_at"]).all()
    usage = sim.usage.merge(sim.orders, on="order_id", validate="m:1")
    assert (usage["used_at"] >= usage["delivered_at"]).all()


def test_a_world_directory_from_the_command_line_ingests(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "world"
    command = ["simulate", "--world", "103", "--out", str(out), "--users", "600", "--days", "30"]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "world 103 (seed 103)" in printed
    assert "multi_currency" in printed

    report = ingest(out, database_url)

    assert report.ignored_files == ("ground_truth.parquet", WORLD_FILE)
    assert report.rows_read["rates"] > 1
    assert json.loads((out / WORLD_FILE).read_text())["world"] == 103


def test_multi_currency_worlds_write_a_rate_for_every_currency(
    sims: dict[int, Simulation], worlds: dict[int, World]
) -> None:
    several = [n for n, w in worlds.items() if "multi_currency" in w.switched_on]
    assert several
    for n in several:
        sim, cfg = sims[n], worlds[n].config
        assert sim.orders["currency"].nunique() > 1
        assert set(sim.orders["currency"]) <= set(sim.rates["currency"])
        assert list(sim.rates.itertuples(index=False, name=None)) == list(rate_table(cfg))
        assert (sim.orders["amount"] >= 0.01).all()


# --- the new patterns and oddities ------------------------------------------------------------


def test_late_exploit_has_no_request_before_its_start(
    requests: dict[int, pd.DataFrame], worlds: dict[int, World]
) -> None:
    late = [n for n, w in worlds.items() if "late_exploit" in w.switched_on]
    assert late
    for n in late:
        cfg = worlds[n].config
        begins = pd.Timestamp(late_exploit_start(cfg), unit="s", tz="UTC")
        assert begins >= pd.Timestamp(cfg.start) + pd.Timedelta(days=0.7 * cfg.days)
        rows = requests[n][requests[n]["pattern"] == Pattern.LATE_EXPLOIT]
        assert (rows["requested_at"] >= begins).all()
        assert (rows["reason"] == "duplicate_charge").all()


def test_codes_sold_used_were_redeemed_before_payment(
    requests: dict[int, pd.DataFrame],
) -> None:
    for _, rows in _with(requests, Pattern.HONEST_DOUBLE_SOLD):
        assert (rows["redeemed_at"] < rows["paid_at"]).all()
        assert (rows["reason"] == "invalid_code").all()
        assert (rows["product_type"] == "card_code").all()
        if "credited_at" in rows:
            assert rows["credited_at"].isna().all()


@pytest.mark.parametrize("pattern", LOOKALIKE_PATTERNS, ids=str)
def test_every_lookalike_appears_in_most_evaluation_worlds(
    requests: dict[int, pd.DataFrame], pattern: Pattern
) -> None:
    found = _with(requests, pattern)
    assert len(found) >= len(EVALUATION_WORLDS) // 2
    for _, rows in found:
        assert not rows["is_abuse"].any()


def test_lookalikes_keep_their_shape_where_the_export_shows_it(
    requests: dict[int, pd.DataFrame], worlds: dict[int, World]
) -> None:
    full = [n for n, w in worlds.items() if w.outcomes == "full"]
    assert full
    for n in full:
        rows = requests[n]
        pairs = rows.merge(
            rows[["order_id", "requested_at", "amount", "paid_amount", "resolved_at"]],
            on="order_id",
            suffixes=("", "_earlier"),
        )
        pairs = pairs[pairs["requested_at_earlier"] < pairs["requested_at"]]
        answered_before = pairs["resolved_at_earlier"] < pairs["requested_at"]
        checks = {
            Pattern.HONEST_RETRY: pairs["paid_amount_earlier"].isna()
            & (pairs["amount"] == pairs["amount_earlier"]),
            Pattern.HONEST_RESUBMISSION: answered_before & (pairs["paid_amount_earlier"] == 0),
            Pattern.HONEST_PARTIAL_FOLLOWUP: answered_before
            & (pairs["paid_amount_earlier"] > 0)
            & (pairs["amount"] <= pairs["amount_earlier"] - pairs["paid_amount_earlier"] + 1e-9),
            Pattern.DUPLICATE_REFUND: answered_before
            & (pairs["paid_amount_earlier"] > 0)
            & (pairs["amount"] > pairs["amount_order"] - pairs["paid_amount_earlier"]),
        }
        for pattern, shaped in checks.items():
            expected = set(rows.loc[rows["pattern"] == pattern, "request_id"])
            assert set(pairs.loc[shaped & (pairs["pattern"] == pattern), "request_id"]) == expected
    for n, rows in requests.items():
        if worlds[n].credits == "absent":
            continue
        failed = rows[rows["pattern"] == Pattern.HONEST_NOT_CREDITED]
        assert (failed["redeemed_at"] < failed["requested_at"]).all()
        assert failed["credited_at"].isna().all()


def test_a_world_without_outcomes_or_crediting_records_ingests(
    tmp_path: Path, database_url: str
) -> None:
    number = next(
        n for n in EVALUATION_WORLDS if draw_world(n).outcomes == draw_world(n).credits == "absent"
    )
    world = draw_world(number, users=600, days=30)
    sim = simulate(world.config)
    write_simulation(sim, tmp_path)
    assert not set(OUTCOME_COLUMNS) & set(sim.refund_requests.columns)
    assert not set(CREDIT_COLUMNS) & set(sim.orders.columns)

    report = ingest(tmp_path, database_url)

    assert report.rows_read == {name: len(frame) for name, frame in sim.tables().items()}


@pytest.mark.parametrize(
    ("pattern", "entity"),
    [
        (Pattern.COLLUDING_SELLER, "seller_id"),
        (Pattern.DEVICE_TAKEOVER, "device_id"),
        (Pattern.PAYMENT_TAKEOVER, "payment_account"),
    ],
    ids=str,
)
def test_an_entity_turned_bad_carries_several_established_accounts(
    requests: dict[int, pd.DataFrame], pattern: Pattern, entity: str
) -> None:
    for _, rows in _with(requests, pattern):
        per_entity = rows.groupby(entity)["user_id"].nunique()
        assert (per_entity >= 2).all()
        assert len(per_entity) < rows["user_id"].nunique()
        spell = rows.groupby(entity)["paid_at"].agg(["min", "max"])
        assert ((spell["max"] - spell["min"]) <= pd.Timedelta(days=63)).all()


def test_burst_accounts_are_young_and_share_little(
    sims: dict[int, Simulation], requests: dict[int, pd.DataFrame]
) -> None:
    for n, rows in _with(requests, Pattern.ACCOUNT_BURST):
        sim = sims[n]
        users = sim.users.set_index("user_id").loc[rows["user_id"].unique()]
        assert len(users) >= 10
        age = rows["paid_at"] - rows["user_id"].map(users["registered_at"])
        assert (age.dt.total_seconds() / 86_400).median() < 25
        orders = sim.orders[sim.orders["user_id"].isin(users.index)]
        assert orders["device_id"].nunique() > len(users) / 2
        assert orders["payment_account"].nunique() == len(users)


def test_amount_band_abuse_stays_inside_its_band(
    sims: dict[int, Simulation], worlds: dict[int, World], requests: dict[int, pd.DataFrame]
) -> None:
    for n, rows in _with(requests, Pattern.AMOUNT_BAND):
        sim = sims[n]
        low, high = worlds[n].config.abuse_band
        rates = sim.rates.set_index("currency")["rate"]
        paid = rows["amount_order"] * rows["currency"].map(rates)
        # Converted amounts are rounded to cents in their own currency.
        slack = rows["currency"].map(rates) * 0.005 + 1e-9
        assert ((paid >= low - slack) & (paid < high + slack)).all()


@pytest.mark.parametrize("regime", LABEL_REGIMES)
def test_label_regimes(regime: str) -> None:
    number = next(n for n in EVALUATION_WORLDS if draw_world(n).label_regime == regime)
    world = draw_world(number, **SIZE)
    sim = simulate(world.config)
    labels = sim.labels.merge(
        sim.ground_truth, on="request_id", suffixes=("", "_truth"), validate="m:1"
    ).merge(sim.refund_requests[["request_id", "requested_at"]], on="request_id")
    truth = sim.ground_truth
    if regime == "fixed_delay":
        delay = pd.Timedelta(days=world.config.fixed_label_delay_days)
        assert (labels["labeled_at"] - labels["requested_at"] == delay).all()
        assert (labels["is_abuse"] == labels["is_abuse_truth"]).all()
        due = sim.refund_requests["requested_at"] + delay < pd.Timestamp(world.config.end)
        assert set(labels["request_id"]) == set(sim.refund_requests.loc[due, "request_id"])
    elif regime == "chargebacks_only":
        assert (labels["source"] == "chargeback").all()
        assert len(labels) > 0
    elif regime == "sparse_honest":
        honest = truth.loc[~truth["is_abuse"], "request_id"]
        assert honest.isin(sim.labels["request_id"]).mean() < 0.03
    else:
        assert set(labels["source"]) >= {"review", "dispute"}


# --- the default market ---------------------------------------------------------------------


def test_default_config_has_every_world_option_off_and_every_lookalike_on() -> None:
    cfg = SimulationConfig()
    shares = [
        "foreign_currency_share",
        "colluding_seller_share",
        "device_takeover_share",
        "payment_takeover_share",
        "band_abuser_share",
        "burst_account_share",
        "late_exploiter_share",
    ]
    assert all(getattr(cfg, name) == 0 for name in shares)
    assert (cfg.abuse_chargeback_rate, cfg.fixed_label_delay_days) == (0, 0)
    lookalikes = ("sold_used_rate", "activation_failure_rate", "retry_rate", "resubmission_rate")
    assert all(getattr(cfg, name) > 0 for name in lookalikes)
    assert (cfg.partial_followup_rate, cfg.elapsed_proration_rate) > (0, 0)
    assert (cfg.outcome_report_rate, cfg.credit_report_rate) == (1, 1)
    assert (cfg.weekly_amplitude, cfg.sales_peak_lift, cfg.price_sigma) == (0, 0, 0)
    assert (cfg.price_level, cfg.foreign_rates) == (1.0, ())


def test_default_market_is_pinned() -> None:
    """The pinned digest of a small default market: if it moves, so did data/sample, and
    the change must be meant (regenerate data/sample and say so)."""
    sim = simulate(SimulationConfig(users=600, days=30, seed=5))
    digest = hashlib.sha256()
    for name in [*dataset.TABLES, "ground_truth"]:
        digest.update(getattr(sim, name).to_csv(index=False).encode())
    assert digest.hexdigest() == "9c9d78a9668babb146bc3d71a16e815e726c4655a59417181add5002e46257a5"
    assert not set(sim.ground_truth["pattern"]) & {p.value for p in WORLD_PATTERNS}
