"""The model bundle: one immutable, versioned file with everything needed to score.

A bundle holds the LightGBM trees (as LightGBM's own text format, which is stable across
versions where a pickle is not), the calibrator that turns a raw margin into a probability,
the input signature (feature names, types, categorical levels), the training window, a
fingerprint of the training data, the metrics, the library versions it was made with,
and a SHA-256 manifest of its parts.

The file is a joblib dump of plain strings, so loading never unpickles a library object,
and every part is checked against the manifest before it is used::

    bundle.save(path)                      # returns the SHA-256 of the file
    same = ModelBundle.load(path)          # BundleIntegrityError if a part was altered
    same.score(frame)                      # calibrated P(abuse) per row
    same.score_one({"reason": "unused", ...})

Categorical features are encoded by the stored levels: a level's position is its code,
and a value that is null or not among the levels is missing (NaN), which is what the
feature pipeline itself does with an undeclared level. A frame whose categorical column
declares other levels than the bundle's is refused: it was built for another signature.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import lightgbm
import numpy as np
import pandas as pd

from riskmodel.errors import RiskModelError
from riskmodel.single_row import CONTRIBUTIONS, RAW_SCORE, SingleRow

__all__ = [
    "CATEGORY",
    "FORMAT",
    "NUMBER",
    "BundleError",
    "BundleIntegrityError",
    "Calibrator",
    "FeatureSpec",
    "ModelBundle",
    "SignatureError",
    "TrainingWindow",
    "encode_frame",
    "file_sha256",
]

FORMAT = "refund-risk-bundle/1"
NUMBER = "number"
CATEGORY = "category"
_PARTS = ("model", "calibrator", "signature", "metadata")


class BundleError(RiskModelError):
    """A model bundle cannot be read, written or used as asked."""


class BundleIntegrityError(BundleError):
    """A bundle file is damaged or altered: a checksum does not match its manifest."""


class SignatureError(BundleError):
    """The features given do not match the bundle's input signature."""


@dataclass(frozen=True)
class FeatureSpec:
    """One model input: a number, or a category with its levels in code order."""

    name: str
    type: str = NUMBER
    levels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in (NUMBER, CATEGORY):
            raise BundleError(f"feature {self.name!r}: type {self.type!r} is not number/category")
        if self.type == CATEGORY and not self.levels:
            raise BundleError(f"feature {self.name!r}: a category needs its levels")


