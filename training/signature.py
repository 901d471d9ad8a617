"""The model's input signature, read from the feature catalogue."""

from __future__ import annotations

from collections.abc import Sequence

import features
from features.spec import Context, Type
from riskmodel.bundle import CATEGORY, NUMBER, FeatureSpec

__all__ = ["catalog_signature"]


def catalog_signature(names: Sequence[str] | None = None) -> tuple[FeatureSpec, ...]:
    """Name, type and categorical levels of each model feature (default: all of them)."""
    chosen = features.model_features() if names is None else list(names)
    specs = []
    for name in chosen:
        feature = features.CATALOG[name]
        if feature.type is Type.CATEGORY and isinstance(feature, Context):
            specs.append(FeatureSpec(name, CATEGORY, tuple(feature.levels)))
        else:
            specs.append(FeatureSpec(name, NUMBER))
    return tuple(specs)
