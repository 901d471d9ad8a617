"""The model registry: a directory of immutable bundles and the aliases that point at them.

Layout::

    REGISTRY/
        versions/<version>/bundle.joblib     the bundle (never rewritten)
        versions/<version>/entry.json        its file SHA-256, registration time, summary
        versions/<version>/report/...        the evaluation report written with it, if any
        aliases.json                         alias -> history of versions, newest last

An alias (``champion``, ``challenger``) moves by ``promote`` and goes back by
``rollback``; every move is appended to the alias's log. Versions never change: a version
already present is refused, and loading checks the file against the SHA-256 recorded at
registration as well as the bundle's own manifest.

The directory is ``Registry(path)``, else ``$RISKMODEL_REGISTRY``, else ``data/registry``.
Writers take an exclusive lock on ``REGISTRY/.lock`` so two promotions never interleave.
"""

from __future__ import annotations

import builtins
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from riskmodel.bundle import BundleError, FeatureSpec, ModelBundle

__all__ = [
    "ALIASES",
    "DEFAULT_REGISTRY",
    "Registry",
    "RegistryEntry",
    "RegistryError",
    "resolve_registry_path",
]

DEFAULT_REGISTRY = Path("data/registry")
ALIASES = ("champion", "challenger")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(BundleError):
    """The registry cannot do what was asked (unknown version, alias, duplicate...)."""


