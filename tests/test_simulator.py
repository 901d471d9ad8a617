"""The marketplace simulator: determinism, the dataset contract, cross-table invariants,
the outcomes of requests, and the shape of every honest, look-alike and abusive pattern."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pytest

from riskmodel import dataset
from riskmodel.domain import LabelSource, ProductType, RefundReason
from riskmodel.ingest import ingest
from riskmodel.simulator import Simulation, SimulationConfig, common, simulate, write_simulation
from riskmodel.simulator.output import CREDIT_COLUMNS, OUTCOME_COLUMNS
from riskmodel.simulator.patterns import (
    ABUSE_PATTERNS,
    DEFAULT_PATTERNS,
    LOOKALIKE_PATTERNS,
    PATTERNS,
    Pattern,
)

DEFAULT = SimulationConfig(users=3_000, days=90, seed=11)
# More opportunists, serial refunders, codes that fail and retries than by default, so
# that even the rarest pattern shows up often enough to be checked in a small market.
CONFIG = dataclasses.replace(
    DEFAULT,
    opportunist_share=0.05,
    serial_refunder_share=0.003,
    activation_failure_rate=0.01,
    sold_used_rate=0.005,
    retry_rate=0.03,
)
SMALL = SimulationConfig(users=600, days=30, seed=5)
START = pd.Timestamp(CONFIG.start)
END = pd.Timestamp(CONFIG.end)


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(CONFIG)


@pytest.fixture(scope="module")
def requests(sim: Simulation) -> pd.DataFrame:
    """Requests with their truth and their order's columns (suffix ``_order``)."""
    merged = sim.refund_requests.merge(sim.ground_truth, on="request_id", validate="1:1")
    return merged.merge(
        sim.orders, on="order_id", how="left", suffixes=("", "_order"), validate="m:1"
    )


@pytest.fixture(scope="module")
def usage_before_request(sim: Simulation, requests: pd.DataFrame) -> pd.Series:
    """Usage days of each request's order seen before the request."""
    joined = sim.usage.merge(requests[["request_id", "order_id", "requested_at"]], on="order_id")
    seen = joined[joined["used_at"] < joined["requested_at"]]
    counts = seen.groupby("request_id").size()
    return requests["request_id"].map(counts).fillna(0).astype(int).set_axis(requests.index)


@pytest.fixture(scope="module")
def earlier(requests: pd.DataFrame) -> pd.DataFrame:
    """Every request paired with each earlier request on its order (suffix ``_earlier``)."""
    columns = ["order_id", "request_id", "requested_at", "amount", "reason", "channel"]
    columns += ["days_used_claimed", "device_id", "ip", "paid_amount", "resolved_at", "pattern"]
    pairs = requests.merge(requests[columns], on="order_id", suffixes=("", "_earlier"))
    return pairs[pairs["requested_at_earlier"] < pairs["requested_at"]]


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _of(frame: pd.DataFrame, pattern: Pattern) -> pd.DataFrame:
    return frame[frame["pattern"] == pattern]


@pytest.mark.parametrize(
    ("values", "enum"),
    [
        (common.PRODUCT_TYPES, ProductType),
        (common.REASONS, RefundReason),
        (common.LABEL_SOURCES, LabelSource),
    ],
)
def test_codes_cover_the_domain_enumerations(values: tuple[str, ...], enum: type[StrEnum]) -> None:
    assert sorted(values) == sorted(e.value for e in enum)


@pytest.mark.parametrize(
    ("values", "code", "name"),
    [
        (common.PRODUCT_TYPES, common.MEMBERSHIP, "membership"),
        (common.PRODUCT_TYPES, common.GAME_CURRENCY, "game_currency"),
        (common.REASONS, common.PARTIAL_USE, "partial_use"),
        (common.REASONS, common.OTHER, "other"),
        (common.LABEL_SOURCES, common.CHARGEBACK, "chargeback"),
        (common.PAYMENT_METHODS, common.BANK_CARD, "bank_card"),
    ],
)
def test_codes_name_what_they_say(values: tuple[str, ...], code: int, name: str) -> None:
    assert values[code] == name


# --- determinism ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_same_config_gives_identical_bytes(tmp_path: Path, fmt: Literal["parquet", "csv"]) -> None:
    write_simulation(simulate(SMALL), tmp_path / "a", fmt=fmt)
    write_simulation(simulate(SMALL), tmp_path / "b", fmt=fmt)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(first) == sorted(f"{t}.{fmt}" for t in [*dataset.TABLES, "ground_truth"])
    assert first == second


