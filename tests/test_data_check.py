"""``riskmodel data check``: the figures of a hand-made export whose answers are known."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features import model_features
from riskmodel.cli import main
from riskmodel.dataset import normalise, read_dataset
from training.datacheck import (
    LEAK,
    NOTHING,
    DataCheck,
    RowShare,
    check_dataset,
    render,
    single_feature_auc,
)

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
BASE = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
UNTIL = "2026-01-20"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
SHARED_IP = "10.0.0.1"


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _export() -> dict[str, pd.DataFrame]:
    """Forty card-code orders, each asked back two days after payment.

    Verdicts: reviews two days after the request on r1..r20 (odd ones abuse); chargebacks
    30 days after on r1, r3, r5 (abuse already) and r2, r4 (were honest: two changes);
    disputes ten days after on r21..r30 (honest); one verdict without a source dated an
    hour *before* its request (r31, honest). r32..r40 share one IP and no verdict; r41 is
    asked on 2 February, after everything else. Latest verdicts: 12 abuse, 19 honest.

    Planted leak: ``days_used_claimed`` is 7 exactly on the requests finally judged abuse.
    Odd rows, one each: o1 redeemed before payment, o2 delivered before payment, r3 asked
    before its payment, r5 asking twice the order's amount, o41 a membership without
    service_days, o42 a one-day membership used on two days, one of them outside.
    """
    abuse = {i for i in range(1, 20, 2)} | {2, 4}
    users = pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(20)], "registered_at": "2025-12-01T00:00:00Z"}
    )
    orders, requests = [], []
    for i in range(1, 44):
        paid = BASE + i * HOUR if i <= 40 else BASE + (3 * DAY if i < 43 else 27 * DAY)
        membership = i in (41, 42)
        orders.append(
            {
                "order_id": f"o{i}",
                "user_id": f"u{i % 20}",
                "product_type": "membership" if membership else "card_code",
                "amount": "10.00",
                "paid_at": _iso(paid),
                "currency": "CNY",
                "seller_id": "s1",
                "product_id": f"p{i % 5}",
                "payment_account": f"pa{i}",
                "device_id": None if 37 <= i <= 40 else f"d{i}",
                "ip": SHARED_IP if 32 <= i <= 40 else f"ip{i}",
                "delivered_at": _iso(paid - HOUR if i == 2 else paid + HOUR),
                "redeemed_at": _iso(paid - DAY) if i == 1 else None,
                "service_days": 1 if i == 42 else None,
            }
        )
        if membership:
            continue
        asked = paid - HOUR if i == 3 else paid + 2 * DAY
        requests.append(
            {
                "request_id": f"r{i}",
                "order_id": f"o{i}",
                "user_id": f"u{i % 20}",
                "requested_at": _iso(asked),
                "amount": "20.00" if i == 5 else "10.00",
                "reason": "invalid_code",
                "days_used_claimed": 7 if i in abuse else None,
                "device_id": f"d{i}",
                "ip": SHARED_IP if 32 <= i <= 40 else f"ip{i}",
            }
        )
    asked_at = {r["request_id"]: datetime.fromisoformat(r["requested_at"]) for r in requests}
    labels = []

    def label(request: int, after: timedelta, is_abuse: bool, source: str | None) -> None:
        when = asked_at[f"r{request}"] + after
        labels.append(
            {
                "request_id": f"r{request}",
                "is_abuse": str(is_abuse).lower(),
                "labeled_at": _iso(when),
                "source": source,
            }
        )

    for i in range(1, 21):
        label(i, 2 * DAY, i % 2 == 1, "review")
    for i in (1, 3, 5, 2, 4):
        label(i, 30 * DAY, True, "chargeback")
    for i in range(21, 31):
        label(i, 10 * DAY, False, "dispute")
    label(31, -HOUR, False, None)
    paid_42 = BASE + 3 * DAY
    usage = pd.DataFrame(
        {"order_id": ["o42", "o42"], "used_at": [_iso(paid_42 + HOUR), _iso(paid_42 + 3 * DAY)]}
    )
    return {
        "users": users,
        "orders": pd.DataFrame(orders),
        "usage": usage,
        "refund_requests": pd.DataFrame(requests),
        "labels": pd.DataFrame(labels),
    }


def _write(directory: Path, tables: dict[str, pd.DataFrame]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(directory / f"{name}.csv", index=False)
    return directory


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("export"), _export())


@pytest.fixture(scope="module")
def check(export_dir: Path) -> DataCheck:
    return check_dataset(read_dataset(export_dir))


def _row(rows: tuple[RowShare, ...], what: str) -> RowShare:
    return next(r for r in rows if r.what == what)


def test_tables_rows_and_spans(check: DataCheck) -> None:
    by_name = {t.name: t for t in check.tables}

    assert {n: t.rows for n, t in by_name.items()} == {
        "users": 20,
        "orders": 43,
        "usage": 2,
        "refund_requests": 41,
        "labels": 36,
        "rates": 0,
    }
    assert not by_name["rates"].present
    assert by_name["refund_requests"].first == "2026-01-05T02:00:00+00:00"  # r3, before payment
    assert by_name["refund_requests"].last == "2026-02-03T00:00:00+00:00"  # r41
    assert check.currencies.orders == {"CNY": 43}
    assert check.currencies.problem is None


def test_label_coverage_and_abuse_share(check: DataCheck) -> None:
    labels = check.labels

    assert (labels.requests, labels.labelled, labels.abuse, labels.honest) == (41, 31, 12, 19)
    assert labels.coverage == pytest.approx(31 / 41)
    assert labels.abuse_share == pytest.approx(12 / 31)


def test_delays_and_changes_by_source(check: DataCheck) -> None:
    sources = {s.source: s for s in check.labels.by_source}

    assert list(sources) == ["chargeback", "dispute", "review", "(none)"]
    review, chargeback, dispute = sources["review"], sources["chargeback"], sources["dispute"]
    assert (review.verdicts, review.delay_median_days, review.delay_max_days) == (20, 2.0, 2.0)
    assert review.abuse_share == 0.5
    assert (chargeback.verdicts, chargeback.delay_p90_days, chargeback.changes) == (5, 30.0, 2)
    assert chargeback.change_share == pytest.approx(2 / 5)
    assert (dispute.verdicts, dispute.delay_median_days, dispute.changes) == (10, 10.0, 0)
    assert sources["(none)"].delay_max_days == pytest.approx(-1 / 24)
    overall = check.labels.overall
    assert (overall.verdicts, overall.requests, overall.changes) == (36, 31, 2)
    assert overall.delay_median_days == 2.0  # first verdicts: one early, 20 reviews, 10 disputes
    assert overall.delay_max_days == 10.0


def test_weeks_show_requests_verdicts_and_the_empty_weeks_between(check: DataCheck) -> None:
    weeks = [(w.week, w.requests, w.labelled, w.abuse) for w in check.weeks]

    assert weeks == [
        ("2026-01-05", 40, 31, 12),
        ("2026-01-12", 0, 0, 0),
        ("2026-01-19", 0, 0, 0),
        ("2026-01-26", 0, 0, 0),
        ("2026-02-02", 1, 0, 0),
    ]
    assert check.weeks[0].abuse_rate == pytest.approx(12 / 31)
    assert check.weeks[1].abuse_rate is None


def test_entities_name_the_busiest_and_its_share(check: DataCheck) -> None:
    entities = {e.entity: e for e in check.entities}

    ip = entities["IPs"]
    assert (ip.busiest, ip.busiest_requests, ip.busiest_orders) == (SHARED_IP, 9, 9)
    assert ip.busiest_share == pytest.approx(9 / 41)
    assert ip.distinct == 43 - 9 + 1  # the other orders' own IPs and the shared one
    seller = entities["sellers"]
    assert (seller.distinct, seller.busiest, seller.busiest_share) == (1, "s1", 1.0)
    assert entities["users"].distinct == 20
    assert entities["devices"].distinct == 43  # o37..o40 have none, their requests do


def test_odd_rows_are_counted(check: DataCheck) -> None:
    counts = {r.what: (r.rows, r.of) for r in check.odd}

    assert counts == {
        "orders delivered before payment": (1, 43),
        "orders redeemed or credited before payment": (1, 43),
        "memberships without service_days": (1, 2),
        "usage days outside the service period": (1, 2),
        "memberships used on more days than service_days": (1, 2),
        "refund requests before their order's payment": (1, 41),
        "refund requests asking more than the order's amount": (1, 41),
        "verdicts dated before their request": (1, 36),
    }
    assert _row(check.missing, "orders without device_id").rows == 4
    assert _row(check.missing, "orders without seller_id").rows == 0
    assert all(r.rows == 0 for r in check.refused)


def test_the_planted_leak_is_flagged_and_leads_the_strongest(check: DataCheck) -> None:
    signals = {s.name: s for s in check.features.signals}

    assert check.features.sampled == 31
    assert (check.features.abuse, check.features.honest) == (12, 19)
    assert signals["days_used_claimed"].auc == 1.0
    assert signals["days_used_claimed"].verdict == LEAK
    assert [s.name for s in check.features.leaks] == ["days_used_claimed"]
    assert check.features.strongest(1)[0].name == "days_used_claimed"
    assert signals["user_review_decisions_all"].verdict == NOTHING  # no decisions in an export
    assert signals["hours_paid_to_request"].verdict is None  # r3 was asked before payment


def test_warnings_say_what_to_look_at(check: DataCheck) -> None:
    text = "\n".join(check.warnings)

    assert "Only 12 refund requests have an abuse verdict" in text
    assert f"One of the IPs ({SHARED_IP}) is behind 22%" in text
    assert "One of the sellers (s1) is behind 100%" in text
    assert "days_used_claimed" in text
    assert "known at request time" in text
    assert "Verdicts stop" not in text
    assert "Ingest will refuse" not in text


def test_labels_stopping_before_the_data_is_a_warning() -> None:
    tables = _export()
    tables["labels"] = tables["labels"][tables["labels"]["source"] != "chargeback"]
    normalised = {n: normalise(n, f) for n, f in tables.items()}

    check = check_dataset(normalised)

    # the last dispute (r30, 18 January 06:00) to the last request (r41, 3 February)
    assert check.labels.days_without_verdicts_at_end == pytest.approx(15.75)
    assert any(w.startswith("Verdicts stop 16 days before the data ends") for w in check.warnings)


def test_references_ingest_refuses_are_counted() -> None:
    tables = _export()
    tables["labels"].loc[0, "request_id"] = "r999"
    tables["refund_requests"].loc[1, "order_id"] = "o999"
    tables["refund_requests"].loc[2, "user_id"] = "u7"
    normalised = {n: normalise(n, f) for n, f in tables.items()}

    check = check_dataset(normalised)

    refused = {r.what: r.rows for r in check.refused if r.rows}
    assert refused == {
        "refund requests of an unknown order": 1,
        "refund requests by another user than the order's": 1,
        "verdicts on an unknown refund request": 1,
    }
    assert any(w.startswith("Ingest will refuse this export") for w in check.warnings)


def test_several_currencies_without_rates_are_reported() -> None:
    tables = _export()
    tables["orders"].loc[0, "currency"] = "USD"

    check = check_dataset({n: normalise(n, f) for n, f in tables.items()})

    assert check.currencies.orders == {"CNY": 42, "USD": 1}
    assert check.currencies.problem is not None
    assert any(w.startswith("Currencies:") for w in check.warnings)


def test_until_hides_what_was_not_known_then(export_dir: Path) -> None:
    check = check_dataset(read_dataset(export_dir), until=UNTIL)
    rows = {t.name: t.rows for t in check.tables}

    assert check.until == "2026-01-20T00:00:00+00:00"
    assert rows["refund_requests"] == 40  # r41 is later
    assert rows["orders"] == 42  # o43 is later
    assert rows["labels"] == 31  # the chargebacks are later
    assert "chargeback" not in {s.source for s in check.labels.by_source}
    # r2 and r4 were still honest then
    assert (check.labels.abuse, check.labels.honest) == (10, 21)
    assert check.data_end is not None
    assert check.data_end < check.until
    assert check.weeks[-1].week == "2026-01-05"


def test_single_feature_auc_ranks_missing_lowest_and_scores_categories() -> None:
    target = np.array([0, 0, 1, 1])

    assert single_feature_auc(np.array([np.nan, 1.0, 2.0, 3.0]), target) == 1.0
    assert single_feature_auc(np.array([3.0, np.nan, 1.0, 2.0]), target) == 0.5
    assert single_feature_auc(np.array([1.0, 1.0, 1.0, 1.0]), target) == 0.5
    assert single_feature_auc(np.array([1.0, 2.0]), np.array([1, 1])) is None
    levels = pd.Series(pd.Categorical(["a", "b", None, None], categories=["a", "b"]))
    assert single_feature_auc(levels, target) == 1.0  # missing is a level of its own, all abuse
    assert single_feature_auc(pd.Series(["x", "y", "x", "y"]), target) == 0.5


def test_features_are_scored_on_the_most_recent_labelled_requests(export_dir: Path) -> None:
    check = check_dataset(read_dataset(export_dir), sample=10)

    assert (check.features.labelled, check.features.sampled) == (31, 10)
    # the ten latest labelled requests are r22..r31: r31 (honest) and nine disputes
    assert (check.features.abuse, check.features.honest) == (0, 10)
    assert all(s.auc is None for s in check.features.signals)
    assert check.features.leaks == []


def test_render_has_every_section(check: DataCheck) -> None:
    text = render(check)

    for heading in (
        "Tables",
        "Labels",
        "Abuse over time",
        "Entities",
        "Odd but true",
        "Missing links",
        "Features of 31 labelled requests",
        "Warnings",
    ):
        assert f"\n{heading}" in text
    leak_lines = [line.split() for line in text.splitlines() if line.endswith(LEAK)]
    assert [words[:3] for words in leak_lines] == [["days_used_claimed", "AUC", "1.000:"]]


def test_command_on_the_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "out" / "check.json"

    status = main(["data", "check", str(SAMPLE), "--json", str(figures)])

    out = capsys.readouterr().out
    assert status == 0
    for heading in ("Tables", "Labels", "Abuse over time", "Entities", "Features of", "Warnings"):
        assert f"\n{heading}" in out
    data = json.loads(figures.read_text())
    assert data["labels"]["requests"] == 1318
    assert {t["name"]: t["rows"] for t in data["tables"]}["orders"] == 20385
    assert len(data["features"]["signals"]) == len(model_features())
    assert data["warnings"]
    assert isinstance(data["warnings"][0], str)
    assert not list(figures.parent.glob("*.partial"))


def test_command_until(export_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(export_dir), "--until", UNTIL]) == 0

    out = capsys.readouterr().out
    assert "as known before 2026-01-20 00:00" in out
    assert "chargeback" not in out


def test_command_names_a_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tables = _export()
    tables["orders"].loc[4, "amount"] = "ten"
    directory = _write(tmp_path / "bad", tables)

    assert main(["data", "check", str(directory)]) == 1

    err = capsys.readouterr().err
    assert "orders" in err
    assert "row 5" in err
    assert "amount" in err
