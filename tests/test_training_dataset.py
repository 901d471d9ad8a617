"""Training examples never see the future: as-of cuts, labels as they arrive, the label
maturity and its estimate, the periods and what each judges on."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import features
from features import History
from riskmodel.errors import DataError
from riskmodel.units import DAY, to_micros
from training import (
    LabelPolicy,
    TrainConfig,
    as_of,
    estimate_maturity,
    evaluation_period,
    latest_labels,
    periods,
    prequential_windows,
    time_split,
    train,
    training_examples,
)
from training.dataset import FRESH, Examples, fresh_weights, latest_time

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
UNTIL = to_micros("2026-04-01")
assert UNTIL is not None


@pytest.fixture(scope="module")
def history() -> History:
    return features.load_history(SAMPLE)


def _after(frame: pd.DataFrame, column: str, until: int) -> np.ndarray:
    return (pd.to_numeric(frame[column]) >= until).to_numpy(dtype=bool, na_value=False)


def _rewrite_the_future(history: History, until: int) -> History:
    """Everything after ``until`` changed: every later verdict flipped, a new abuse verdict
    on every request dated after ``until``, later requests and orders dropped."""
    labels = history.labels.copy()
    later = _after(labels, "labeled_at", until)
    labels.loc[later, "is_abuse"] = ~labels.loc[later, "is_abuse"].astype(bool)
    extra = pd.DataFrame(
        {
            "request_id": history.refund_requests["request_id"],
            "is_abuse": True,
            "labeled_at": until + 5 * DAY,
            "source": "chargeback",
            "extra": None,
        }
    )
    requests = history.refund_requests[~_after(history.refund_requests, "requested_at", until)]
    orders = history.orders[~_after(history.orders, "paid_at", until)]
    return history.replace(
        labels=pd.concat([labels, extra], ignore_index=True),
        refund_requests=requests,
        orders=orders,
    )


def test_as_of_keeps_only_what_was_known(history: History) -> None:
    known = as_of(history, UNTIL)

    for table, column in [
        (known.users, "registered_at"),
        (known.orders, "paid_at"),
        (known.usage, "used_at"),
        (known.refund_requests, "requested_at"),
        (known.labels, "labeled_at"),
    ]:
        assert len(table) > 0
        assert not _after(table, column, UNTIL).any()
    assert not _after(known.orders, "delivered_at", UNTIL).any()
    assert not _after(known.orders, "redeemed_at", UNTIL).any()
    assert len(known.labels) < len(history.labels)


# The sample is small: each setting keeps both outcomes in every period.
@pytest.mark.parametrize(
    ("maturity", "test_share"), [(20.0, 0.0), (None, 0.15)], ids=["given", "estimated"]
)
def test_labels_and_events_after_the_cutoff_change_nothing(
    history: History, maturity: float | None, test_share: float
) -> None:
    labels = LabelPolicy(maturity_days=maturity)
    config = TrainConfig(labels=labels, max_rounds=30, test_share=test_share)
    real = train(history, UNTIL, config)
    rewritten = train(_rewrite_the_future(history, UNTIL), UNTIL, config)

    # Young requests with a verdict are examples, so a verdict after the cutoff would show.
    assert (~real.examples.settled).any()
    assert rewritten.examples.features.equals(real.examples.features)
    np.testing.assert_array_equal(rewritten.examples.label, real.examples.label)
    np.testing.assert_array_equal(rewritten.examples.settled, real.examples.settled)
    assert rewritten.examples.maturity == real.examples.maturity
    assert rewritten.bundle.data_fingerprint == real.bundle.data_fingerprint
    assert rewritten.bundle.model_text == real.bundle.model_text
    assert rewritten.bundle.training_window == real.bundle.training_window
    assert real.bundle.training_window.until == "2026-04-01T00:00:00+00:00"


def test_the_future_does_change_a_later_cutoff(history: History) -> None:
    # The same rewrite seen from a later date must matter, or the test above proves nothing.
    later = UNTIL + 25 * DAY
    policy = LabelPolicy(maturity_days=20)
    real = training_examples(history, later, policy)
    rewritten = training_examples(_rewrite_the_future(history, UNTIL), later, policy)

    assert rewritten.label.sum() > real.label.sum()


def _requests_before(history: History, until: int) -> pd.DataFrame:
    requests = history.refund_requests
    return requests[pd.to_numeric(requests["requested_at"]) < until]


def test_a_verdict_known_before_the_cutoff_makes_an_example_at_any_age(
    history: History,
) -> None:
    examples = training_examples(history, UNTIL, LabelPolicy(maturity_days=30))
    asked = set(_requests_before(history, UNTIL)["request_id"])
    verdicts = latest_labels(history.labels, UNTIL)
    verdicts = verdicts[verdicts.index.isin(asked)]
    young = examples.requested_at >= UNTIL - 30 * DAY

    assert set(verdicts.index) <= set(examples.request_ids)
    assert young.any()
    assert examples.labelled[young].all()
    np.testing.assert_array_equal(examples.settled, ~young)
    labelled = examples.request_ids[examples.labelled]
    np.testing.assert_array_equal(
        examples.label[examples.labelled], verdicts.loc[labelled].to_numpy(dtype=np.int8)
    )
    assert examples.maturity_days == 30
    assert examples.maturity is None  # given, not estimated
    assert np.all(np.diff(examples.requested_at) >= 0)  # time order


@pytest.mark.parametrize("maturity", [5, 30, 60])
def test_a_request_without_a_verdict_counts_only_once_mature(
    history: History, maturity: int
) -> None:
    examples = training_examples(history, UNTIL, LabelPolicy(maturity_days=maturity))
    cutoff = UNTIL - maturity * DAY
    old = _requests_before(history, cutoff)
    judged = set(latest_labels(history.labels, UNTIL).index)
    silent_and_old = set(old["request_id"]) - judged

    assert set(examples.request_ids[~examples.labelled]) == silent_and_old
    assert (examples.label[~examples.labelled] == 0).all()
    assert examples.requested_at[~examples.labelled].max() < cutoff


def test_unlabelled_requests_count_honest_or_are_dropped(history: History) -> None:
    honest = training_examples(history, UNTIL, LabelPolicy(maturity_days=30))
    dropped = training_examples(history, UNTIL, LabelPolicy(maturity_days=30, unlabelled="drop"))

    assert not honest.labelled.all()
    assert (honest.label[~honest.labelled] == 0).all()
    assert dropped.labelled.all()
    assert len(dropped) == int(honest.labelled.sum())  # every verdict, young or old
    assert dropped.label.sum() == honest.label.sum()
    np.testing.assert_array_equal(dropped.settled, honest.settled[honest.labelled])


def test_calibration_and_test_judge_only_settled_requests(history: History) -> None:
    examples = training_examples(history, UNTIL, LabelPolicy(maturity_days=30))
    config = TrainConfig()
    split = periods(examples, config.shares)
    masks, settled = split.masks, examples.settled
    names = ["train", "valid", "calibration", "test", FRESH]

    assert list(masks) == names
    assert (np.sum([masks[n] for n in names], axis=0) == 1).all()  # each example once
    np.testing.assert_array_equal(masks[FRESH], ~settled)
    for name, share in config.shares.items():
        assert settled[masks[name]].all()
        assert abs(masks[name].sum() - share * settled.sum()) <= 2
    for earlier, later in itertools.pairwise(names):
        assert split.bounds[earlier][1] <= split.bounds[later][0]
        assert examples.requested_at[masks[earlier]].max() < split.bounds[later][0]
    # Why: among young requests only the judged ones are examples, and they are rich in abuse.
    assert examples.label[~settled].mean() > 3 * examples.label[settled].mean()


def test_a_history_without_settled_requests_has_no_periods(history: History) -> None:
    examples = training_examples(history, UNTIL, LabelPolicy(maturity_days=30))
    young = examples.subset(~examples.settled)

    with pytest.raises(DataError, match="no example has a settled outcome"):
        periods(young, TrainConfig().shares)


def test_the_latest_verdict_known_counts() -> None:
    labels = pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r2", "r3"],
            "is_abuse": [False, True, True, False],
            "labeled_at": [100, 300, 200, 50],
        }
    )

    assert latest_labels(labels).to_dict() == {"r1": True, "r2": True, "r3": False}
    assert latest_labels(labels, until=250).to_dict() == {"r1": False, "r2": True, "r3": False}
    assert latest_labels(labels, until=10).empty


def test_a_cutoff_with_no_mature_request_is_a_clear_error(history: History) -> None:
    with pytest.raises(DataError, match="no refund request is mature before 2026-01-10"):
        training_examples(history, to_micros("2026-01-10"), LabelPolicy(maturity_days=30))
    with pytest.raises(DataError, match=r"maturity of 120 days .*\(no abuse verdict known"):
        training_examples(history, to_micros("2026-01-05"))  # estimated: nothing to go on
    with pytest.raises(DataError, match="unlabelled must be one of"):
        LabelPolicy(unlabelled="maybe")
    with pytest.raises(DataError, match="maturity_quantile must be in"):
        LabelPolicy(maturity_quantile=1.5)


def test_time_split_gives_consecutive_disjoint_periods() -> None:
    times = np.repeat(np.arange(50), 2)  # pairs at the same instant
    split = time_split(times, {"a": 0.5, "b": 0.25, "c": 0.25, "d": 0.0})

    masks = list(split.masks.values())
    assert sum(m.sum() for m in masks) == len(times)
    assert (np.sum(masks, axis=0) == 1).all()
    assert times[split.masks["a"]].max() < times[split.masks["b"]].min()
    assert times[split.masks["b"]].max() < times[split.masks["c"]].min()
    assert split.masks["d"].sum() == 0
    for t in np.unique(times):  # no instant is split
        owners = {name for name, m in split.masks.items() if m[times == t].any()}
        assert len(owners) == 1
    with pytest.raises(DataError, match="sum to 1"):
        time_split(times, {"a": 0.5, "b": 0.6})


def test_prequential_windows_advance_without_overlap() -> None:
    windows = prequential_windows(0, 100 * DAY, test_days=10, gap_days=2, count=3)

    assert [w.test_end for w in windows] == [80 * DAY, 90 * DAY, 100 * DAY]
    assert all(w.test_start - w.until == 2 * DAY for w in windows)
    assert all(a.test_end <= b.test_start for a, b in itertools.pairwise(windows))
    with pytest.raises(DataError, match="do not fit"):
        prequential_windows(0, 10 * DAY, test_days=5, gap_days=1, count=3)


def test_evaluation_against_labels_stops_where_outcomes_are_not_mature(history: History) -> None:
    period = evaluation_period(history, since="2026-02-01", maturity_days=30)
    end = latest_time(history)  # the history's "now"

    assert period.truth is None
    assert period.requested_at.min() >= to_micros("2026-02-01")  # type: ignore[operator]
    assert period.requested_at.max() < end + 1 - 30 * DAY
    assert period.requested_at.max() > end - 32 * DAY  # and goes right up to there


# -- the label maturity, estimated ----------------------------------------------------------

DAY0 = to_micros("2026-01-01")
assert DAY0 is not None


def _delays(
    verdicts: list[tuple[str, bool, float]], ages: int = 100, now: float = 300
) -> tuple[History, int]:
    """One request a day for ``ages`` days; verdict i (source, abuse, delay in days) on
    request i. Returns the history and the cutoff, ``now`` days after the first request."""
    requests = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(ages)],
            "requested_at": [DAY0 + i * DAY for i in range(ages)],
        }
    )
    labels = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(len(verdicts))],
            "is_abuse": [abuse for _, abuse, _ in verdicts],
            "labeled_at": [
                DAY0 + i * DAY + round(delay * DAY) for i, (_, _, delay) in enumerate(verdicts)
            ],
            "source": [source for source, _, _ in verdicts],
        }
    )
    return History.empty().replace(refund_requests=requests, labels=labels), DAY0 + round(now * DAY)


def test_the_maturity_is_a_quantile_of_the_abuse_verdicts_delays() -> None:
    verdicts = [("review", True, 2.0)] * 80 + [("chargeback", True, 50.0)] * 20
    history, now = _delays(verdicts)  # every request 200 days old or more: all arrived

    estimate = estimate_maturity(history, now)
    assert estimate.days == 50.0  # 90 % of abuse verdicts arrive within 50 days
    assert estimate_maturity(history, now, quantile=0.8).days == 2.0
    assert estimate.abusive == 100
    assert [(s.source, s.verdicts, s.quantile_days) for s in estimate.sources] == [
        ("review", 80, 2.0),
        ("chargeback", 20, 50.0),
    ]
    assert estimate.describe() == (
        "label maturity 50.0 days (estimated: 90% of abuse verdicts arrive within it, "
        "n=100; review p90 2.0 d n=80, chargeback p90 50.0 d n=20)"
    )
    # Honest verdicts tell their source's delays but not the maturity.
    honest = [("review", False, 4.0)] * 50
    with_honest, now = _delays([*verdicts[:50], *honest, *verdicts[50:]], ages=150)
    mixed = estimate_maturity(with_honest, now)
    assert mixed.days == 50.0
    assert [(s.source, s.verdicts, s.abusive) for s in mixed.sources] == [
        ("review", 130, 80),
        ("chargeback", 20, 20),
    ]


def test_a_later_verdict_counts_from_the_first_abuse_verdict() -> None:
    # Double dips: reviewed as honest after 2 days, charged back after 40.
    dips = [("review", False, 2.0)] * 10
    history, now = _delays(dips + [("review", True, 1.0)] * 10, ages=20)
    chargebacks = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(10)],
            "is_abuse": True,
            "labeled_at": [DAY0 + i * DAY + 40 * DAY for i in range(10)],
            "source": "chargeback",
        }
    )
    history = history.replace(labels=pd.concat([history.labels, chargebacks]))

    estimate = estimate_maturity(history, now, quantile=0.5)
    assert estimate.days == 1.0
    assert estimate_maturity(history, now, quantile=0.6).days == 40.0
    assert estimate.abusive == 20


def test_verdicts_still_on_their_way_are_counted_in() -> None:
    # Every request gets a verdict: 85 % reviews after 2 days, 15 % chargebacks after 50.
    # At the cutoff the requests are 1 to 100 days old, so only the older half can show
    # a chargeback: counted as seen, they are 8 % of abuse verdicts and the quantile would
    # be 2 days; weighted by how many requests were old enough to show them, 15 %.
    verdicts = [
        ("chargeback", True, 50.0) if i % 20 in (3, 9, 16) else ("review", True, 2.0)
        for i in range(100)
    ]
    history, now = _delays(verdicts, ages=100, now=100)
    labels = history.labels
    history = history.replace(labels=labels[pd.to_numeric(labels["labeled_at"]) < now])
    seen = history.labels["source"].value_counts()
    assert seen["chargeback"] / len(history.labels) < 0.1

    assert estimate_maturity(history, now).days == 50.0


@pytest.mark.parametrize(
    ("delay", "days", "says"),
    [
        (0.25, 1.0, "0.2 d raised to the lower bound"),
        (150.0, 120.0, "150.0 d cut to the upper bound"),
    ],
)
def test_the_maturity_stays_within_its_bounds(delay: float, days: float, says: str) -> None:
    history, now = _delays([("review", True, delay)] * 10, ages=10, now=400)

    estimate = estimate_maturity(history, now)
    assert estimate.days == days
    assert estimate.estimated_days == pytest.approx(delay)
    assert says in estimate.describe()


def test_without_abuse_verdicts_the_maturity_is_the_upper_bound() -> None:
    history, now = _delays([("review", False, 3.0)] * 30)

    estimate = estimate_maturity(history, now)
    assert estimate.days == 120.0
    assert estimate.estimated_days is None
    assert estimate.abusive == 0
    assert estimate.describe().startswith(
        "label maturity 120.0 days (no abuse verdict known before 2026-10-28T00:00:00+00:00: "
        "the upper bound"
    )
    assert "review p90 3.0 d n=30" in estimate.describe()
    nothing = estimate_maturity(History.empty().replace(refund_requests=history.refund_requests))
    assert nothing.days == 120.0
    assert nothing.describe().endswith("becomes known)")


def test_labels_after_the_cutoff_do_not_move_the_estimate(history: History) -> None:
    estimate = estimate_maturity(history, UNTIL)
    rewritten = estimate_maturity(_rewrite_the_future(history, UNTIL), UNTIL)
    known = estimate_maturity(as_of(history, UNTIL), UNTIL)

    assert rewritten == estimate == known
    assert 1 <= estimate.days <= 120
    assert {s.source for s in estimate.sources} == {
        "review",
        "dispute",
        "issuer_report",
        "chargeback",
    }
    examples = training_examples(history, UNTIL, LabelPolicy())
    assert examples.maturity == estimate
    assert examples.maturity_days == estimate.days


def _young_and_settled(settled: list[int], young: list[int]) -> Examples:
    """Examples in time order: the settled ones first (labels as given), then the young
    ones, each with a verdict."""
    labels = np.array([*settled, *young])
    n = len(labels)
    return Examples(
        features=pd.DataFrame({"x": np.zeros(n)}, index=[f"r{i}" for i in range(n)]),
        label=labels,
        labelled=np.ones(n, dtype=bool),
        requested_at=np.arange(n) * DAY,
        amount=np.ones(n),
        mature=np.array([True] * len(settled) + [False] * len(young)),
    )


def test_fresh_abuse_verdicts_weigh_as_much_as_the_settled_share_of_abuse() -> None:
    # About 10% abuse among the settled requests; young verdicts 4 abusive, 6 honest.
    examples = _young_and_settled(
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 10, [1, 1, 0, 1, 0, 0, 1, 0, 0, 0]
    )
    split = periods(examples, TrainConfig().shares)
    weights = fresh_weights(examples, split)

    fresh = ~examples.settled
    abusive = weights[fresh & (examples.label == 1)]
    share = abusive.sum() / weights[fresh].sum()
    assert share == pytest.approx(examples.label[split.masks["train"]].mean())
    assert 0.05 < share < 0.15
    assert (weights[examples.settled] == 1).all()
    assert (weights[fresh & (examples.label == 0)] == 1).all()


def test_fresh_verdicts_that_are_all_abuse_weigh_nothing() -> None:
    # Chargebacks the only source: among young requests only the abusive have a verdict.
    examples = _young_and_settled([1, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 10, [1, 1, 1])
    weights = fresh_weights(examples, periods(examples, TrainConfig().shares))

    assert (weights[~examples.settled] == 0).all()
    assert (weights[examples.settled] == 1).all()


def test_without_fresh_verdicts_every_example_weighs_one() -> None:
    examples = _young_and_settled([1, 0, 0, 0, 0, 0, 0, 0, 0, 0] * 10, [])
    assert (fresh_weights(examples, periods(examples, TrainConfig().shares)) == 1).all()