def test_different_seed_gives_different_data() -> None:
    one = simulate(SMALL)
    other = simulate(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    assert not one.orders.equals(other.orders)
    assert not one.refund_requests.equals(other.refund_requests)


# --- contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("table", list(dataset.TABLES))
def test_tables_have_contract_columns_and_pass_normalise(sim: Simulation, table: str) -> None:
    frame = getattr(sim, table)
    assert tuple(frame.columns) == dataset.TABLES[table].names
    normalised = dataset.normalise(table, frame)
    assert len(normalised) == len(frame)


@pytest.mark.parametrize("table", list(dataset.TABLES))
def test_natural_types(sim: Simulation, table: str) -> None:
    frame = getattr(sim, table)
    for column in dataset.TABLES[table].columns:
        series = frame[column.name]
        if column.kind is dataset.Kind.TIMESTAMP:
            assert str(series.dtype) == "datetime64[us, UTC]", column.name
            assert (series.dropna().dt.microsecond == 0).all(), column.name
        elif column.kind in (dataset.Kind.MONEY, dataset.Kind.RATE):
            assert series.dtype == np.float64
            known = series.dropna()
            assert np.allclose(known, known.round(2), rtol=0, atol=1e-9)
        elif column.kind is dataset.Kind.COUNT:
            assert str(series.dtype) == "Int64"
        elif column.kind is dataset.Kind.FLAG:
            assert series.dtype == bool
        else:
            assert pd.api.types.is_string_dtype(series.dtype), column.name


def test_csv_and_parquet_read_back_through_the_dataset_reader(tmp_path: Path) -> None:
    small = simulate(SMALL)
    for fmt in ("csv", "parquet"):
        paths = write_simulation(small, tmp_path / fmt, fmt=fmt)
        tables = dataset.read_dataset(tmp_path / fmt)
        assert {name: len(t) for name, t in tables.items()} == {
            name: len(f) for name, f in small.tables().items()
        }
        assert paths["ground_truth"].name == f"ground_truth.{fmt}"
        truth = (
            pd.read_parquet(paths["ground_truth"])
            if fmt == "parquet"
            else pd.read_csv(paths["ground_truth"])
        )
        assert list(truth.columns) == ["request_id", "is_abuse", "pattern"]
        assert truth["request_id"].tolist() == small.refund_requests["request_id"].tolist()


def test_ground_truth_is_not_in_labels(sim: Simulation) -> None:
    assert "pattern" not in sim.labels.columns
    assert len(sim.ground_truth) == len(sim.refund_requests)
    assert sim.ground_truth["request_id"].is_unique


@pytest.mark.parametrize(
    ("table", "keys"),
    [
        ("users", ["registered_at", "user_id"]),
        ("orders", ["paid_at", "order_id"]),
        ("usage", ["used_at", "order_id"]),
        ("refund_requests", ["requested_at", "request_id"]),
        ("labels", ["labeled_at", "request_id"]),
    ],
)
def test_rows_are_sorted(sim: Simulation, table: str, keys: list[str]) -> None:
    frame = getattr(sim, table)
    assert frame.equals(frame.sort_values(keys, kind="stable").reset_index(drop=True))


@pytest.mark.parametrize(
    ("column", "pattern"),
    [
        ("user_id", r"^u\d{7}$"),
        ("order_id", r"^o\d{8}$"),
        ("seller_id", r"^s\d{4}$"),
        ("device_id", r"^d\d{7}$"),
        ("payment_account", r"^pa\d{7}$"),
        ("ip", r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$"),
    ],
)
def test_readable_identifiers(sim: Simulation, column: str, pattern: str) -> None:
    assert sim.orders[column].str.fullmatch(pattern).all()
    assert sim.refund_requests["request_id"].str.fullmatch(r"^r\d{7}$").all()


# --- cross-table invariants ----------------------------------------------------------------


def test_orders_belong_to_known_users_after_registration(sim: Simulation) -> None:
    users = sim.users.set_index("user_id")
    assert sim.orders["user_id"].isin(users.index).all()
    registered = sim.orders["user_id"].map(users["registered_at"])
    assert (sim.orders["paid_at"] >= registered).all()
    assert sim.orders["paid_at"].between(START, END, inclusive="left").all()


def test_delivery_and_redemption_follow_payment(sim: Simulation) -> None:
    orders = sim.orders
    for column in ("delivered_at", "redeemed_at", "credited_at", "activation_failed_at"):
        known = orders[column].notna()
        assert (orders.loc[known, column] < END).all(), column
    delivered = orders["delivered_at"].notna()
    assert (orders.loc[delivered, "delivered_at"] >= orders.loc[delivered, "paid_at"]).all()
    redeemed = orders["redeemed_at"].notna()
    assert orders.loc[redeemed, "product_type"].isin(["card_code", "game_currency"]).all()
    # Only a code sold already used was redeemed before its buyer paid.
    sold_used = redeemed & (orders["redeemed_at"] < orders["paid_at"])
    assert (orders.loc[sold_used, "product_type"] == "card_code").all()
    assert 0 < sold_used.sum() < 0.02 * redeemed.sum()
    member = orders["product_type"] == "membership"
    assert orders.loc[member, "service_days"].isin([30, 90, 365]).all()
    assert orders.loc[~member, "service_days"].isna().all()


def test_requests_match_their_orders(requests: pd.DataFrame) -> None:
    assert requests["paid_at"].notna().all(), "every request's order exists"
    assert (requests["user_id"] == requests["user_id_order"]).all()
    assert (requests["requested_at"] >= requests["paid_at"]).all()
    assert (requests["requested_at"] < END).all()
    assert (requests["amount"] > 0).all()
    assert (requests["amount"] <= requests["amount_order"] + 1e-9).all()


def test_usage_stays_inside_the_service_period(sim: Simulation) -> None:
    usage = sim.usage.merge(sim.orders, on="order_id", how="left", validate="m:1")
    assert (usage["product_type"] == "membership").all()
    assert (usage["used_at"] >= usage["paid_at"]).all()
    assert (usage["used_at"] >= usage["delivered_at"]).all()
    period_end = usage["paid_at"] + pd.to_timedelta(usage["service_days"].astype(int), unit="D")
    assert (usage["used_at"] < period_end).all()
    assert (usage["used_at"] < END).all()
    days = usage.groupby("order_id").agg(n=("used_at", "size"), limit=("service_days", "first"))
    assert (days["n"] <= days["limit"]).all()


def test_refunded_memberships_stop_at_the_first_request(
    sim: Simulation, requests: pd.DataFrame
) -> None:
    first = requests.groupby("order_id")["requested_at"].min()
    usage = sim.usage[sim.usage["order_id"].isin(first.index)]
    assert (usage["used_at"] < usage["order_id"].map(first)).all()


def test_labels_are_late_known_and_keyed(sim: Simulation) -> None:
    labels = sim.labels.merge(sim.refund_requests, on="request_id", how="left")
    assert labels["requested_at"].notna().all()
    assert (labels["labeled_at"] >= labels["requested_at"]).all()
    assert (labels["labeled_at"] < END).all()
    assert not sim.labels.duplicated(["request_id", "labeled_at"]).any()


def test_labels_are_partial_and_mostly_right(sim: Simulation) -> None:
    truth = sim.ground_truth.set_index("request_id")
    labelled = truth.index.isin(sim.labels["request_id"])
    abusive = truth["is_abuse"].to_numpy()
    assert 0 < labelled[~abusive].mean() < labelled[abusive].mean() < 1
    agree = sim.labels["is_abuse"] == sim.labels["request_id"].map(truth["is_abuse"])
    assert 0.85 < agree.mean() < 1.0


@pytest.mark.parametrize(
    ("source", "low_days", "high_days"),
    [("review", 1, 5), ("issuer_report", 3, 14), ("dispute", 5, 80), ("chargeback", 20, 60)],
)
def test_label_delays_by_source(
    sim: Simulation, source: str, low_days: float, high_days: float
) -> None:
    labels = sim.labels[sim.labels["source"] == source].merge(
        sim.refund_requests[["request_id", "requested_at"]], on="request_id"
    )
    assert len(labels) > 0
    delay = (labels["labeled_at"] - labels["requested_at"]).dt.total_seconds() / 86_400
    assert delay.between(low_days, high_days).all()


# --- outcomes ------------------------------------------------------------------------------


def test_outcomes_are_given_together_and_after_the_request(requests: pd.DataFrame) -> None:
    answered = requests["paid_amount"].notna()
    assert (answered == requests["resolved_at"].notna()).all()
    rows = requests[answered]
    assert (rows["resolved_at"] > rows["requested_at"]).all()
    assert (rows["resolved_at"] < END).all()
    assert (rows["paid_amount"] >= 0).all()
    assert (rows["paid_amount"] <= rows["amount"] + 1e-9).all()


def test_honest_requests_are_mostly_paid_within_hours_to_days(requests: pd.DataFrame) -> None:
    honest = requests[~requests["is_abuse"]]
    answered = honest[honest["paid_amount"].notna()]
    assert 0.9 < len(answered) / len(honest) < 1
    refused = answered["paid_amount"] == 0
    assert 0.02 < refused.mean() < 0.15
    delay = answered["resolved_at"] - answered["requested_at"]
    assert delay.median() < pd.Timedelta(days=1)
    assert (delay <= pd.Timedelta(days=4)).all()
    assert (delay <= pd.Timedelta(minutes=2)).mean() > 0.2


def test_abusive_requests_are_mostly_paid_unless_caught(requests: pd.DataFrame) -> None:
    abusive = requests[requests["is_abuse"] & requests["paid_amount"].notna()]
    refused = abusive["paid_amount"] == 0
    assert 0.05 < refused.mean() < 0.5
    dips = _of(requests, Pattern.DOUBLE_DIP)
    assert (dips["paid_amount"].dropna() > 0).all()


def test_some_memberships_are_paid_in_part_by_the_days_elapsed(requests: pd.DataFrame) -> None:
    part = requests[(requests["paid_amount"] > 0) & (requests["paid_amount"] < requests["amount"])]
    assert len(part) > 0
    assert (part["product_type"] == "membership").all()
    assert part["reason"].isin(["partial_use", "unused"]).all()
    elapsed = np.ceil((part["requested_at"] - part["delivered_at"]).dt.total_seconds() / 86_400)
    days = part["service_days"].astype(int)
    expected = (part["amount_order"] * (days - elapsed) / days - CONFIG.prorated_fee).round(2)
    assert np.allclose(part["paid_amount"], expected, atol=0.005)


def test_an_export_may_hold_part_or_none_of_the_outcomes_and_crediting_records(
    tmp_path: Path,
) -> None:
    partial = simulate(dataclasses.replace(SMALL, outcome_report_rate=0.5, credit_report_rate=0.5))
    full = simulate(SMALL)
    for name in ("paid_amount", "resolved_at"):
        assert (
            0
            < partial.refund_requests[name].notna().sum()
            < full.refund_requests[name].notna().sum()
        )
    assert (
        0 < partial.orders["credited_at"].notna().sum() < full.orders["credited_at"].notna().sum()
    )
    assert len(partial.refund_requests) == len(full.refund_requests)

    none = simulate(dataclasses.replace(SMALL, outcome_report_rate=0.0, credit_report_rate=0.0))
    assert not set(OUTCOME_COLUMNS) & set(none.refund_requests.columns)
    assert not set(CREDIT_COLUMNS) & set(none.orders.columns)
    pd.testing.assert_frame_equal(
        none.refund_requests, full.refund_requests.drop(columns=list(OUTCOME_COLUMNS))
    )
    write_simulation(none, tmp_path)
    tables = dataset.read_dataset(tmp_path)
    assert tables["refund_requests"]["paid_amount"].isna().all()
    assert tables["orders"]["credited_at"].isna().all()


@pytest.mark.parametrize("outcomes", [1.0, 0.0])
def test_simulated_directories_ingest(tmp_path: Path, database_url: str, outcomes: float) -> None:
    cfg = dataclasses.replace(
        CONFIG, users=800, days=45, outcome_report_rate=outcomes, credit_report_rate=outcomes
    )
    sim = simulate(cfg)
    write_simulation(sim, tmp_path / "sim")

    report = ingest(tmp_path / "sim", database_url)

    assert report.rows_read == {name: len(frame) for name, frame in sim.tables().items()}
    assert report.ignored_files == ("ground_truth.parquet",)


# --- honest patterns -----------------------------------------------------------------------


def test_honest_prorated_claims_match_the_formula(
    requests: pd.DataFrame, usage_before_request: pd.Series
) -> None:
    partial = requests["pattern"] == Pattern.HONEST_PARTIAL_USE
    assert partial.sum() > 20
    rows = requests[partial]
    claimed = rows["days_used_claimed"].astype(int)
    assert (claimed == usage_before_request[partial]).all()
    days = rows["service_days"].astype(int)
    expected = (rows["amount_order"] * (days - claimed) / days - CONFIG.prorated_fee).round(2)
    assert np.allclose(rows["amount"], expected, atol=0.005)
    assert (claimed >= 1).all()


def test_prorated_fee_is_subtracted() -> None:
    fee = 2.5
    sim = simulate(dataclasses.replace(SMALL, users=1_500, prorated_fee=fee))
    rows = sim.refund_requests.merge(sim.ground_truth, on="request_id").merge(
        sim.orders[["order_id", "amount", "service_days"]], on="order_id", suffixes=("", "_paid")
    )
    rows = rows[rows["pattern"] == Pattern.HONEST_PARTIAL_USE]
    assert len(rows) > 0
    days, claimed = rows["service_days"].astype(int), rows["days_used_claimed"].astype(int)
    expected = (rows["amount_paid"] * (days - claimed) / days - fee).round(2)
    assert np.allclose(rows["amount"], expected, atol=0.005)


def test_honest_unused_means_nothing_used(
    requests: pd.DataFrame, usage_before_request: pd.Series
) -> None:
    unused = requests[requests["pattern"] == Pattern.HONEST_UNUSED]
    assert len(unused) > 0
    assert (usage_before_request[unused.index] == 0).all()
    assert unused["redeemed_at"].isna().all()
    assert (unused["reason"] == "unused").all()
    assert unused["product_type"].ne("game_currency").all()
    soon = unused["requested_at"] - unused["delivered_at"] <= pd.Timedelta(days=3)
    assert soon.all()


def test_honest_bad_batch_clusters_on_few_sellers(requests: pd.DataFrame) -> None:
    batch = requests[requests["pattern"] == Pattern.HONEST_BAD_BATCH]
    assert len(batch) > 5
    assert (batch["reason"] == "invalid_code").all()
    assert batch["redeemed_at"].isna().all()
    assert (batch["product_type"] == "card_code").all()
    top = batch["seller_id"].value_counts()
    assert top.iloc[0] / len(batch) > 0.1
    assert batch["seller_id"].nunique() < requests["seller_id"].nunique() / 5


def test_honest_not_delivered_is_late_or_missing(requests: pd.DataFrame) -> None:
    missing = requests[requests["pattern"] == Pattern.HONEST_NOT_DELIVERED]
    assert len(missing) > 0
    assert missing["delivered_at"].isna().all()
    late = requests[requests["pattern"] == Pattern.HONEST_LATE_DELIVERY]
    assert len(late) > 0
    lag = late["delivered_at"] - late["paid_at"]
    assert (lag.dropna() >= pd.Timedelta(hours=2)).all()
    assert (late["requested_at"] < late["delivered_at"]).mean() > 0.5


def test_honest_duplicate_charge_refunds_the_second_charge(
    sim: Simulation, requests: pd.DataFrame
) -> None:
    dup = requests[requests["pattern"] == Pattern.HONEST_DUPLICATE_CHARGE]
    assert len(dup) > 0
    assert (dup["reason"] == "duplicate_charge").all()
    pairs = dup.merge(
        sim.orders[["user_id", "product_id", "paid_at", "order_id"]],
        left_on=["user_id", "product_id"],
        right_on=["user_id", "product_id"],
        suffixes=("", "_first"),
    )
    gap = pairs["paid_at"] - pairs["paid_at_first"]
    earlier = (gap > pd.Timedelta(0)) & (gap <= pd.Timedelta(minutes=10))
    assert pairs.loc[earlier, "request_id"].nunique() == len(dup)


def test_honest_accounts_share_ips_and_devices(sim: Simulation, requests: pd.DataFrame) -> None:
    honest_users = set(requests.loc[~requests["is_abuse"], "user_id"])
    orders = sim.orders[sim.orders["user_id"].isin(honest_users)]
    users_per_ip = sim.orders.groupby("ip")["user_id"].nunique()
    shared_ips = users_per_ip[users_per_ip >= 20].index
    assert orders["ip"].isin(shared_ips).mean() > 0.1
    users_per_device = sim.orders.groupby("device_id")["user_id"].nunique()
    assert (users_per_device >= 2).sum() > 50


def test_buyer_activity_is_heavy_tailed(sim: Simulation) -> None:
    per_user = sim.orders["user_id"].value_counts()
    assert per_user.max() > 10 * per_user.median()
    new = sim.users["registered_at"] >= START
    assert 0.1 < new.mean() < 0.5
    assert sim.users["phone_verified"].mean() > 0.8


# --- honest look-alikes ---------------------------------------------------------------------


@pytest.mark.parametrize("pattern", LOOKALIKE_PATTERNS, ids=str)
def test_every_lookalike_appears_as_honest(requests: pd.DataFrame, pattern: Pattern) -> None:
    rows = _of(requests, pattern)
    assert len(rows) >= 5
    assert not rows["is_abuse"].any()


def test_a_retry_repeats_a_request_still_unanswered(
    requests: pd.DataFrame, earlier: pd.DataFrame
) -> None:
    retries = _of(requests, Pattern.HONEST_RETRY)
    pairs = _of(earlier, Pattern.HONEST_RETRY)
    same = ["amount", "reason", "channel", "device_id", "ip"]
    same_request = pairs[same].to_numpy() == pairs[[f"{c}_earlier" for c in same]].to_numpy()
    pairs = pairs[same_request.all(axis=1)]
    gap = pairs["requested_at"] - pairs["requested_at_earlier"]
    pairs = pairs[(gap >= pd.Timedelta(seconds=5)) & (gap <= pd.Timedelta(minutes=30))]
    # The first of the pair is never answered.
    first = pairs[pairs["paid_amount_earlier"].isna() & pairs["resolved_at_earlier"].isna()]
    assert set(first["request_id"]) == set(retries["request_id"])
    assert (
        first["days_used_claimed"].fillna(-1) == first["days_used_claimed_earlier"].fillna(-1)
    ).all()


def test_a_retried_request_keeps_its_truth(earlier: pd.DataFrame) -> None:
    same = ["amount", "reason", "channel", "device_id", "ip"]
    alike = earlier[same].to_numpy() == earlier[[f"{c}_earlier" for c in same]].to_numpy()
    gap = earlier["requested_at"] - earlier["requested_at_earlier"]
    retried = earlier[
        alike.all(axis=1)
        & (gap <= pd.Timedelta(minutes=30))
        & earlier["paid_amount_earlier"].isna()
    ]
    abusive = retried["pattern_earlier"].isin(ABUSE_PATTERNS)
    # The pipeline retries abusive requests too: the same abuse again, not a look-alike.
    assert abusive.any()
    assert (retried.loc[abusive, "pattern"] == retried.loc[abusive, "pattern_earlier"]).all()
    assert (retried.loc[~abusive, "pattern"] == Pattern.HONEST_RETRY).all()


def test_a_resubmission_follows_a_refusal(requests: pd.DataFrame, earlier: pd.DataFrame) -> None:
    rows = _of(requests, Pattern.HONEST_RESUBMISSION)
    pairs = _of(earlier, Pattern.HONEST_RESUBMISSION)
    refused = pairs[
        (pairs["paid_amount_earlier"] == 0) & (pairs["resolved_at_earlier"] < pairs["requested_at"])
    ]
    assert set(refused["request_id"]) == set(rows["request_id"])
    gap = refused["requested_at"] - refused["resolved_at_earlier"]
    assert (gap >= pd.Timedelta(hours=12)).all()
    assert (refused["amount"] == refused["amount_earlier"]).all()
    # Nothing was ever paid on the order before it.
    paid = pairs.groupby("request_id")["paid_amount_earlier"].sum()
    assert (paid[rows["request_id"]] == 0).all()


def test_a_partial_followup_asks_at_most_the_unpaid_remainder(
    requests: pd.DataFrame, earlier: pd.DataFrame
) -> None:
    rows = _of(requests, Pattern.HONEST_PARTIAL_FOLLOWUP)
    assert (rows["product_type"] == "membership").all()
    pairs = _of(earlier, Pattern.HONEST_PARTIAL_FOLLOWUP)
    part = pairs[
        (pairs["paid_amount_earlier"] > 0)
        & (pairs["paid_amount_earlier"] < pairs["amount_earlier"])
        & (pairs["resolved_at_earlier"] < pairs["requested_at"])
    ]
    assert set(part["request_id"]) == set(rows["request_id"])
    remainder = part["amount_earlier"] - part["paid_amount_earlier"]
    assert (part["amount"] <= remainder + 1e-9).all()
    # What was paid on the order and what is asked stay within the price.
    paid = pairs.groupby("request_id")["paid_amount_earlier"].sum()
    asked = rows.set_index("request_id")["amount"]
    price = rows.set_index("request_id")["amount_order"]
    assert (paid[asked.index] + asked <= price + 1e-9).all()
    assert (part["amount"] < remainder - 0.005).any()


def test_a_code_not_credited_was_redeemed_but_never_reached_the_buyer(
    requests: pd.DataFrame,
) -> None:
    rows = _of(requests, Pattern.HONEST_NOT_CREDITED)
    assert (rows["product_type"] == "card_code").all()
    assert (rows["reason"] == "invalid_code").all()
    assert (rows["redeemed_at"] >= rows["paid_at"]).all()
    assert (rows["redeemed_at"] < rows["requested_at"]).all()
    assert rows["credited_at"].isna().all()
    failed = rows["activation_failed_at"].notna()
    assert 0 < failed.mean() < 1
    assert (rows.loc[failed, "activation_failed_at"] >= rows.loc[failed, "redeemed_at"]).all()


def test_a_double_sold_code_was_redeemed_before_payment(requests: pd.DataFrame) -> None:
    rows = _of(requests, Pattern.HONEST_DOUBLE_SOLD)
    assert (rows["product_type"] == "card_code").all()
    assert (rows["reason"] == "invalid_code").all()
    assert (rows["redeemed_at"] < rows["paid_at"]).all()
    assert rows["credited_at"].isna().all()
    assert rows["activation_failed_at"].isna().all()


def test_crediting_records(sim: Simulation) -> None:
    orders = sim.orders
    credited = orders["credited_at"].notna()
    failed = orders["activation_failed_at"].notna()
    assert not (credited & failed).any()
    assert (orders.loc[credited, "credited_at"] == orders.loc[credited, "redeemed_at"]).all()
    assert (orders.loc[credited, "credited_at"] >= orders.loc[credited, "paid_at"]).all()
    assert (orders.loc[failed, "product_type"] == "card_code").all()
    assert (orders.loc[failed, "activation_failed_at"] >= orders.loc[failed, "redeemed_at"]).all()
    currency = orders["product_type"] == "game_currency"
    assert (credited[currency] == orders.loc[currency, "redeemed_at"].notna()).all()
    assert not credited[orders["product_type"].isin(["membership", "service"])].any()


def test_lookalikes_appear_in_the_default_market() -> None:
    sim = simulate(SimulationConfig(users=10_000, days=120, seed=3))
    counts = sim.ground_truth["pattern"].value_counts()
    for pattern in LOOKALIKE_PATTERNS:
        assert counts.get(pattern.value, 0) >= 3, pattern
    assert counts[[p.value for p in LOOKALIKE_PATTERNS]].sum() < 0.1 * len(sim.ground_truth)


# --- abusive patterns ----------------------------------------------------------------------


def test_every_pattern_of_the_default_market_appears(sim: Simulation) -> None:
    seen = set(sim.ground_truth["pattern"])
    assert seen == {p.value for p in DEFAULT_PATTERNS}
    assert (sim.ground_truth["is_abuse"] == sim.ground_truth["pattern"].isin(ABUSE_PATTERNS)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abusive_share_and_refund_rate_are_plausible(seed: int) -> None:
    sim = simulate(dataclasses.replace(DEFAULT, seed=seed))
    share = sim.ground_truth["is_abuse"].mean()
    assert 0.02 <= share <= 0.07
    assert 0.04 <= len(sim.refund_requests) / len(sim.orders) <= 0.1


def test_prorated_overclaims_claim_fewer_days_than_seen(
    requests: pd.DataFrame, usage_before_request: pd.Series
) -> None:
    over = requests["pattern"] == Pattern.PRORATED_OVERCLAIM
    assert over.sum() > 0
    rows = requests[over]
    claimed = rows["days_used_claimed"].astype(int)
    assert (claimed < usage_before_request[over]).all()
    assert (rows["reason"] == "partial_use").all()
    days = rows["service_days"].astype(int)
    expected = (rows["amount_order"] * (days - claimed) / days - CONFIG.prorated_fee).round(2)
    assert np.allclose(rows["amount"], expected, atol=0.005)


def test_redeemed_then_invalid_was_redeemed_and_credited(requests: pd.DataFrame) -> None:
    rows = requests[requests["pattern"] == Pattern.REDEEMED_THEN_INVALID]
    assert len(rows) > 0
    assert (rows["product_type"] == "card_code").all()
    assert (rows["reason"] == "invalid_code").all()
    assert (rows["redeemed_at"] < rows["requested_at"]).all()
    assert (rows["redeemed_at"] >= rows["paid_at"]).all()
    assert (rows["credited_at"] < rows["requested_at"]).all()
    assert rows["activation_failed_at"].isna().all()


def test_credited_then_not_delivered(requests: pd.DataFrame) -> None:
    rows = requests[requests["pattern"] == Pattern.CREDITED_THEN_NOT_DELIVERED]
    assert len(rows) > 0
    assert (rows["product_type"] == "game_currency").all()
    assert (rows["reason"] == "not_delivered").all()
    assert (rows["redeemed_at"] < rows["requested_at"]).all()
    assert (rows["delivered_at"] <= rows["redeemed_at"]).all()


def test_duplicate_refund_is_a_real_second_payout(
    requests: pd.DataFrame, earlier: pd.DataFrame
) -> None:
    rows = _of(requests, Pattern.DUPLICATE_REFUND)
    assert len(rows) > 3
    pairs = _of(earlier, Pattern.DUPLICATE_REFUND)
    # The earlier request on the order was paid before it, and it asks beyond what is left.
    paid = pairs[
        (pairs["paid_amount_earlier"] > 0) & (pairs["resolved_at_earlier"] < pairs["requested_at"])
    ]
    left = paid["amount_order"] - paid["paid_amount_earlier"]
    beyond = paid.loc[paid["amount"] > left + 0.005, "request_id"]
    assert set(beyond) == set(rows["request_id"])
    gap = paid["requested_at"] - paid["resolved_at_earlier"]
    assert (gap >= pd.Timedelta(minutes=30)).all()


def test_double_dip_gets_a_late_chargeback(sim: Simulation, requests: pd.DataFrame) -> None:
    rows = requests[requests["pattern"] == Pattern.DOUBLE_DIP]
    assert len(rows) > 0
    assert (rows["payment_method"] == "bank_card").mean() > 0.5
    chargebacks = sim.labels[sim.labels["source"] == "chargeback"]
    assert len(chargebacks) > 0
    assert set(chargebacks["request_id"]) <= set(rows["request_id"])
    delay = chargebacks["request_id"].map(rows.set_index("request_id")["requested_at"])
    assert (chargebacks["labeled_at"] - delay >= pd.Timedelta(days=20)).all()


@pytest.mark.parametrize("pattern", [Pattern.REFUND_RING, Pattern.FAKE_ORDERS])
def test_rings_are_young_accounts_sharing_entities(
    sim: Simulation, requests: pd.DataFrame, pattern: Pattern
) -> None:
    rows = requests[requests["pattern"] == pattern]
    assert len(rows) > 0
    members = rows["user_id"].unique()
    users = sim.users.set_index("user_id")
    assert (users.loc[members, "registered_at"] > START - pd.Timedelta(days=4)).all()
    age = rows["paid_at"] - rows["user_id"].map(users["registered_at"])
    assert (age.dt.total_seconds() / 86_400).median() < 25
    orders = sim.orders[sim.orders["user_id"].isin(members)]
    for entity in ("device_id", "ip", "payment_account"):
        assert orders[entity].nunique() < len(members) + 3, entity
    if pattern is Pattern.FAKE_ORDERS:
        assert rows["seller_id"].nunique() <= max(1, len(members) // 4)


def test_serial_refunders_refund_most_of_what_they_buy(
    sim: Simulation, requests: pd.DataFrame
) -> None:
    serial = requests.loc[requests["pattern"] == Pattern.SERIAL_REFUNDER, "user_id"].unique()
    assert len(serial) > 0
    bought = sim.orders[sim.orders["user_id"].isin(serial)].groupby("user_id").size()
    refunded = requests[requests["user_id"].isin(serial)].groupby("user_id")["order_id"].nunique()
    assert (refunded / bought).mean() > 0.4


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"users": 5}, "users"),
        ({"days": 0}, "days"),
        ({"label_flip_rate": 1.5}, "label_flip_rate"),
        ({"product_mix": (0.5, 0.5, 0.5, 0.5)}, "product_mix"),
        ({"ring_size": (5, 2)}, "ring_size"),
        ({"prorated_fee": -1.0}, "prorated_fee"),
    ],
)
def test_config_rejects_bad_values(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SMALL, **change)  # type: ignore[arg-type]


