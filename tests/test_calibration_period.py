"""The probability map is fitted on the calibration period and on nothing else.

On real labels a map fitted on the wrong period can score about as well as the right one
(on the sample data, one fitted on the training period even has a slightly lower Brier
score on the calibration period), so closeness of scores cannot tell them apart. Here every
label outside the calibration period is flipped: the trees learn the opposite of the
truth and the other periods are about 95 % abuse, while the calibration period keeps its
true rate of about 5 %. A map fitted there scores that period at its own rate; one fitted
anywhere else is off by more than ten times.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss

import features
from training import LabelPolicy, TrainConfig, train_on
from training.calibration import fit_calibrator
from training.dataset import Examples, latest_time, periods, training_examples

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
CONFIG = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=60)


@pytest.fixture(scope="module")
def sample() -> tuple[Examples, int]:
    history = features.load_history(SAMPLE)
    until = latest_time(history) + 1
    return training_examples(history, until, CONFIG.labels), until


def _flipped(examples: Examples, where: np.ndarray) -> Examples:
    return replace(examples, label=np.where(where, 1 - examples.label, examples.label))


def test_the_map_is_fitted_on_the_calibration_period_alone(sample: tuple[Examples, int]) -> None:
    examples, until = sample
    calibration = periods(examples, CONFIG.shares).masks["calibration"]
    flipped = _flipped(examples, ~calibration)

    result = train_on(flipped, until, CONFIG)

    period = flipped.subset(result.split.masks["calibration"])
    label = period.label.astype(float)
    others = flipped.label[~calibration]
    rate = float(label.mean())
    assert 0 < rate < 0.1 < 0.9 < float(others.mean())
    # Exactly the map of the calibration period's own margins and labels.
    margin = result.bundle.margin(period.features)
    assert result.bundle.calibrator == fit_calibrator(margin, label, CONFIG.calibration)
    # And so it scores that period at its own abuse rate, not at the others' 95 %.
    score = result.bundle.calibrator.apply(margin)
    assert float(score.mean()) == pytest.approx(rate, rel=0.25)
    assert brier_score_loss(label, score) <= rate * (1 - rate) + 0.01


def test_labels_after_the_calibration_period_change_nothing_the_model_is_made_of(
    sample: tuple[Examples, int],
) -> None:
    examples, until = sample
    test = periods(examples, CONFIG.shares).masks["test"]
    assert test.any()

    real = train_on(examples, until, CONFIG)
    other = train_on(_flipped(examples, test), until, CONFIG)

    assert other.bundle.model_text == real.bundle.model_text
    assert other.bundle.calibrator == real.bundle.calibrator
