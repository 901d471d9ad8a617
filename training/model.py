"""The LightGBM classifier: settings, and fitting trees with early stopping.

Categorical features are given to LightGBM natively (as integer codes by the levels the
catalogue declares, through ``riskmodel.bundle.encode_frame``), so a split can group
levels rather than threshold an arbitrary order. Early stopping watches average
precision on the validation period: abuse is rare, and AP tracks the top of the ranking
that reviewers see, where log-loss is dominated by the many easy honest requests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import lightgbm
import numpy as np

from riskmodel.bundle import CATEGORY, FeatureSpec
from riskmodel.errors import DataError
from training.calibration import CALIBRATIONS
from training.dataset import LabelPolicy

__all__ = ["SMALL_DATA", "Boost", "TrainConfig", "TreeData", "boost_here", "fit_trees"]

SMALL_DATA = 50_000
"""Below this many rows LightGBM's threads cost more than they save: measured ten times
slower on two busy cores for a thousand rows, so small runs use one thread."""


STOPPING_METRICS = ("average_precision", "binary_logloss")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run besides the data.

    The requests with a settled outcome are cut by time into ``train`` (the trees),
    ``valid`` (early stopping), ``calibration`` (the probability map) and ``test`` (the
    report), in that order, by the given shares; the younger requests with a verdict
    also go to the trees (``training.dataset.periods``). ``test_share=0`` keeps every
    request for the model (the report then needs a later period: ``riskmodel evaluate``).
    ``labels`` says how outcomes become labels, the label maturity included (estimated
    from the data unless given). ``calibration``: ``auto``, ``centred_isotonic``,
    ``sigmoid`` or ``isotonic`` (``training.calibration``).
    """

    labels: LabelPolicy = field(default_factory=LabelPolicy)
    valid_share: float = 0.15
    calibration_share: float = 0.15
    test_share: float = 0.15
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    # Extremely randomised trees: each feature's split threshold is drawn at random, not
    # searched. With a few hundred abusive examples and ~290 features the searched splits
    # fit noise (chosen on the development worlds: docs/training.md, "Splits and the model").
    extra_trees: bool = True
    max_rounds: int = 2000
    early_stopping_rounds: int = 100  # 0: no early stopping, every round is kept
    stopping_metric: str = "binary_logloss"  # or average_precision
    # With fewer abusive requests than this in valid, its AP is noise and stops the trees
    # almost at once: valid then joins the trees, boosted a fixed ``fallback_rounds``.
    min_stopping_positives: int = 20
    fallback_rounds: int = 100
    calibration: str = "auto"
    num_threads: int = 0  # 0: one thread below SMALL_DATA rows, else every core
    seed: int = 7

    def __post_init__(self) -> None:
        shares = (self.valid_share, self.calibration_share, self.test_share)
        if min(shares) < 0 or self.valid_share == 0 or self.calibration_share == 0:
            raise DataError("valid and calibration shares must be > 0, the test share >= 0")
        if sum(shares) >= 0.9:
            raise DataError(f"valid + calibration + test shares {sum(shares):g} leave no trees")
        if self.calibration not in CALIBRATIONS:
            raise DataError(f"calibration must be one of {CALIBRATIONS}")
        if self.stopping_metric not in STOPPING_METRICS:
            raise DataError(
                f"stopping_metric {self.stopping_metric!r} is not one of "
                f"{', '.join(STOPPING_METRICS)}"
            )
        if self.max_rounds < 1 or self.early_stopping_rounds < 0:
            raise DataError("max_rounds must be positive, early_stopping_rounds not negative")

    @property
    def shares(self) -> dict[str, float]:
        train = 1 - self.valid_share - self.calibration_share - self.test_share
        return {
            "train": train,
            "valid": self.valid_share,
            "calibration": self.calibration_share,
            "test": self.test_share,
        }

    def lightgbm_params(self, rows: int | None = None) -> dict[str, Any]:
        threads = self.num_threads
        if threads == 0 and rows is not None and rows < SMALL_DATA:
            threads = 1
        return {
            "objective": "binary",
            "metric": [
                self.stopping_metric,
                *(m for m in STOPPING_METRICS if m != self.stopping_metric),
            ],
            "first_metric_only": True,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "extra_trees": self.extra_trees,
            "num_threads": threads,
            "seed": self.seed,
            "deterministic": True,
            "verbosity": -1,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TreeData:
    """What the trees are boosted on, checked by ``fit_trees``: the train matrix, labels
    and weights, the validation period, the features' names and the categorical ones."""

    names: list[str]
    categorical: list[int]
    train: tuple[np.ndarray, np.ndarray]
    weights: np.ndarray
    valid: tuple[np.ndarray, np.ndarray]


Boost = Callable[[TreeData, TrainConfig], lightgbm.Booster]
"""Where the trees grow: ``boost_here`` on this machine, or
``training.on_dask.BoostOnCluster`` on a Dask cluster."""


def boost_here(data: TreeData, config: TrainConfig) -> lightgbm.Booster:
    """Boost on this machine, stopping early on the validation period's first metric."""
    train = lightgbm.Dataset(
        data.train[0],
        label=data.train[1],
        weight=data.weights,
        feature_name=data.names,
        categorical_feature=data.categorical,
        free_raw_data=True,
    )
    check = lightgbm.Dataset(data.valid[0], label=data.valid[1], reference=train)
    return lightgbm.train(
        config.lightgbm_params(rows=len(data.train[1])),
        train,
        num_boost_round=config.max_rounds,
        valid_sets=[check],
        valid_names=["valid"],
        # The callback's own flag: without it, the first metric of any kind to stall stops
        # the boosting and picks the trees.
        callbacks=[
            lightgbm.early_stopping(
                config.early_stopping_rounds, first_metric_only=True, verbose=False
            )
        ]
        if config.early_stopping_rounds
        else [],
    )


def fit_trees(
    specs: tuple[FeatureSpec, ...],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    weights: np.ndarray | None = None,
    boost: Boost = boost_here,
) -> lightgbm.Booster:
    """Boost on ``train`` (matrix, labels; each row weighted by ``weights``, 1 if None),
    stopping when the stopping metric on ``valid`` stops improving; ``boost`` says where.

    When ``valid`` holds fewer than ``config.min_stopping_positives`` abusive requests,
    it cannot guide the stopping: it joins the trees' data, which are boosted
    ``config.fallback_rounds`` rounds."""
    if weights is None:
        weights = np.ones(len(train[1]))
    if int(np.sum(valid[1])) < config.min_stopping_positives:
        weights = np.concatenate([weights, np.ones(len(valid[1]))])
        train = (np.vstack([train[0], valid[0]]), np.concatenate([train[1], valid[1]]))
        config = replace(config, max_rounds=config.fallback_rounds, early_stopping_rounds=0)
        valid = train
    # The trees need abuse that weighs something: fresh verdicts may weigh nothing.
    weighed = train[1] * (weights > 0)
    for name, y in (("training", weighed), ("validation", valid[1])):
        if not 0 < int(np.sum(y)) < len(y):
            raise DataError(
                f"the {name} period has {int(np.sum(y))} abusive requests out of {len(y)}: "
                "it needs both outcomes (use more history or a shorter label maturity)"
            )
    data = TreeData(
        names=[f.name for f in specs],
        categorical=[i for i, f in enumerate(specs) if f.type == CATEGORY],
        train=train,
        weights=weights,
        valid=valid,
    )
    return boost(data, config)
