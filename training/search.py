"""An optional hyper-parameter search that reads the validation period only.

Each candidate setting boosts on what the trees of a training run learn from (the train
period and the fresh verdicts, ``training.dataset.periods``) and is scored by its best
average precision on the validation period (where it also stops early). The calibration
and test periods are never looked at, so the report of the chosen model stays an honest
estimate.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from riskmodel.bundle import encode_frame
from riskmodel.errors import DataError
from training.dataset import FRESH, Examples, fresh_weights, periods
from training.model import TrainConfig, fit_trees
from training.signature import catalog_signature

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
    split = periods(examples, config.shares)
    specs = catalog_signature(list(examples.features.columns))
    rows = {"train": split.masks["train"] | split.masks[FRESH], "valid": split.masks["valid"]}
    data = {
        name: (encode_frame(examples.features.loc[mask], specs), examples.label[mask].astype(float))
        for name, mask in rows.items()
    }
    weights = fresh_weights(examples, split)[rows["train"]]
    results = []
    for settings in combos:
        candidate = replace(config, **settings)
        booster = fit_trees(specs, data["train"], data["valid"], candidate, weights)
        score = float(booster.best_score["valid"]["average_precision"])
        trees = booster.best_iteration
        results.append({**settings, "valid_average_precision": score, "trees": trees})
    best = max(results, key=lambda r: r["valid_average_precision"])
    chosen = replace(config, **{name: best[name] for name in grid})
    return SearchResult(best=chosen, trials=results)
