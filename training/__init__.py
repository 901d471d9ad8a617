"""Training, calibration, evaluation and batch scoring of the refund-risk model.

    >>> import features, training                                    # doctest: +SKIP
    >>> history = features.load_history("data/sample")
    >>> result = training.train(history, until="2026-04-01")         # as if today were then
    >>> training.write_report([result.evaluation], "out/report")
    >>> Registry().register(result.bundle)                           # riskmodel.registry

Imports run one way: this package builds on ``features`` and ``riskmodel``.
"""

from training.dataset import (
    Examples,
    LabelPolicy,
    MaturityEstimate,
    as_of,
    estimate_maturity,
    evaluation_examples,
    latest_labels,
    load_ground_truth,
    periods,
    training_examples,
)
from training.evaluation import compare, evaluation_period, score_requests
from training.model import TrainConfig
from training.prequential import Prequential, prequential
from training.report import Evaluation, evaluate, write_report
from training.search import SearchResult, search
from training.signature import catalog_signature
from training.splits import TimeSplit, prequential_windows, time_split
from training.train import TrainResult, train, train_on

__all__ = [
    "Evaluation",
    "Examples",
    "LabelPolicy",
    "MaturityEstimate",
    "Prequential",
    "SearchResult",
    "TimeSplit",
    "TrainConfig",
    "TrainResult",
    "as_of",
    "catalog_signature",
    "compare",
    "estimate_maturity",
    "evaluate",
    "evaluation_examples",
    "evaluation_period",
    "latest_labels",
    "load_ground_truth",
    "periods",
    "prequential",
    "prequential_windows",
    "score_requests",
    "search",
    "time_split",
    "train",
    "train_on",
    "training_examples",
    "write_report",
]