def resolve_registry_path(path: str | Path | None = None) -> Path:
    """The registry directory: ``path``, else ``$RISKMODEL_REGISTRY``, else the default."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("RISKMODEL_REGISTRY") or DEFAULT_REGISTRY)


@dataclass(frozen=True)
class RegistryEntry:
    """One registered version, as listed (without loading the trees)."""

    version: str
    registered_at: str
    sha256: str
    aliases: tuple[str, ...]
    summary: dict[str, Any]


class Registry:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = resolve_registry_path(path)

    # -- layout ----------------------------------------------------------------------

    def _dir(self, version: str) -> Path:
        return self.path / "versions" / version

    def bundle_path(self, version: str) -> Path:
        return self._dir(version) / "bundle.joblib"

    def report_dir(self, version: str) -> Path:
        return self._dir(version) / "report"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- versions --------------------------------------------------------------------

    def register(self, bundle: ModelBundle, report: Path | None = None) -> RegistryEntry:
        """Store ``bundle`` under its version (and a copy of its report directory)."""
        if not _VERSION.match(bundle.version):
            raise RegistryError(
                f"version {bundle.version!r}: use letters, digits, '.', '_' or '-' (max 64)"
            )
        with self._locked():
            target = self._dir(bundle.version)
            if target.exists():
                raise RegistryError(
                    f"version {bundle.version} is already in {self.path}; versions never change"
                )
            staging = self.path / "versions" / f".{bundle.version}.partial"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            sha = bundle.save(staging / "bundle.joblib")
            if report is not None:
                shutil.copytree(report, staging / "report")
            entry = {
                "version": bundle.version,
                "registered_at": _now(precise=True),
                "sha256": sha,
                "summary": _entry_summary(bundle),
            }
            _write_json(staging / "entry.json", entry)
            staging.rename(target)  # the version appears whole or not at all
        return self._entry(bundle.version)

    def versions(self) -> builtins.list[str]:
        root = self.path / "versions"
        if not root.is_dir():
            return []
        found = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted(found, key=lambda v: (self._read_entry(v)["registered_at"], v))

    def list(self) -> list[RegistryEntry]:
        """Every version, oldest first, with the aliases pointing at it."""
        return [self._entry(v) for v in self.versions()]

    def _read_entry(self, version: str) -> dict[str, Any]:
        path = self._dir(version) / "entry.json"
        if not path.is_file():
            raise RegistryError(f"version {version!r} is not in the registry {self.path}")
        entry: dict[str, Any] = json.loads(path.read_text())
        return entry

    def _entry(self, version: str) -> RegistryEntry:
        raw = self._read_entry(version)
        current = self.aliases()
        return RegistryEntry(
            version=version,
            registered_at=raw["registered_at"],
            sha256=raw["sha256"],
            aliases=tuple(a for a in ALIASES if current.get(a) == version),
            summary=raw["summary"],
        )

    def entry(self, version_or_alias: str) -> RegistryEntry:
        return self._entry(self.resolve(version_or_alias))

    def resolve(self, version_or_alias: str) -> str:
        """The version an alias points at, or the version itself if registered."""
        aliases = self.aliases()
        if version_or_alias in aliases:
            return aliases[version_or_alias]
        if (self._dir(version_or_alias) / "entry.json").is_file():
            return version_or_alias
        if version_or_alias in ALIASES:
            raise RegistryError(f"no model is {version_or_alias} yet in {self.path}")
        raise RegistryError(
            f"{version_or_alias!r} is neither a version nor an alias in {self.path}"
        )

    def load(
        self, version_or_alias: str = "champion", expect: tuple[FeatureSpec, ...] | None = None
    ) -> ModelBundle:
        """The bundle, checksums verified; with ``expect``, its signature must equal it."""
        version = self.resolve(version_or_alias)
        sha = self._read_entry(version)["sha256"]
        bundle = ModelBundle.load(self.bundle_path(version), sha256=sha)
        if bundle.version != version:
            raise RegistryError(f"{self.bundle_path(version)} holds version {bundle.version}")
        if expect is not None:
            bundle.check_signature(expect)
        return bundle

    # -- aliases ---------------------------------------------------------------------

    def _aliases_file(self) -> Path:
        return self.path / "aliases.json"

    def _read_aliases(self) -> dict[str, dict[str, Any]]:
        path = self._aliases_file()
        if not path.is_file():
            return {}
        data: dict[str, dict[str, Any]] = json.loads(path.read_text())
        return data

    def aliases(self) -> dict[str, str]:
        """Alias -> the version it points at now."""
        return {a: s["stack"][-1] for a, s in self._read_aliases().items() if s["stack"]}

    def history(self, alias: str) -> builtins.list[dict[str, str]]:
        """Every move of ``alias``, oldest first: action, version, at."""
        return list(self._read_aliases().get(alias, {}).get("log", []))

    def promote(self, version: str, alias: str = "champion") -> str:
        """Point ``alias`` at ``version``; returns the version it pointed at before ('' if none)."""
        _check_alias(alias)
        with self._locked():
            version = self.resolve(version)
            data = self._read_aliases()
            state = data.setdefault(alias, {"stack": [], "log": []})
            before = state["stack"][-1] if state["stack"] else ""
            if before == version:
                raise RegistryError(f"{version} is already {alias}")
            state["stack"].append(version)
            state["log"].append({"action": "promote", "version": version, "at": _now()})
            _write_json(self._aliases_file(), data)
        return before

    def rollback(self, alias: str = "champion") -> str:
        """Point ``alias`` back at the version it had before; returns that version."""
        _check_alias(alias)
        with self._locked():
            data = self._read_aliases()
            state = data.get(alias)
            if state is None or len(state["stack"]) < 2:
                raise RegistryError(f"{alias} has no earlier version to roll back to")
            left = state["stack"].pop()
            back = state["stack"][-1]
            state["log"].append({"action": "rollback", "version": back, "from": left, "at": _now()})
            _write_json(self._aliases_file(), data)
        return str(back)


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise RegistryError(f"alias {alias!r}: use one of {', '.join(ALIASES)}")


def _entry_summary(bundle: ModelBundle) -> dict[str, Any]:
    window = bundle.training_window
    return {
        "created_at": bundle.created_at,
        "training_window": {"start": window.start, "end": window.end, "until": window.until},
        "features": len(bundle.features),
        "data_fingerprint": bundle.data_fingerprint,
        "metrics": bundle.metrics,
    }


def _now(precise: bool = False) -> str:
    # Registration times order the versions, so they keep the microseconds.
    return datetime.now(UTC).isoformat(timespec="microseconds" if precise else "seconds")


def _write_json(path: Path, value: object) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)
