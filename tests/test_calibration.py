"""Calibration keeps the trees' order: properties of the centred isotonic map, its
closeness to the isotonic fit, Platt's place, and the figures that show the order kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, brier_score_loss

from riskmodel.bundle import BundleError, Calibrator
from riskmodel.errors import DataError
from training.calibration import (
    ISOTONIC_MIN_POSITIVES,
    centred_isotonic,
    fit_calibrator,
    ranking_kept,
)

# Margins as LightGBM gives them: within +-40, at least 0.001 apart.
MARGINS = st.lists(st.integers(-40_000, 40_000), min_size=1, max_size=150, unique=True).map(
    lambda values: np.array(values, dtype=float) / 1000
)


@st.composite
def periods(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """A calibration period: margins (ties allowed) and both outcomes."""
    margin = draw(MARGINS.filter(lambda m: len(m) >= 2))
    if draw(st.booleans()):  # requests sharing a margin, as trees make them
        margin = np.r_[margin, draw(st.lists(st.sampled_from(list(margin)), max_size=40))]
    label = np.array(draw(st.lists(st.booleans(), min_size=len(margin), max_size=len(margin))))
    assume(0 < label.sum() < len(label))
    return margin, label.astype(float)


def _world(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Margins of a trained model on a marketplace: mostly honest, 5 % apart, labels
    drawn from a probability the margin over-states (so calibration has work to do)."""
    rng = np.random.default_rng(seed)
    margin = np.r_[rng.normal(-5, 1.5, n - n // 20), rng.normal(1, 2, n // 20)]
    label = rng.random(n) < 1 / (1 + np.exp(-(0.8 * margin - 0.5)))
    return margin, label.astype(float)


@settings(max_examples=300, deadline=None)
@given(periods(), MARGINS)
def test_distinct_margins_get_distinct_scores_in_the_same_order(
    period: tuple[np.ndarray, np.ndarray], probe: np.ndarray
) -> None:
    calibrator = fit_calibrator(*period, method="centred_isotonic")
    margins = np.unique(np.r_[probe, period[0], calibrator.x])  # sorted, distinct

    score = calibrator.apply(margins)
    assert (np.diff(score) > 0).all()
    assert ((score >= 0) & (score <= 1)).all()


@settings(max_examples=200, deadline=None)
@given(periods(), MARGINS)
def test_one_request_scores_exactly_as_a_batch(
    period: tuple[np.ndarray, np.ndarray], probe: np.ndarray
) -> None:
    calibrator = centred_isotonic(*period)
    margins = np.r_[probe, period[0], calibrator.x]

    single = np.array([calibrator.apply_one(float(m)) for m in margins])
    np.testing.assert_array_equal(single, calibrator.apply(margins))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n", [1_000, 5_000, 30_000])
def test_the_map_stays_close_to_the_isotonic_fit(seed: int, n: int) -> None:
    margin, label = _world(seed, n)
    later_margin, later_label = _world(seed + 100, n)
    centred = fit_calibrator(margin, label, "centred_isotonic")
    isotonic = fit_calibrator(margin, label, "isotonic")

    # Where it was fitted the isotonic fit is the best monotone map there is; the
    # centred one is a hair behind it, and as good on a later period.
    fitted = brier_score_loss(label, isotonic.apply(margin))
    assert brier_score_loss(label, centred.apply(margin)) <= fitted + 0.0025
    later = brier_score_loss(later_label, isotonic.apply(later_margin))
    assert brier_score_loss(later_label, centred.apply(later_margin)) <= later + 0.001
    # Each block's centre keeps the block's rate.
    assert np.all(np.diff(centred.y) > 0)
    assert len(centred.x) == len(np.unique(isotonic.y))


def test_the_isotonic_staircase_merges_what_the_centred_map_keeps_apart() -> None:
    margin, label = _world(7, 30_000)
    later_margin, later_label = _world(8, 30_000)
    staircase = fit_calibrator(margin, label, "isotonic")
    centred = fit_calibrator(margin, label)

    assert centred.kind == "centred_isotonic"
    merged = ranking_kept(later_label, later_margin, staircase.apply(later_margin))
    kept = ranking_kept(later_label, later_margin, centred.apply(later_margin))
    assert merged["distinct_after"] < 200 < 30_000 == merged["distinct_before"]
    assert merged["average_precision_after"] < merged["average_precision_before"]
    assert kept["distinct_after"] == kept["distinct_before"] == 30_000
    assert kept["average_precision_after"] == kept["average_precision_before"]


def test_pure_end_blocks_are_kept_off_zero_and_one() -> None:
    # The lowest 100 margins are all honest, the highest 10 all abusive.
    margin = np.arange(200, dtype=float) / 10
    label = np.r_[np.zeros(100), np.tile([1.0, 0.0], 45), np.ones(10)]
    calibrator = centred_isotonic(margin, label)

    assert calibrator.y[0] == pytest.approx(0.5 / 101)  # (0 + 1/2) / (100 + 1)
    assert calibrator.y[-1] == pytest.approx(10.5 / 11)  # (10 + 1/2) / (10 + 1)
    assert 0 < calibrator.y[0] < calibrator.y[1]
    assert calibrator.y[-2] < calibrator.y[-1] < 1
    far = calibrator.apply(np.array([-1e6, -50.0, -1.0, 25.0, 50.0, 1e6]))
    assert (np.diff(far) > 0).all()
    assert ((far > 0) & (far < 1)).all()


def test_beyond_the_ends_the_map_moves_at_most_half_a_step() -> None:
    margin, label = _world(5, 5_000)
    calibrator = centred_isotonic(margin, label)
    x, y = calibrator.x, calibrator.y
    below = calibrator.apply(np.array([x[0] - 1e-3, x[0] - 3.0, x[0] - 1e9]))
    above = calibrator.apply(np.array([x[-1] + 1e-3, x[-1] + 3.0, x[-1] + 1e9]))

    assert (np.diff(below) < 0).all()
    assert (np.diff(above) > 0).all()
    assert below[-1] >= y[0] - min(y[0], y[1] - y[0]) / 2
    assert above[-1] <= y[-1] + min(1 - y[-1], y[-1] - y[-2]) / 2
    # Right past a centre, it goes on with the slope of the segment next to it.
    slope = (y[1] - y[0]) / (x[1] - x[0])
    assert (y[0] - below[0]) / 1e-3 == pytest.approx(slope, rel=1e-2)


def test_few_positives_get_platt_which_keeps_the_order_too() -> None:
    margin, label = _world(3, 400)
    assert label.sum() < ISOTONIC_MIN_POSITIVES
    calibrator = fit_calibrator(margin, label)

    assert calibrator.kind == "sigmoid"
    assert calibrator.a > 0
    probe = np.linspace(-15, 15, 3001)
    assert (np.diff(calibrator.apply(probe)) > 0).all()
    # A perfectly separated period still gets a finite slope (Platt's smoothed targets).
    separated = fit_calibrator(
        np.r_[np.linspace(-5, -1, 100), np.linspace(1, 5, 10)], np.r_[np.zeros(100), np.ones(10)]
    )
    assert separated.kind == "sigmoid"
    assert 0 < separated.a < 5


def test_a_margin_that_ranks_backwards_gets_a_map_that_still_keeps_its_order() -> None:
    margin = np.linspace(-3, 3, 300)
    label = (np.arange(300) % 30 == 0) & (margin < 0)  # abuse only where the margin is low
    calibrator = fit_calibrator(margin, label.astype(float))

    assert calibrator.kind == "centred_isotonic"  # Platt's slope would be negative
    assert len(calibrator.x) == 1  # one block: the margin ranks nothing here
    score = calibrator.apply(margin)
    assert (np.diff(score) > 0).all()
    assert label.mean() / 2 <= score.min() < score.max() <= 1.5 * label.mean()


def test_calibration_needs_both_outcomes_and_a_known_method() -> None:
    with pytest.raises(DataError, match="needs both outcomes"):
        fit_calibrator(np.zeros(10), np.ones(10))
    with pytest.raises(DataError, match="calibration must be one of"):
        fit_calibrator(np.arange(4.0), np.array([0, 1, 0, 1]), "magic")


@pytest.mark.parametrize(
    ("x", "y", "problem"),
    [
        ((0.0, 0.0), (0.1, 0.2), "strictly increasing"),
        ((0.0, 1.0), (0.2, 0.2), "strictly increasing"),
        ((0.0, 1.0), (0.0, 0.2), "within \\(0, 1\\)"),
        ((0.0, 1.0), (0.1, 1.0), "within \\(0, 1\\)"),
        ((0.0,), (0.1, 0.2), "as many knots"),
    ],
)
def test_a_centred_map_that_could_merge_requests_is_refused(
    x: tuple[float, ...], y: tuple[float, ...], problem: str
) -> None:
    with pytest.raises(BundleError, match=problem):
        Calibrator(kind="centred_isotonic", x=x, y=y)


def test_the_old_isotonic_kind_still_scores_as_it_did() -> None:
    old = Calibrator(kind="isotonic", x=(-2.0, 0.0, 1.0), y=(0.0, 0.1, 0.8))
    probe = np.linspace(-4, 4, 81)

    np.testing.assert_array_equal(old.apply(probe), np.interp(probe, old.x, old.y))
    assert [old.apply_one(float(m)) for m in probe] == list(np.interp(probe, old.x, old.y))


def test_the_order_kept_is_measured_before_and_after() -> None:
    target = np.array([0, 0, 1, 1])
    margin = np.array([-3.0, -2.0, -1.0, 0.0])
    staircase = np.array([0.1, 0.5, 0.5, 0.9])  # ties an abusive request with an honest one

    figures = ranking_kept(target, margin, staircase)
    assert figures["requests"] == 4
    assert figures["distinct_before"] == 4
    assert figures["distinct_after"] == 3
    assert figures["average_precision_before"] == 1.0
    assert figures["average_precision_before"] == pytest.approx(
        average_precision_score(target, margin)
    )
    assert figures["average_precision_after"] < figures["average_precision_before"]
    assert ranking_kept(np.zeros(3), margin[:3], margin[:3])["average_precision_before"] is None
