"""An optional hyper-parameter search that reads the validation period only.

Each candidate setting boosts on the train period and is scored by its best average
precision on the validation period (where it also stops early). The calibration and test
periods are never looked at, so the report of the chosen model stays an honest estimate.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from riskmodel.bundle import encode_frame
from riskmodel.errors import DataError
from training.dataset import Examples
from training.model import TrainConfig, fit_trees
from training.signature import catalog_signature
from training.splits import time_split

__all__ = ["GRID", "SearchResult", "search"]

GRID: dict[str, tuple[Any, ...]] = {
    "num_leaves": (15, 31, 63),
    "learning_rate": (0.03, 0.1),
    "min_data_in_leaf": (20, 100),
    "feature_fraction": (0.6, 0.9),
}


@dataclass(frozen=True)
class SearchResult:
    best: TrainConfig
    trials: list[dict[str, Any]]  # each: the settings tried, valid AP, trees


def search(
    examples: Examples,
    config: TrainConfig | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    trials: int = 8,
    seed: int = 0,
) -> SearchResult:
    """Try up to ``trials`` settings from ``grid`` (at random when it has more); keep the
    one with the best validation average precision."""
    config = config or TrainConfig()
    grid = GRID if grid is None else grid
    unknown = [name for name in grid if name not in TrainConfig.__dataclass_fields__]
    if unknown:
        raise DataError(f"cannot search over {', '.join(unknown)}: not a TrainConfig setting")
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if len(combos) > trials:
        combos = random.Random(seed).sample(combos, trials)
    split = time_split(examples.requested_at, config.shares)
    specs = catalog_signature(list(examples.features.columns))
    data = {
        name: (
            encode_frame(examples.features.loc[split.masks[name]], specs),
            examples.label[split.masks[name]].astype(float),
        )
        for name in ("train", "valid")
    }
    results = []
    for settings in combos:
        candidate = replace(config, **settings)
        booster = fit_trees(specs, data["train"], data["valid"], candidate)
        score = float(booster.best_score["valid"]["average_precision"])
        trees = booster.best_iteration
        results.append({**settings, "valid_average_precision": score, "trees": trees})
    best = max(results, key=lambda r: r["valid_average_precision"])
    chosen = replace(config, **{name: best[name] for name in grid})
    return SearchResult(best=chosen, trials=results)
