"""The model bundle: both scoring paths agree, files round-trip, damage and mismatch are refused."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression

import features
from riskmodel.bundle import (
    BundleError,
    BundleIntegrityError,
    Calibrator,
    FeatureSpec,
    ModelBundle,
    SignatureError,
)
from riskmodel.registry import Registry
from training import LabelPolicy, TrainConfig, train
from training.calibration import fit_calibrator
from training.signature import catalog_signature

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return features.build_features(features.load_history(SAMPLE))


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=40, test_share=0.0)
    return train(features.load_history(SAMPLE), config=config).bundle


def _row(frame: pd.DataFrame, i: int) -> dict[str, object]:
    """One row as the online engine gives it: floats with NaN, categories as str or None."""
    out: dict[str, object] = {}
    for name, value in frame.iloc[i].items():
        out[str(name)] = None if isinstance(value, float) and math.isnan(value) else value
        if value is None or value is pd.NA:
            out[str(name)] = None
    return out


def _calibrated(bundle: ModelBundle, table: pd.DataFrame, kind: str) -> ModelBundle:
    """``bundle`` with a calibrator of ``kind`` fitted on its own margins."""
    if kind == "trained":
        return bundle
    margin = bundle.margin(table)
    label = (margin > np.quantile(margin, 0.8)) ^ (np.arange(len(margin)) % 7 == 0)
    calibrator = fit_calibrator(margin, label.astype(float), kind)
    assert calibrator.kind == kind
    return dataclasses.replace(bundle, calibrator=calibrator)


@pytest.mark.parametrize("kind", ["trained", "centred_isotonic", "sigmoid", "isotonic"])
def test_score_one_equals_score_on_every_sample_request(
    bundle: ModelBundle, table: pd.DataFrame, kind: str
) -> None:
    bundle = _calibrated(bundle, table, kind)
    batch = bundle.score(table)
    single = np.array([bundle.score_one(_row(table, i)) for i in range(len(table))])

    assert ((batch >= 0) & (batch <= 1)).all()
    assert len(np.unique(batch)) > (2 if kind == "isotonic" else 100)  # a staircase: a few
    np.testing.assert_allclose(single, batch, rtol=0, atol=1e-12)
    if bundle.calibrator.kind == "centred_isotonic":  # the same operations, to the bit
        np.testing.assert_array_equal(single, batch)


@pytest.mark.parametrize("kind", ["trained", "centred_isotonic", "sigmoid"])
def test_requests_the_trees_tell_apart_keep_apart_scores(
    bundle: ModelBundle, table: pd.DataFrame, kind: str
) -> None:
    bundle = _calibrated(bundle, table, kind)
    margin, score = bundle.margin(table), bundle.score(table)

    assert len(np.unique(score)) == len(np.unique(margin))
    order = np.argsort(margin, kind="stable")
    assert (np.diff(score[order])[np.diff(margin[order]) > 0] > 0).all()


def test_contributions_add_up_to_the_margin_on_both_paths(
    bundle: ModelBundle, table: pd.DataFrame
) -> None:
    rows = table.iloc[:25]
    contrib = bundle.contributions(rows)

    assert list(contrib.columns) == list(bundle.feature_names)
    assert contrib.index.equals(rows.index)
    np.testing.assert_allclose(
        contrib.sum(axis=1) + bundle.expected_margin, bundle.margin(rows), atol=1e-9
    )
    one = bundle.contributions_one(_row(table, 3))
    np.testing.assert_allclose(list(one.values()), contrib.iloc[3].to_numpy(), atol=1e-12)


def test_requests_scored_from_many_threads_at_once_get_their_own_scores(
    bundle: ModelBundle, table: pd.DataFrame
) -> None:
    # The service scores on several threads at once (PostgreSQL's reads): one row's
    # answer must never be another's.
    rows = [_row(table, i) for i in range(len(table))]
    alone = [bundle.score_one(row) for row in rows]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(bundle.score_one, rows * 4))

    assert together == alone * 4
    assert len(set(alone)) > 100


def test_a_copied_bundle_scores_as_the_original(bundle: ModelBundle, table: pd.DataFrame) -> None:
    copied = pickle.loads(pickle.dumps(bundle))
    rows = [_row(table, i) for i in range(20)]

    assert [copied.score_one(r) for r in rows] == [bundle.score_one(r) for r in rows]
    assert copied.contributions_one(rows[3]) == bundle.contributions_one(rows[3])


def test_a_missing_number_given_as_pandas_na_is_missing(
    bundle: ModelBundle, table: pd.DataFrame
) -> None:
    row = _row(table, 0)
    name = next(n for n, v in row.items() if isinstance(v, float) and n in bundle.feature_names)

    assert bundle.score_one({**row, name: pd.NA}) == bundle.score_one({**row, name: None})
    assert bundle.score_one({**row, name: None}) == bundle.score_one({**row, name: math.nan})


def test_extra_columns_are_ignored_and_order_does_not_matter(
    bundle: ModelBundle, table: pd.DataFrame
) -> None:
    shuffled = table[table.columns[::-1]].assign(something_else="x")

    np.testing.assert_array_equal(bundle.score(shuffled), bundle.score(table))


def test_round_trip_keeps_every_part(
    bundle: ModelBundle, table: pd.DataFrame, tmp_path: Path
) -> None:
    sha = bundle.save(tmp_path / "b.joblib")
    loaded = ModelBundle.load(tmp_path / "b.joblib", sha256=sha)

    assert loaded.version == bundle.version
    assert loaded.features == bundle.features
    assert loaded.calibrator == bundle.calibrator
    assert loaded.training_window == bundle.training_window
    assert loaded.manifest() == bundle.manifest()
    assert loaded.library_versions["lightgbm"] == bundle.library_versions["lightgbm"]
    np.testing.assert_array_equal(loaded.score(table), bundle.score(table))


def test_an_altered_part_fails_its_checksum(bundle: ModelBundle, tmp_path: Path) -> None:
    path = tmp_path / "b.joblib"
    bundle.save(path)
    payload = joblib.load(path)
    payload["parts"]["model"] = payload["parts"]["model"].replace("leaf_value=", "leaf_value=1", 1)
    joblib.dump(payload, path)

    with pytest.raises(BundleIntegrityError, match="part 'model' fails its SHA-256 check"):
        ModelBundle.load(path)


def test_a_file_changed_after_registration_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    path = tmp_path / "b.joblib"
    sha = bundle.save(path)
    path.write_bytes(path.read_bytes() + b"\0")

    with pytest.raises(BundleIntegrityError, match="file SHA-256"):
        ModelBundle.load(path, sha256=sha)
    path.write_bytes(b"not a bundle")
    with pytest.raises(BundleIntegrityError, match="not a readable bundle"):
        ModelBundle.load(path)


def test_missing_features_are_named(bundle: ModelBundle, table: pd.DataFrame) -> None:
    with pytest.raises(SignatureError, match="missing from the frame: account_age_days"):
        bundle.score(table.drop(columns=["account_age_days"]))
    row = _row(table, 0)
    del row["reason"]
    with pytest.raises(SignatureError, match="missing from the request: reason"):
        bundle.score_one(row)


def test_other_levels_or_types_are_a_signature_mismatch(
    bundle: ModelBundle, table: pd.DataFrame
) -> None:
    other_levels = table.assign(reason=table["reason"].cat.set_categories(["unused", "other"]))
    with pytest.raises(SignatureError, match="'reason' has levels"):
        bundle.score(other_levels)
    with pytest.raises(SignatureError, match="'request_amount' is a number"):
        bundle.score(table.assign(request_amount=table["request_amount"].astype(str)))
    with pytest.raises(SignatureError, match="must be a number"):
        bundle.score_one({**_row(table, 0), "request_amount": "lots"})


def test_plain_strings_are_encoded_like_categoricals(
    bundle: ModelBundle, table: pd.DataFrame
) -> None:
    as_text = table.assign(reason=table["reason"].astype(object))
    np.testing.assert_array_equal(bundle.score(as_text), bundle.score(table))
    # An undeclared level is missing, as the feature pipeline makes it.
    unknown = {**_row(table, 0), "payment_method": "seashells"}
    assert bundle.score_one(unknown) == bundle.score_one({**unknown, "payment_method": None})


def test_check_signature_lists_every_difference(bundle: ModelBundle) -> None:
    signature = catalog_signature()
    bundle.check_signature(signature)  # the catalogue it was trained on

    changed = [
        dataclasses.replace(f, levels=(*f.levels, "crypto")) if f.name == "payment_method" else f
        for f in signature
        if f.name != "account_age_days"
    ]
    changed.append(FeatureSpec("brand_new", "number"))
    with pytest.raises(SignatureError) as caught:
        bundle.check_signature(changed)
    message = str(caught.value)
    assert "account_age_days not provided" in message
    assert "brand_new not in the model" in message
    assert "payment_method is a category" in message


def test_isotonic_calibrator_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    margin = rng.normal(size=2000)
    label = (rng.random(2000) < 1 / (1 + np.exp(-2 * margin))).astype(int)
    calibrator = fit_calibrator(margin, label, "isotonic")
    reference = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(margin, label)
    probe = np.linspace(-5, 5, 301)

    np.testing.assert_allclose(calibrator.apply(probe), reference.predict(probe), atol=1e-12)
    assert calibrator.apply_one(0.3) == pytest.approx(float(reference.predict([0.3])[0]))
    sigmoid = fit_calibrator(margin, label, "sigmoid")
    assert sigmoid.kind == "sigmoid"
    assert sigmoid.a == pytest.approx(2, rel=0.2)  # the slope the labels were drawn with


def test_a_calibrator_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(BundleError, match="'magic' is not one of centred_isotonic, sigmoid"):
        Calibrator(kind="magic")


# An isotonic calibrator part as bundles stored it before the centred map (keys sorted).
OLD_CALIBRATOR = (
    '{"a":1.0,"b":0.0,"kind":"isotonic","x":[-6.5,-4.0,-2.25,0.5,2.0],'
    '"y":[0.0,0.004,0.03,0.4,0.875]}'
)


def test_an_old_isotonic_bundle_loads_and_scores_as_before(
    bundle: ModelBundle, table: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "old.joblib"
    bundle.save(path)
    payload = joblib.load(path)
    payload["parts"]["calibrator"] = OLD_CALIBRATOR
    payload["manifest"]["calibrator"] = hashlib.sha256(OLD_CALIBRATOR.encode()).hexdigest()
    joblib.dump(payload, path)
    x, y = [-6.5, -4.0, -2.25, 0.5, 2.0], [0.0, 0.004, 0.03, 0.4, 0.875]

    old = ModelBundle.load(path)
    registry = Registry(tmp_path / "registry")
    registry.register(old)
    again = registry.load(old.version)

    for loaded in (old, again):
        assert loaded.calibrator == Calibrator(kind="isotonic", x=tuple(x), y=tuple(y))
        assert loaded.manifest()["calibrator"] == payload["manifest"]["calibrator"]
        expected = np.interp(loaded.margin(table), x, y)  # the flat-ended staircase
        np.testing.assert_array_equal(loaded.score(table), expected)
        single = [loaded.score_one(_row(table, i)) for i in range(50)]
        np.testing.assert_array_equal(single, expected[:50])
    assert again.summary()["calibrator"] == "isotonic"
