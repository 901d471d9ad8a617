"""The registry: immutable versions, moving aliases with a history, verified loads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import features
from riskmodel.bundle import BundleIntegrityError, FeatureSpec, ModelBundle, SignatureError
from riskmodel.registry import Registry, RegistryError, resolve_registry_path
from training import TrainConfig, train
from training.signature import catalog_signature

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return train(
        features.load_history(SAMPLE), config=TrainConfig(max_rounds=20, test_share=0.0)
    ).bundle


def _versions(bundle: ModelBundle, *names: str) -> list[ModelBundle]:
    return [dataclasses.replace(bundle, version=name) for name in names]


def test_register_then_load_by_version(bundle: ModelBundle, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    entry = registry.register(bundle)
    loaded = registry.load(bundle.version, expect=catalog_signature())

    assert entry.version == bundle.version
    assert entry.sha256 == registry.entry(bundle.version).sha256
    assert loaded.manifest() == bundle.manifest()
    assert [e.version for e in registry.list()] == [bundle.version]


def test_a_version_is_never_replaced(bundle: ModelBundle, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(bundle)
    before = registry.bundle_path(bundle.version).read_bytes()

    with pytest.raises(RegistryError, match="already in"):
        registry.register(bundle)
    assert registry.bundle_path(bundle.version).read_bytes() == before


def test_promote_and_rollback_keep_a_history(bundle: ModelBundle, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    for b in _versions(bundle, "v1", "v2", "v3"):
        registry.register(b)

    assert registry.promote("v1") == ""
    assert registry.promote("v2") == "v1"
    registry.promote("v3", alias="challenger")
    assert registry.aliases() == {"champion": "v2", "challenger": "v3"}
    assert registry.load("champion").version == "v2"

    assert registry.rollback("champion") == "v1"
    assert registry.load("champion").version == "v1"
    registry.promote("challenger")  # the challenger's version becomes champion
    assert registry.aliases()["champion"] == "v3"
    assert {e.version: e.aliases for e in registry.list()}["v3"] == ("champion", "challenger")
    log = registry.history("champion")
    assert [(m["action"], m["version"]) for m in log] == [
        ("promote", "v1"),
        ("promote", "v2"),
        ("rollback", "v1"),
        ("promote", "v3"),
    ]


def test_alias_mistakes_are_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no model is champion yet"):
        registry.load("champion")
    registry.register(dataclasses.replace(bundle, version="v1"))
    with pytest.raises(RegistryError, match="neither a version nor an alias"):
        registry.promote("v9")
    with pytest.raises(RegistryError, match="alias 'king'"):
        registry.promote("v1", alias="king")
    registry.promote("v1")
    with pytest.raises(RegistryError, match="already champion"):
        registry.promote("v1")
    with pytest.raises(RegistryError, match="no earlier version"):
        registry.rollback("champion")
    with pytest.raises(RegistryError, match="use letters"):
        registry.register(dataclasses.replace(bundle, version="../escape"))


def test_a_damaged_bundle_is_refused(bundle: ModelBundle, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(bundle)
    path = registry.bundle_path(bundle.version)
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))

    with pytest.raises(BundleIntegrityError, match="registry recorded"):
        registry.load(bundle.version)


def test_a_signature_mismatch_is_refused_on_load(bundle: ModelBundle, tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    registry.register(bundle)
    expected = (*catalog_signature(), FeatureSpec("feature_from_the_future"))

    with pytest.raises(SignatureError, match="feature_from_the_future not in the model"):
        registry.load(bundle.version, expect=expected)


def test_the_report_is_kept_with_its_version(bundle: ModelBundle, tmp_path: Path) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text(json.dumps({"ok": 1}))
    registry = Registry(tmp_path / "reg")
    registry.register(bundle, report=report)

    assert json.loads((registry.report_dir(bundle.version) / "report.json").read_text()) == {
        "ok": 1
    }


def test_the_directory_comes_from_the_argument_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RISKMODEL_REGISTRY", raising=False)
    assert resolve_registry_path() == Path("data/registry")
    monkeypatch.setenv("RISKMODEL_REGISTRY", str(tmp_path / "env"))
    assert Registry().path == tmp_path / "env"
    assert Registry(tmp_path / "arg").path == tmp_path / "arg"
