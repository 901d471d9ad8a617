"""API keys: one per caller, with roles; only their SHA-256 is ever stored.

    >>> from pathlib import Path
    >>> from serving.auth import Role, create_key
    >>> path = Path("data/api_keys.json")
    >>> key = create_key(path, "refund-pipeline", [Role.DECIDE])  # doctest: +SKIP

``create_key`` prints nothing and returns the key once; the keys file keeps the caller, its
roles and the key's hash. A caller presents the key as ``Authorization: Bearer <key>`` (or
``X-API-Key: <key>``). The service re-reads the file when it changes, so a new or removed
key takes effect without a restart; ``list_keys`` and ``revoke_keys`` show and remove
keys. Roles: ``decide`` (ask for decisions, read them),
``ingest`` (stream history and labels), ``review`` (the review queue, verdicts, a user's
history, read decisions), ``admin`` (everything, and reloads).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger("serving")

__all__ = [
    "Caller",
    "KeyEntry",
    "KeyRing",
    "Role",
    "create_key",
    "hash_key",
    "list_keys",
    "presented_key",
    "revoke_keys",
]

_PREFIX = "rk_"
_ID_LENGTH = 12


class Role(StrEnum):
    DECIDE = "decide"
    INGEST = "ingest"
    REVIEW = "review"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    name: str
    roles: frozenset[Role]

    def may(self, *roles: Role) -> bool:
        """True if the caller holds one of ``roles``; admin may do anything."""
        return Role.ADMIN in self.roles or any(role in self.roles for role in roles)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"keys": []}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@dataclass(frozen=True)
class KeyEntry:
    """A stored key as ``keys list`` shows it: never the key, and only the start of its
    hash (``key_id``, enough to name it in ``keys revoke``)."""

    key_id: str
    caller: str
    roles: tuple[str, ...]
    created_at: str


def _rewrite(path: Path, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """Apply ``change`` to the stored keys: the file is rewritten whole (a temporary file,
    then an atomic replace) under an exclusive lock, so two changes never lose one another."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(path)
        data["keys"] = change(list(data.get("keys", [])))
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(data, indent=2) + "\n")
        os.chmod(partial, 0o600)
        os.replace(partial, path)


def create_key(path: Path, caller: str, roles: Sequence[Role]) -> str:
    """A new random key for ``caller`` with ``roles``, returned once; the file keeps its hash."""
    if not caller.strip():
        raise ValueError("a key needs the caller's name")
    if not roles:
        raise ValueError("a key needs at least one role")
    chosen = sorted({Role(r).value for r in roles})
    key = _PREFIX + secrets.token_urlsafe(32)
    entry = {
        "caller": caller.strip(),
        "roles": chosen,
        "sha256": hash_key(key),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _rewrite(path, lambda keys: [*keys, entry])
    return key


def list_keys(path: Path) -> list[KeyEntry]:
    """The keys stored in ``path`` (none when there is no file)."""
    return [
        KeyEntry(
            key_id=str(entry["sha256"])[:_ID_LENGTH],
            caller=str(entry.get("caller", "?")),
            roles=tuple(entry.get("roles", [])),
            created_at=str(entry.get("created_at", "?")),
        )
        for entry in _read(path).get("keys", [])
    ]


def revoke_keys(path: Path, *, caller: str | None = None, key_id: str | None = None) -> int:
    """Remove the keys of ``caller``, or the one key whose ``key_id`` is given; returns how
    many were removed. A running service refuses them from its next request."""
    if (caller is None) == (key_id is None):
        raise ValueError("name either a caller or a key id")
    if key_id is not None and len(key_id) < _ID_LENGTH:
        raise ValueError(f"a key id has {_ID_LENGTH} characters (see keys list)")
    removed = 0

    def keep(entry: dict[str, Any]) -> bool:
        if caller is not None:
            return bool(entry.get("caller") != caller)
        return not str(entry.get("sha256", "")).startswith(str(key_id))

    def change(keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal removed
        kept = [entry for entry in keys if keep(entry)]
        removed = len(keys) - len(kept)
        return kept

    _rewrite(path, change)
    return removed


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: ``Authorization: Bearer <key>``, else ``X-API-Key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


class KeyRing:
    """The keys file as the service sees it, re-read whenever the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._entries: list[tuple[bytes, Caller]] = []

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        entries = []
        known = {r.value for r in Role}
        try:
            for entry in _read(self.path).get("keys", []):
                roles = frozenset(Role(r) for r in entry.get("roles", []) if r in known)
                entries.append((bytes.fromhex(entry["sha256"]), Caller(entry["caller"], roles)))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: a damaged keys file lets nobody in, and says so in the log.
            log.error("API keys file %s unreadable, every key refused: %s", self.path, exc)
            entries = []
        self._entries, self._stamp = entries, stamp

    def authenticate(self, key: str) -> Caller | None:
        """The caller holding ``key``, or None. Every stored hash is compared, in constant time."""
        self._refresh()
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for stored, caller in self._entries:
            if hmac.compare_digest(stored, digest):
                found = caller
        return found

    def __len__(self) -> int:
        self._refresh()
        return len(self._entries)
