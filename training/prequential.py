"""Prequential evaluation: retrain as of successive dates, test on the period after each.

One test period says little about the next; several successive windows (train as of
``until``, skip ``gap`` days, test ``test_days``) show the mean and the spread a model
trained the same way can be expected to reach, as the marketplace drifts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from features import History
from riskmodel.units import DAY, iso
from training.dataset import estimate_maturity, latest_time
from training.evaluation import evaluation_period
from training.model import TrainConfig
from training.report import SUMMARY_KEYS, evaluate
from training.splits import PrequentialWindow, prequential_windows
from training.train import train

__all__ = ["Prequential", "prequential"]


@dataclass(frozen=True)
class Prequential:
    windows: list[dict[str, Any]]  # per window: dates, maturity, model version, figures
    mean: dict[str, float | None]
    spread: dict[str, float | None]  # standard deviation across windows
    judged_maturity_days: float | None = None  # against labels: how old a tested request is


def prequential(
    history: History,
    count: int = 3,
    test_days: float = 14,
    gap_days: float = 0,
    config: TrainConfig | None = None,
    ground_truth: pd.DataFrame | None = None,
    windows: list[PrequentialWindow] | None = None,
) -> Prequential:
    """Train and test ``count`` times; the last test period ends where the history does.

    Each model's label maturity is ``config.labels.maturity_days``, or when None estimated
    as of its own cutoff. Against labels (no ground truth), the history must reach the
    maturity past the last test period, since requests whose outcome is not settled are
    left out of evaluation; with no maturity given, it is estimated from every label.
    """
    config = replace(config or TrainConfig(), test_share=0.0)
    labels = config.labels
    end = latest_time(history) + 1
    maturity = None
    if ground_truth is None:
        maturity = labels.maturity_days
        if maturity is None:
            maturity = estimate_maturity(history, end, labels.maturity_quantile).days
        end -= int(maturity * DAY)
    first = int(pd.to_numeric(history.refund_requests["requested_at"]).min())
    if windows is None:
        windows = prequential_windows(first, end, test_days, gap_days, count)
    rows = []
    for window in windows:
        bundle = train(history, window.until, config).bundle
        period = evaluation_period(
            history, window.test_start, window.test_end, ground_truth, maturity or 0.0
        )
        summary = evaluate(bundle, period).summary
        rows.append(
            {
                "until": iso(window.until),
                "test_start": iso(window.test_start),
                "test_end": iso(window.test_end),
                "maturity_days": bundle.training_window.maturity_days,
                "model_version": bundle.version,
                **summary,
            }
        )
    mean: dict[str, float | None] = {}
    spread: dict[str, float | None] = {}
    for key in SUMMARY_KEYS:
        values = np.array([r[key] for r in rows if r[key] is not None], dtype=float)
        mean[key] = float(values.mean()) if len(values) else None
        spread[key] = float(values.std(ddof=1)) if len(values) > 1 else None
    return Prequential(windows=rows, mean=mean, spread=spread, judged_maturity_days=maturity)
