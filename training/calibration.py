"""Fit the map from a raw LightGBM margin to a probability, on a later period than the trees.

Isotonic regression (scikit-learn) when the period holds enough abuse to shape a curve,
else Platt scaling (a logistic regression on the margin), which needs far fewer positives.
The fitted map is stored as plain numbers (``riskmodel.bundle.Calibrator``) so scoring one
request is an interpolation, not a scikit-learn call.
"""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from riskmodel.bundle import Calibrator
from riskmodel.errors import DataError

__all__ = ["CALIBRATIONS", "ISOTONIC_MIN_POSITIVES", "fit_calibrator"]

CALIBRATIONS = ("auto", "isotonic", "sigmoid")
ISOTONIC_MIN_POSITIVES = 50
"""Below this many abusive requests, ``auto`` calibration is sigmoid: isotonic overfits."""


def fit_calibrator(margin: np.ndarray, label: np.ndarray, method: str = "auto") -> Calibrator:
    if method not in CALIBRATIONS:
        raise DataError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    positives = int(np.sum(label))
    if positives == 0 or positives == len(label):
        raise DataError(
            f"the calibration period has {positives} abusive requests out of {len(label)}: "
            "it needs both outcomes (use more history or a shorter label maturity)"
        )
    if method == "auto":
        method = "isotonic" if positives >= ISOTONIC_MIN_POSITIVES else "sigmoid"
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(margin, label)
        return Calibrator(
            kind="isotonic",
            x=tuple(float(v) for v in iso.X_thresholds_),
            y=tuple(float(v) for v in iso.y_thresholds_),
        )
    platt = LogisticRegression(C=1e6)
    platt.fit(margin.reshape(-1, 1), label)
    return Calibrator(kind="sigmoid", a=float(platt.coef_[0, 0]), b=float(platt.intercept_[0]))