@dataclass(frozen=True)
class Calibrator:
    """Raw LightGBM margin -> probability.

    ``centred_isotonic``: strictly increasing in the margin, so no two requests the trees
    tell apart get the same score. ``x`` are the centres of the isotonic fit's blocks (the
    mean margin of each) and ``y`` their abuse rates, both strictly increasing, ``y``
    within (0, 1); between two centres the score is interpolated linearly. Beyond the
    outermost centres, where the isotonic fit was flat, it goes on with the slope of the
    nearest segment and bends hyperbolically, never moving more than half the way to the
    next rate or to the bound: below, ``y[0] - h * (1 - 1 / (1 + s * d / h))``, ``d``
    the distance from the centre, ``s`` the first segment's slope, ``h`` half the smaller
    of ``y[0]`` and ``y[1] - y[0]``; above, the same towards 1 (with one centre, ``h`` is
    half the smaller of ``y[0]`` and ``1 - y[0]`` and ``s = h``).
    ``sigmoid``: ``1 / (1 + exp(-(a * margin + b)))`` (Platt scaling). ``identity``: the
    trees' own sigmoid of the margin. ``isotonic``: a monotone piecewise-linear map
    through the knots (``x``, ``y``), flat beyond the ends (what scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")`` predicts); its flat steps give one score
    to many requests, so training no longer makes it, but bundles that have it score as
    they always did.

    ``apply`` and ``apply_one`` compute the same operations in the same order, so a
    request scored alone gets exactly the score it gets in a batch.
    """

    KINDS = ("centred_isotonic", "sigmoid", "identity", "isotonic")  # not a field

    kind: str
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    a: float = 1.0
    b: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise BundleError(
                f"calibrator kind {self.kind!r} is not one of {', '.join(self.KINDS)}"
            )
        if self.kind in ("isotonic", "centred_isotonic") and (
            len(self.x) != len(self.y) or not self.x
        ):
            raise BundleError(f"an {self.kind} calibrator needs as many knots x as values y")
        if self.kind == "centred_isotonic":
            x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
            if not (np.isfinite(x).all() and (np.diff(x) > 0).all() and (np.diff(y) > 0).all()):
                raise BundleError("a centred_isotonic calibrator needs strictly increasing knots")
            if not (y[0] > 0 and y[-1] < 1):
                raise BundleError("a centred_isotonic calibrator's values must be within (0, 1)")

    def apply(self, margin: np.ndarray) -> np.ndarray:
        margin = np.asarray(margin, dtype=float)
        if self.kind == "isotonic":
            out: np.ndarray = np.interp(margin, self.x, self.y)
            return out
        if self.kind == "centred_isotonic":
            return self._centred(margin)
        a, b = (self.a, self.b) if self.kind == "sigmoid" else (1.0, 0.0)
        return 1.0 / (1.0 + np.exp(-(a * margin + b)))

    def apply_one(self, margin: float) -> float:
        if self.kind == "isotonic":
            return float(np.interp(margin, self.x, self.y))
        if self.kind == "centred_isotonic":
            return self._centred_one(margin)
        a, b = (self.a, self.b) if self.kind == "sigmoid" else (1.0, 0.0)
        return 1.0 / (1.0 + math.exp(-(a * margin + b)))

    def _tails(self) -> tuple[float, float, float, float]:
        """How the centred map goes on beyond its end centres: the most it moves (towards
        0 below, 1 above) and its rate of approach, for the bottom then the top."""
        x, y = self.x, self.y
        if len(x) == 1:
            most = min(y[0], 1.0 - y[0]) / 2
            return most, 1.0, most, 1.0
        low = min(y[0], y[1] - y[0]) / 2
        high = min(1.0 - y[-1], y[-1] - y[-2]) / 2
        low_slope = (y[1] - y[0]) / (x[1] - x[0])
        high_slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
        return low, low_slope / low, high, high_slope / high

    def _centred(self, values: np.ndarray) -> np.ndarray:
        x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
        low_most, low_rate, high_most, high_rate = self._tails()
        margin = values.reshape(-1)
        out = np.empty(margin.shape, dtype=float)
        low, high = margin < x[0], margin > x[-1]
        below = 1.0 - 1.0 / (1.0 + low_rate * (self.x[0] - margin[low]))
        out[low] = self.y[0] - low_most * below
        above = 1.0 - 1.0 / (1.0 + high_rate * (margin[high] - self.x[-1]))
        out[high] = self.y[-1] + high_most * above
        inside = ~(low | high)
        if len(x) == 1:
            out[inside] = y[0]
        else:
            m = margin[inside]
            j = np.clip(np.searchsorted(x, m, side="right") - 1, 0, len(x) - 2)
            t = (m - x[j]) / (x[j + 1] - x[j])
            out[inside] = np.minimum(y[j] + (y[j + 1] - y[j]) * t, y[j + 1])
        return out.reshape(values.shape)

    def _centred_one(self, margin: float) -> float:
        # The operations of ``_centred``, in the same order, on one float.
        x, y = self.x, self.y
        if margin < x[0]:
            low_most, low_rate, _, _ = self._tails()
            return y[0] - low_most * (1.0 - 1.0 / (1.0 + low_rate * (x[0] - margin)))
        if margin > x[-1]:
            _, _, high_most, high_rate = self._tails()
            return y[-1] + high_most * (1.0 - 1.0 / (1.0 + high_rate * (margin - x[-1])))
        if len(x) == 1:
            return y[0]
        j, top = 0, len(x) - 2  # the last knot at or below the margin, as searchsorted
        while j < top:
            middle = (j + top + 1) // 2
            if x[middle] <= margin:
                j = middle
            else:
                top = middle - 1
        t = (margin - x[j]) / (x[j + 1] - x[j])
        return min(y[j] + (y[j + 1] - y[j]) * t, y[j + 1])


