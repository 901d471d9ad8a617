"""Feature definitions and their two executors, proven equal by tests.

>>> import features
>>> history = features.load_history("data/sample")          # doctest: +SKIP
>>> table = features.build_features(history)                # one row per refund request
"""

from features.catalog import CATALOG, FEATURE_VERSION, feature_names, model_features
from features.history import History, load_history
from features.offline import FeatureBuilder, build_features
from features.online import online_features

__all__ = [
    "CATALOG",
    "FEATURE_VERSION",
    "FeatureBuilder",
    "History",
    "build_features",
    "feature_names",
    "load_history",
    "model_features",
    "online_features",
]
