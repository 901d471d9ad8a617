"""Each module's public surface is what its ``__all__`` says, no more and no less."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

PACKAGES = ["riskmodel", "features", "training", "serving"]


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        names.append(package)
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.append(info.name)
    return names


def _defined_here(module: ModuleType) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and callable(value)
    }


@pytest.mark.parametrize("name", _modules())
def test_all_lists_existing_names_and_every_public_definition(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(getattr(module, "__all__", []))

    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert {n for n in exported if not hasattr(module, n)} == set()
    assert _defined_here(module) - exported == set()
