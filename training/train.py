"""One training run: examples as of a date, trees, calibration, a test report, a bundle.

>>> from training import train, TrainConfig                      # doctest: +SKIP
>>> result = train(features.load_history("data/sample"), until="2026-04-01")
>>> result.bundle.version, result.evaluation.summary["average_precision"]
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import pandas as pd

import features
from features import History
from riskmodel.bundle import ModelBundle, TrainingWindow, encode_frame
from riskmodel.errors import DataError
from riskmodel.units import iso, to_micros
from training.calibration import fit_calibrator, ranking_kept
from training.dataset import (
    FRESH,
    Examples,
    fresh_weights,
    latest_time,
    periods,
    training_examples,
)
from training.model import Boost, TrainConfig, boost_here, fit_trees
from training.report import Evaluation, evaluate
from training.signature import catalog_signature
from training.splits import TimeSplit

__all__ = ["TrainResult", "data_fingerprint", "library_versions", "train", "train_on"]


@dataclass(frozen=True)
class TrainResult:
    bundle: ModelBundle
    examples: Examples
    split: TimeSplit
    evaluation: Evaluation | None  # on the test period; None when the test share is 0


def train(
    history: History,
    until: datetime | str | int | None = None,
    config: TrainConfig | None = None,
    ground_truth: pd.DataFrame | None = None,
) -> TrainResult:
    """Train as if today were ``until`` (default: the history's end).

    Only requests, events and labels known before ``until`` are read; the examples are
    the requests with a verdict known then and the older ones without (``config.labels``,
    ``training.dataset.training_examples``). With ``ground_truth`` (simulated data), the
    test period is also judged against it.
    """
    config = config or TrainConfig()
    cutoff = to_micros(until)
    cutoff = latest_time(history) + 1 if cutoff is None else cutoff
    examples = training_examples(history, cutoff, config.labels)
    if ground_truth is not None:
        examples = examples.with_ground_truth(ground_truth)
    return train_on(examples, cutoff, config)


def train_on(
    examples: Examples, until: int, config: TrainConfig, boost: Boost = boost_here
) -> TrainResult:
    """Train on ready examples (in time order) that were assembled as of ``until``.

    The periods are ``training.dataset.periods``: the trees learn from the train period
    and the fresh verdicts, stop early on valid, the calibration period fits the
    probability map and the test period is the report. ``boost`` grows the trees: on
    this machine, or on a Dask cluster (``training.on_dask.BoostOnCluster``); the rest
    is done here either way.
    """
    config = config or TrainConfig()
    split = periods(examples, config.shares)
    parts = {name: examples.subset(mask) for name, mask in split.masks.items()}
    in_trees = split.masks["train"] | split.masks[FRESH]
    trees = examples.subset(in_trees)
    specs = catalog_signature(list(examples.features.columns))
    matrices = {
        name: (encode_frame(part.features, specs), part.label.astype(float))
        for name, part in (("train", trees), ("valid", parts["valid"]))
    }
    weights = fresh_weights(examples, split)[in_trees]
    booster = fit_trees(specs, matrices["train"], matrices["valid"], config, weights, boost)
    calibration = parts["calibration"]
    margin = np.asarray(booster.predict(encode_frame(calibration.features, specs), raw_score=True))
    calibrator = fit_calibrator(margin, calibration.label.astype(float), config.calibration)
    maturity = _maturity(examples, config)
    fingerprint = data_fingerprint(examples, until)
    created = datetime.now(UTC)
    model_text = booster.model_to_string(num_iteration=booster.best_iteration)
    # Data and trees both in the suffix: two runs in one second differ unless identical.
    suffix = hashlib.sha256((fingerprint + model_text).encode()).hexdigest()[:6]
    settled = examples.settled
    bundle = ModelBundle(
        version=f"{created:%Y%m%d-%H%M%S}-{suffix}",
        features=specs,
        model_text=model_text,
        calibrator=calibrator,
        training_window=TrainingWindow(
            start=iso(int(examples.requested_at.min())),
            end=iso(int(examples.requested_at.max()) + 1),
            until=iso(until),
            maturity_days=maturity["days"],
        ),
        data_fingerprint=fingerprint,
        library_versions=library_versions(),
        created_at=created.isoformat(timespec="seconds"),
        details={
            "feature_version": features.FEATURE_VERSION,
            "config": config.as_dict(),
            "best_iteration": int(booster.best_iteration or booster.current_iteration()),
            "rounds_boosted": int(booster.current_iteration()),
            "periods": {
                name: {
                    "start": iso(start),
                    "end": iso(end),
                    "requests": int(split.masks[name].sum()),
                    "abusive": int(parts[name].label.sum()),
                }
                for name, (start, end) in split.bounds.items()
            },
            "trees_end": iso(split.bounds["train"][1]),
            "examples": len(examples),
            "labelled": int(examples.labelled.sum()),
            "settled": int(settled.sum()),
            "settled_labelled": int((examples.labelled & settled).sum()),
            "maturity": maturity,
        },
    )
    # Whether the map kept the trees' order, where it was fitted and on the test period.
    kept = {
        "method": calibrator.kind,
        "calibration": ranking_kept(calibration.target(), margin, calibrator.apply(margin)),
    }
    evaluation = None
    metrics = {}
    if len(parts["test"]):
        evaluation = evaluate(bundle, parts["test"])
        kept["test"] = {k: v for k, v in evaluation.figures["calibration"].items() if k != "method"}
        metrics = {"test": evaluation.summary}
    bundle = _with(bundle, metrics, {**bundle.details, "calibration": kept})
    return TrainResult(bundle=bundle, examples=examples, split=split, evaluation=evaluation)


def _maturity(examples: Examples, config: TrainConfig) -> dict[str, Any]:
    """The label maturity the examples were assembled with, and how it was chosen."""
    days = examples.maturity_days
    if days is None:
        days = config.labels.maturity_days
    if days is None:
        raise DataError(
            "the examples do not record their label maturity: give it in "
            "config.labels.maturity_days"
        )
    estimate = examples.maturity
    if estimate is None:
        return {"days": days, "description": f"label maturity {days:g} days (given)"}
    return {"days": days, "description": estimate.describe(), "estimate": estimate.as_dict()}


def _with(bundle: ModelBundle, metrics: dict[str, Any], details: dict[str, Any]) -> ModelBundle:
    """The same bundle with its metrics and details (the trees are parsed once more: cheap)."""
    return ModelBundle(
        version=bundle.version,
        features=bundle.features,
        model_text=bundle.model_text,
        calibrator=bundle.calibrator,
        training_window=bundle.training_window,
        data_fingerprint=bundle.data_fingerprint,
        metrics=metrics,
        library_versions=bundle.library_versions,
        created_at=bundle.created_at,
        details=details,
    )


def data_fingerprint(examples: Examples, until: int) -> str:
    """SHA-256 over the examples' ids, features, labels and times, and the cutoff."""
    digest = hashlib.sha256(str(until).encode())
    hashed = pd.util.hash_pandas_object(examples.features, index=True)
    digest.update(hashed.to_numpy().tobytes())
    for array in (examples.label, examples.requested_at, examples.labelled):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("lightgbm", "scikit-learn", "numpy", "pandas", "refund-risk"):
        versions[name] = package_version(name)
    return versions
