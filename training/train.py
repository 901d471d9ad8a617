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
from training.calibration import fit_calibrator
from training.dataset import Examples, iso, latest_time, to_micros, training_examples
from training.model import TrainConfig, fit_trees
from training.report import Evaluation, evaluate
from training.signature import catalog_signature
from training.splits import TimeSplit, time_split

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

    Only requests, events and labels known before ``until`` are read, and only requests
    mature by then are examples (``config.labels``). With ``ground_truth`` (simulated
    data), the test period is also judged against it.
    """
    config = config or TrainConfig()
    cutoff = to_micros(until)
    cutoff = latest_time(history) + 1 if cutoff is None else cutoff
    examples = training_examples(history, cutoff, config.labels)
    if ground_truth is not None:
        examples = examples.with_ground_truth(ground_truth)
    return train_on(examples, cutoff, config)


def train_on(examples: Examples, until: int, config: TrainConfig) -> TrainResult:
    """Train on ready examples (in time order) that were assembled as of ``until``."""
    config = config or TrainConfig()
    split = time_split(examples.requested_at, config.shares)
    parts = {name: examples.subset(mask) for name, mask in split.masks.items()}
    specs = catalog_signature(list(examples.features.columns))
    matrices = {
        name: (encode_frame(part.features, specs), part.label.astype(float))
        for name, part in parts.items()
        if name != "test"
    }
    booster = fit_trees(specs, matrices["train"], matrices["valid"], config)
    calibration_x, calibration_y = matrices["calibration"]
    margin = np.asarray(booster.predict(calibration_x, raw_score=True))
    calibrator = fit_calibrator(margin, calibration_y, config.calibration)
    fingerprint = data_fingerprint(examples, until)
    created = datetime.now(UTC)
    trees_end = split.bounds["train"][1]
    model_text = booster.model_to_string(num_iteration=booster.best_iteration)
    # Data and trees both in the suffix: two runs in one second differ unless identical.
    suffix = hashlib.sha256((fingerprint + model_text).encode()).hexdigest()[:6]
    bundle = ModelBundle(
        version=f"{created:%Y%m%d-%H%M%S}-{suffix}",
        features=specs,
        model_text=model_text,
        calibrator=calibrator,
        training_window=TrainingWindow(
            start=iso(int(examples.requested_at.min())),
            end=iso(int(examples.requested_at.max()) + 1),
            until=iso(until),
            maturity_days=config.labels.maturity_days,
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
            "trees_end": iso(trees_end),
            "examples": len(examples),
            "labelled": int(examples.labelled.sum()),
        },
    )
    evaluation = None
    if len(parts["test"]):
        evaluation = evaluate(bundle, parts["test"])
        bundle = _with_metrics(bundle, evaluation.summary)
    return TrainResult(bundle=bundle, examples=examples, split=split, evaluation=evaluation)


def _with_metrics(bundle: ModelBundle, metrics: dict[str, Any]) -> ModelBundle:
    """The same bundle with its test metrics (the trees are parsed once more: cheap)."""
    return ModelBundle(
        version=bundle.version,
        features=bundle.features,
        model_text=bundle.model_text,
        calibrator=bundle.calibrator,
        training_window=bundle.training_window,
        data_fingerprint=bundle.data_fingerprint,
        metrics={"test": metrics},
        library_versions=bundle.library_versions,
        created_at=bundle.created_at,
        details=bundle.details,
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
