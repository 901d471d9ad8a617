"""Shared pieces of the serving tests: a model trained once per session on the sample data,
a registry, the starter policy, API keys, and an application over a real store.

No tests here; ``tests/test_serving*.py`` import it.
"""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 package for its test client; httpx works the same.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

import features
from riskmodel import dataset, store
from riskmodel.bundle import Calibrator, ModelBundle
from riskmodel.ingest import ingest_tables
from riskmodel.policy import STARTER_POLICY
from riskmodel.registry import Registry
from serving.app import create_app
from serving.auth import Role, create_key
from serving.settings import Settings
from tests.conftest import tiny_tables
from training import LabelPolicy, TrainConfig, train

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"


@cache
def sample_bundle() -> ModelBundle:
    """A small model trained on the sample data (about a second), once per session."""
    config = TrainConfig(labels=LabelPolicy(maturity_days=20), max_rounds=40, test_share=0.0)
    return train(features.load_history(SAMPLE), config=config).bundle


def challenger_of(bundle: ModelBundle) -> ModelBundle:
    """The same trees with an inverted calibration: its scores differ from the champion's."""
    return dataclasses.replace(
        bundle, version=f"{bundle.version}-shadow", calibrator=Calibrator("sigmoid", a=-1.0)
    )


def make_registry(path: Path, *, champion: bool = True, challenger: bool = False) -> Path:
    """A registry at ``path`` (a copy of one built once per session: saving bundles is slow)."""
    shutil.copytree(_registry_template(champion, challenger), path)
    return path


@cache
def _registry_template(champion: bool, challenger: bool) -> Path:
    parent = tempfile.mkdtemp(prefix="serving-registry-")
    atexit.register(shutil.rmtree, parent, True)
    path = Path(parent) / "registry"
    path.mkdir()
    registry = Registry(path)
    bundle = sample_bundle()
    if champion:
        registry.register(bundle)
        registry.promote(bundle.version)
    if challenger:
        shadow = challenger_of(bundle)
        registry.register(shadow)
        registry.promote(shadow.version, alias="challenger")
    return path


def load_tiny(database_url: str) -> None:
    """The conftest's tiny history (two users, four orders, three requests) in the store."""
    tables = {name: dataset.normalise(name, frame) for name, frame in tiny_tables().items()}
    engine = store.open_store(database_url)
    try:
        ingest_tables(engine, tables)
    finally:
        engine.dispose()


@dataclasses.dataclass
class Service:
    client: TestClient
    settings: Settings
    keys: dict[str, str]

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def decide(self, body: dict[str, Any], role: str = "decide") -> Any:
        return self.client.post("/v1/decisions", json=body, headers=self.headers(role))


def make_settings(
    tmp_path: Path,
    database_url: str,
    *,
    challenger: bool = False,
    champion: bool = True,
    **more: Any,
) -> tuple[Settings, dict[str, str]]:
    policy = tmp_path / "policy.yaml"
    shutil.copy(STARTER_POLICY, policy)
    settings = Settings(
        database_url=database_url,
        registry=make_registry(tmp_path / "registry", champion=champion, challenger=challenger),
        policy=policy,
        api_keys=tmp_path / "api_keys.json",
        **more,
    )
    keys = {
        role.value: create_key(settings.api_keys, f"{role.value}-caller", [role]) for role in Role
    }
    return settings, keys


@contextmanager
def running(settings: Settings, keys: dict[str, str]) -> Iterator[Service]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Service(client, settings, keys)


@pytest.fixture
def service(database_url: str, tmp_path: Path) -> Iterator[Service]:
    """The application over a store holding the tiny history, champion and challenger."""
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url, challenger=True)
    with running(settings, keys) as svc:
        yield svc


def body(**overrides: Any) -> dict[str, Any]:
    """A valid refund request on the tiny history: u2 asks back their service order o4."""
    request: dict[str, Any] = {
        "request_id": "api-1",
        "order_id": "o4",
        "user_id": "u2",
        "requested_at": "2026-01-20T10:00:00Z",
        "amount": "20.00",
        "reason": "not_as_described",
        "device_id": "d2",
        "ip": "10.0.0.2",
        "channel": "app",
    }
    return request | overrides