def test_start_is_honoured_and_read_as_utc() -> None:
    cfg = dataclasses.replace(SMALL, start=datetime(2025, 6, 1))
    assert cfg.start == datetime(2025, 6, 1, tzinfo=UTC)
    sim = simulate(cfg)
    assert sim.orders["paid_at"].min() >= pd.Timestamp("2025-06-01", tz="UTC")
    assert sim.orders["paid_at"].max() < pd.Timestamp("2025-07-01", tz="UTC")


_RATES = [f.name for f in dataclasses.fields(SimulationConfig) if f.name.endswith("_rate")]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"users": 10, "days": 1}, id="tiny"),
        pytest.param({"users": 200, "days": 400}, id="longer-than-a-year"),
        pytest.param(dict.fromkeys(_RATES, 0.0), id="all-rates-zero"),
        pytest.param(dict.fromkeys(_RATES, 1.0), id="all-rates-one"),
        pytest.param({"public_ip_share": 1.0, "household_share": 1.0}, id="all-shared"),
    ],
)
def test_extreme_configs_keep_the_contract(change: dict[str, object]) -> None:
    sim = simulate(dataclasses.replace(SMALL, **change))  # type: ignore[arg-type]
    for name, frame in sim.tables().items():
        dataset.normalise(name, frame)
    assert len(sim.ground_truth) == len(sim.refund_requests)
    merged = sim.refund_requests.merge(sim.orders, on="order_id", suffixes=("", "_order"))
    assert len(merged) == len(sim.refund_requests)
    assert (merged["requested_at"] >= merged["paid_at"]).all()
    assert (merged["amount"] <= merged["amount_order"]).all()


def test_without_abuse_every_request_is_honest() -> None:
    quiet = {
        f.name: 0.0
        for f in dataclasses.fields(SimulationConfig)
        if f.name
        in {
            "serial_refunder_share",
            "opportunist_share",
            "ring_account_share",
            "fake_order_account_share",
        }
    }
    sim = simulate(dataclasses.replace(SMALL, **quiet))  # type: ignore[arg-type]
    assert len(sim.refund_requests) > 0
    assert not sim.ground_truth["is_abuse"].any()


def test_docs_describe_every_parameter_and_pattern() -> None:
    text = (Path(__file__).parents[1] / "docs" / "simulator.md").read_text(encoding="utf-8")
    missing = [f.name for f in dataclasses.fields(SimulationConfig) if f"`{f.name}`" not in text]
    missing += [p.value for p in PATTERNS if f"`{p.value}`" not in text]
    assert not missing