@dataclass(frozen=True)
class TrainingWindow:
    """What the model learnt from: requests in [start, end), labels known before ``until``.

    Times are ISO 8601 UTC strings; ``maturity_days`` is the label maturity used.
    """

    start: str
    end: str
    until: str
    maturity_days: float


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A trained, calibrated model and what it needs to be used and audited.

    Immutable: ``metrics``, ``library_versions`` and ``details`` are plain dicts for JSON,
    but nothing in the project changes them after creation, and a saved bundle's manifest
    would expose any change.
    """

    version: str
    features: tuple[FeatureSpec, ...]
    model_text: str
    calibrator: Calibrator
    training_window: TrainingWindow
    data_fingerprint: str
    metrics: dict[str, Any] = field(default_factory=dict)
    library_versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    _booster: lightgbm.Booster = field(init=False, repr=False)
    _number_at: np.ndarray = field(init=False, repr=False)
    _number_names: tuple[str, ...] = field(init=False, repr=False)
    _category_at: tuple[tuple[int, str, dict[str, float]], ...] = field(init=False, repr=False)
    _margin_one: SingleRow = field(init=False, repr=False)
    _contributions_one: SingleRow = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise BundleError(f"bundle {self.version}: a feature is listed twice")
        try:
            booster = lightgbm.Booster(model_str=self.model_text)
        except lightgbm.basic.LightGBMError as exc:
            raise BundleError(
                f"bundle {self.version}: the model text is not a model: {exc}"
            ) from exc
        if booster.num_feature() != len(names):
            raise BundleError(
                f"bundle {self.version}: the model reads {booster.num_feature()} features, "
                f"the signature lists {len(names)}"
            )
        object.__setattr__(self, "_booster", booster)
        numbers = [(j, f.name) for j, f in enumerate(self.features) if f.type != CATEGORY]
        object.__setattr__(self, "_number_at", np.array([j for j, _ in numbers], dtype=np.intp))
        object.__setattr__(self, "_number_names", tuple(name for _, name in numbers))
        # A level's position is its code.
        categories = tuple(
            (j, f.name, {level: float(i) for i, level in enumerate(f.levels)})
            for j, f in enumerate(self.features)
            if f.type == CATEGORY
        )
        object.__setattr__(self, "_category_at", categories)
        object.__setattr__(self, "_margin_one", SingleRow(booster, RAW_SCORE))
        object.__setattr__(self, "_contributions_one", SingleRow(booster, CONTRIBUTIONS))

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    @property
    def booster(self) -> lightgbm.Booster:
        return self._booster

    # -- scoring ---------------------------------------------------------------------

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The float matrix the trees read: the model's columns, categories as codes."""
        return encode_frame(frame, self.features, f"model {self.version}")

    def margin(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw LightGBM margin (log-odds before calibration) per row."""
        if len(frame) == 0:
            return np.empty(0)
        return np.asarray(self._booster.predict(self.matrix(frame), raw_score=True))

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of abuse per row of ``frame`` (0..1)."""
        return self.calibrator.apply(self.margin(frame))

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Each feature's SHAP contribution to the raw margin (LightGBM ``pred_contrib``).

        Same index as ``frame``; a row's contributions plus ``expected_margin`` sum to
        its margin.
        """
        if len(frame) == 0:
            return pd.DataFrame(columns=list(self.feature_names), index=frame.index, dtype=float)
        contrib = np.asarray(self._booster.predict(self.matrix(frame), pred_contrib=True))
        return pd.DataFrame(contrib[:, :-1], index=frame.index, columns=list(self.feature_names))

    def row_vector(self, row: Mapping[str, object]) -> np.ndarray:
        """One request's features as the 1 x n matrix the trees read."""
        try:
            numbers = [row[name] for name in self._number_names]
            levels = [row[name] for _, name, _ in self._category_at]
        except KeyError:
            missing = [n for n in self.feature_names if n not in row]
            raise SignatureError(
                f"model {self.version} needs features missing from the request: "
                f"{', '.join(missing)}"
            ) from None
        out = np.empty((1, len(self.features)), dtype=float)
        try:
            out[0, self._number_at] = numbers  # in one assignment; None is NaN
        except (TypeError, ValueError):  # pd.NA, or a value that is no number: say which
            out[0, self._number_at] = [
                self._number(name, value)
                for name, value in zip(self._number_names, numbers, strict=True)
            ]
        for (j, _, codes), level in zip(self._category_at, levels, strict=True):
            out[0, j] = codes.get(level if isinstance(level, str) else "", math.nan)
        return out

    def _number(self, name: str, value: object) -> float:
        if value is None or value is pd.NA:
            return math.nan
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SignatureError(
                f"model {self.version}: feature {name!r} must be a number, got {value!r}"
            ) from None

    def score_one(self, row: Mapping[str, object]) -> float:
        """Calibrated probability of abuse for one request's features (serving path)."""
        return self.calibrator.apply_one(float(self._margin_one.predict(self.row_vector(row))[0]))

    def contributions_one(self, row: Mapping[str, object]) -> dict[str, float]:
        contrib = self._contributions_one.predict(self.row_vector(row))
        return dict(zip(self.feature_names, contrib[:-1].tolist(), strict=True))

    @property
    def expected_margin(self) -> float:
        """The margin with no feature known (LightGBM's bias term of ``pred_contrib``)."""
        empty = np.full((1, len(self.features)), np.nan)
        contrib = np.asarray(self._booster.predict(empty, pred_contrib=True, num_threads=1))
        return float(contrib[0, -1])

    # -- signature -------------------------------------------------------------------

    def check_signature(self, expected: Sequence[FeatureSpec]) -> None:
        """Refuse (``SignatureError``) unless ``expected`` is exactly this model's inputs."""
        mine, theirs = {f.name: f for f in self.features}, {f.name: f for f in expected}
        problems = [f"{n} not provided" for n in mine if n not in theirs]
        problems += [f"{n} not in the model" for n in theirs if n not in mine]
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                given, wanted = _describe(theirs[name]), _describe(mine[name])
                problems.append(f"{name} is {given}, the model expects {wanted}")
        if problems:
            raise SignatureError(
                f"model {self.version} does not match the features given: " + "; ".join(problems)
            )

    # -- persistence -----------------------------------------------------------------

    def _parts(self) -> dict[str, str]:
        metadata = {
            "version": self.version,
            "training_window": asdict(self.training_window),
            "data_fingerprint": self.data_fingerprint,
            "metrics": self.metrics,
            "library_versions": self.library_versions,
            "created_at": self.created_at,
            "details": self.details,
        }
        return {
            "model": self.model_text,
            "calibrator": _json(asdict(self.calibrator)),
            "signature": _json([asdict(f) for f in self.features]),
            "metadata": _json(metadata),
        }

    def manifest(self) -> dict[str, str]:
        """SHA-256 of each part of the bundle."""
        return {name: _sha256(text.encode()) for name, text in self._parts().items()}

    def save(self, path: str | Path) -> str:
        """Write the bundle to ``path`` (atomically); returns the file's SHA-256."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = self._parts()
        payload = {
            "format": FORMAT,
            "parts": parts,
            "manifest": {n: _sha256(t.encode()) for n, t in parts.items()},
        }
        partial = path.with_name(path.name + ".partial")
        joblib.dump(payload, partial, compress=3)
        partial.replace(path)
        return file_sha256(path)

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> ModelBundle:
        """Read a bundle, verifying the file's SHA-256 (if given) and every part's."""
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"{path}: no bundle file there")
        if sha256 is not None and (actual := file_sha256(path)) != sha256:
            raise BundleIntegrityError(
                f"{path}: file SHA-256 is {actual}, the registry recorded {sha256}"
            )
        try:
            payload = joblib.load(path)
        except Exception as exc:  # a damaged file fails in many ways inside pickle/zlib
            raise BundleIntegrityError(f"{path}: not a readable bundle ({exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise BundleError(f"{path}: not a {FORMAT} file")
        parts, manifest = payload["parts"], payload["manifest"]
        for name in _PARTS:
            if name not in parts or name not in manifest:
                raise BundleIntegrityError(f"{path}: part {name!r} is missing")
            actual = _sha256(parts[name].encode())
            if actual != manifest[name]:
                raise BundleIntegrityError(
                    f"{path}: part {name!r} fails its SHA-256 check "
                    f"(manifest {manifest[name][:12]}..., content {actual[:12]}...)"
                )
        return cls.from_parts(parts)

    @classmethod
    def from_parts(cls, parts: Mapping[str, str]) -> ModelBundle:
        meta = json.loads(parts["metadata"])
        calibrator = json.loads(parts["calibrator"])
        return cls(
            version=meta["version"],
            features=tuple(
                FeatureSpec(f["name"], f["type"], tuple(f["levels"]))
                for f in json.loads(parts["signature"])
            ),
            model_text=parts["model"],
            calibrator=Calibrator(
                kind=calibrator["kind"],
                x=tuple(calibrator["x"]),
                y=tuple(calibrator["y"]),
                a=calibrator["a"],
                b=calibrator["b"],
            ),
            training_window=TrainingWindow(**meta["training_window"]),
            data_fingerprint=meta["data_fingerprint"],
            metrics=meta["metrics"],
            library_versions=meta["library_versions"],
            created_at=meta["created_at"],
            details=meta["details"],
        )

    def summary(self) -> dict[str, Any]:
        """What ``riskmodel models show`` prints: everything but the trees."""
        return {
            "version": self.version,
            "created_at": self.created_at,
            "training_window": asdict(self.training_window),
            "data_fingerprint": self.data_fingerprint,
            "features": len(self.features),
            "categorical": {f.name: list(f.levels) for f in self.features if f.type == CATEGORY},
            "calibrator": self.calibrator.kind,
            "trees": self._booster.num_trees(),
            "metrics": self.metrics,
            "library_versions": self.library_versions,
            "details": self.details,
            "manifest": self.manifest(),
        }


def encode_frame(
    frame: pd.DataFrame, specs: Sequence[FeatureSpec], what: str = "the model"
) -> np.ndarray:
    """``frame``'s columns named by ``specs`` as one float matrix, categories as codes.

    Training and scoring both go through here, so a code means the same level in both.
    """
    missing = [f.name for f in specs if f.name not in frame.columns]
    if missing:
        raise SignatureError(f"{what} needs features missing from the frame: {', '.join(missing)}")
    out = np.empty((len(frame), len(specs)), dtype=float)
    for j, spec in enumerate(specs):
        column = frame[spec.name]
        if spec.type == CATEGORY:
            out[:, j] = _codes_of(spec, column, what)
            continue
        if isinstance(column.dtype, pd.CategoricalDtype) or not (
            pd.api.types.is_numeric_dtype(column.dtype) or column.isna().all()
        ):
            raise SignatureError(
                f"{what}: feature {spec.name!r} is a number but the frame's column has "
                f"dtype {column.dtype}"
            )
        out[:, j] = column.to_numpy(dtype=float, na_value=np.nan)
    return out


def _codes_of(spec: FeatureSpec, column: pd.Series, what: str) -> np.ndarray:
    if isinstance(column.dtype, pd.CategoricalDtype):
        given = tuple(str(c) for c in column.cat.categories)
        if given != spec.levels:
            raise SignatureError(
                f"{what}: feature {spec.name!r} has levels {list(given)} in the frame "
                f"but {list(spec.levels)} in the model"
            )
        codes = column.cat.codes.to_numpy(dtype=float)
    else:
        values = column.astype(object).where(column.notna(), None)
        codes = pd.Index(spec.levels, dtype=object).get_indexer(pd.Index(values)).astype(float)
    codes[codes < 0] = np.nan
    return codes


def _describe(spec: FeatureSpec) -> str:
    return f"a category {list(spec.levels)}" if spec.type == CATEGORY else "a number"


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
