"""Training examples never see the future: as-of cuts, label maturity, time splits."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import features
from features import History
from riskmodel.errors import DataError
from training import (
    LabelPolicy,
    TrainConfig,
    as_of,
    evaluation_period,
    latest_labels,
    prequential_windows,
    time_split,
    train,
    training_examples,
)
from training.dataset import DAY_US, latest_time, to_micros

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
            "labeled_at": until + 5 * DAY_US,
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


def test_labels_and_events_after_the_cutoff_change_nothing(history: History) -> None:
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=30, test_share=0.0)
    real = train(history, UNTIL, config)
    rewritten = train(_rewrite_the_future(history, UNTIL), UNTIL, config)

    assert rewritten.examples.features.equals(real.examples.features)
    np.testing.assert_array_equal(rewritten.examples.label, real.examples.label)
    assert rewritten.bundle.data_fingerprint == real.bundle.data_fingerprint
    assert rewritten.bundle.model_text == real.bundle.model_text
    assert real.bundle.training_window.until == "2026-04-01T00:00:00+00:00"


def test_the_future_does_change_a_later_cutoff(history: History) -> None:
    # The same rewrite seen from a later date must matter, or the test above proves nothing.
    later = UNTIL + 25 * DAY_US
    policy = LabelPolicy(maturity_days=20)
    real = training_examples(history, later, policy)
    rewritten = training_examples(_rewrite_the_future(history, UNTIL), later, policy)

    assert rewritten.label.sum() > real.label.sum()


def test_only_mature_requests_are_examples(history: History) -> None:
    examples = training_examples(history, UNTIL, LabelPolicy(maturity_days=30))
    young = training_examples(history, UNTIL, LabelPolicy(maturity_days=5))

    assert examples.requested_at.max() < UNTIL - 30 * DAY_US
    assert young.requested_at.max() < UNTIL - 5 * DAY_US
    assert len(young) > len(examples)
    assert np.all(np.diff(examples.requested_at) >= 0)  # time order


def test_unlabelled_requests_count_honest_or_are_dropped(history: History) -> None:
    honest = training_examples(history, UNTIL, LabelPolicy(unlabelled="honest"))
    dropped = training_examples(history, UNTIL, LabelPolicy(unlabelled="drop"))

    assert not honest.labelled.all()
    assert (honest.label[~honest.labelled] == 0).all()
    assert dropped.labelled.all()
    assert len(dropped) == int(honest.labelled.sum())
    assert dropped.label.sum() == honest.label.sum()


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
        training_examples(history, to_micros("2026-01-10"))
    with pytest.raises(DataError, match="unlabelled must be one of"):
        LabelPolicy(unlabelled="maybe")


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
    windows = prequential_windows(0, 100 * DAY_US, test_days=10, gap_days=2, count=3)

    assert [w.test_end for w in windows] == [80 * DAY_US, 90 * DAY_US, 100 * DAY_US]
    assert all(w.test_start - w.until == 2 * DAY_US for w in windows)
    assert all(a.test_end <= b.test_start for a, b in itertools.pairwise(windows))
    with pytest.raises(DataError, match="do not fit"):
        prequential_windows(0, 10 * DAY_US, test_days=5, gap_days=1, count=3)


def test_evaluation_against_labels_stops_where_outcomes_are_not_mature(history: History) -> None:
    period = evaluation_period(history, since="2026-02-01", maturity_days=30)
    end = latest_time(history)  # the history's "now"

    assert period.truth is None
    assert period.requested_at.min() >= to_micros("2026-02-01")  # type: ignore[operator]
    assert period.requested_at.max() < end + 1 - 30 * DAY_US
    assert period.requested_at.max() > end - 32 * DAY_US  # and goes right up to there
