"""The console's people: accounts with a role and a password kept as a slow salted hash.

    >>> from riskmodel.store import open_store
    >>> from serving.console.accounts import create_account, sign_in
    >>> engine = open_store("sqlite://")
    >>> create_account(engine, "ana", "reviewer", "a long passphrase").role
    'reviewer'
    >>> sign_in(engine, "ana", "a long passphrase").name
    'ana'

Passwords are hashed with scrypt (``hashlib.scrypt``; N=2**14, r=8, p=1, a 16-byte random
salt), the parameters stored in the hash so that stronger ones can be chosen later without
invalidating the old hashes. About 50 ms of CPU and 16 MiB per check: cheap for a person
signing in, dear for someone trying a list of passwords. A disabled account cannot sign in
and its open sessions stop at their next page (each page reads the account).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from riskmodel import units
from riskmodel.errors import RiskModelError
from riskmodel.store.schema import accounts

__all__ = [
    "LOCK_AFTER",
    "LOCK_MINUTES",
    "MIN_PASSWORD",
    "ROLES",
    "Account",
    "AccountError",
    "check_password",
    "create_account",
    "disable_account",
    "find_account",
    "hash_password",
    "list_accounts",
    "sign_in",
    "sign_out",
    "touch",
]

ROLES = ("reviewer", "support")
"""``reviewer``: the queue, cases, verdicts, search. ``support``: search, cases and
histories, appeals filed on a buyer's behalf; never a verdict."""

MIN_PASSWORD = 10
"""The shortest password accepted, in characters."""

LOCK_AFTER = 10
"""Wrong passwords in a row that lock an account ..."""
LOCK_MINUTES = 15
"""... for this long."""

_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_KEY_BYTES = 32
_MAXMEM = 64 * 1024 * 1024  # 128 * r * N is 16 MiB; OpenSSL's default cap is 32 MiB


class AccountError(RiskModelError):
    """An account that cannot be created or changed: the message says why."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    created_at: int  # microseconds
    last_seen_at: int | None
    disabled_at: int | None
    signed_out_at: int | None = None  # microseconds

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def admits(self, began: int) -> bool:
        """Whether a session begun at ``began`` (microseconds) is still good: the account
        is active and has not signed out since."""
        out = self.signed_out_at
        return self.active and (out is None or began > out)


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    """``scrypt$N$r$p$salt$hash`` (hex), a new random salt each time."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_KEY_BYTES
    )
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """True if ``password`` hashes to ``stored`` with its own parameters and salt; the
    hashes are compared in constant time. A malformed ``stored`` matches nothing."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        digest = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected) // 2,
        )
    except ValueError:
        return False
    return hmac.compare_digest(digest.hex(), expected)


# Checked against when the name is unknown, so that a wrong name costs the same time as
# a wrong password and names cannot be found by timing the answer.
_DECOY = hash_password(secrets.token_hex(16))


def _now() -> int:
    return units.micros(datetime.now(UTC))


def _account(row: Any) -> Account:
    return Account(
        row.name,
        row.role,
        int(row.created_at),
        row.last_seen_at,
        row.disabled_at,
        row.signed_out_at,
    )


def create_account(engine: Engine, name: str, role: str, password: str) -> Account:
    """A new account; ``AccountError`` if the name is taken or blank, the role unknown or
    the password shorter than ``MIN_PASSWORD``."""
    name = name.strip()
    if not name or len(name) > 128 or any(ch.isspace() or ch == "\x00" for ch in name):
        raise AccountError("an account name is 1 to 128 characters without spaces")
    if role not in ROLES:
        raise AccountError(f"role {role!r}: one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
    created = _now()
    row = {
        "name": name,
        "role": role,
        "password_hash": hash_password(password),
        "created_at": created,
        "last_seen_at": None,
        "disabled_at": None,
    }
    try:
        with engine.begin() as conn:
            conn.execute(insert(accounts).values(**row))
    except IntegrityError as exc:
        raise AccountError(f"an account named {name!r} exists already") from exc
    return Account(name, role, created, None, None)


def list_accounts(engine: Engine) -> list[Account]:
    """Every account, by name, disabled ones included."""
    with engine.begin() as conn:
        rows = conn.execute(select(accounts).order_by(accounts.c.name)).all()
    return [_account(r) for r in rows]


def find_account(engine: Engine, name: str) -> Account | None:
    with engine.begin() as conn:
        row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
    return None if row is None else _account(row)


def disable_account(engine: Engine, name: str) -> Account:
    """Disable ``name`` (kept, for the names on its verdicts); ``AccountError`` if unknown."""
    with engine.begin() as conn:
        changed = conn.execute(
            update(accounts)
            .where(accounts.c.name == name, accounts.c.disabled_at.is_(None))
            .values(disabled_at=_now())
        ).rowcount
        row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
    if row is None:
        raise AccountError(f"no account named {name!r}")
    if changed == 0:
        raise AccountError(f"account {name!r} is disabled already")
    return _account(row)


def sign_in(engine: Engine, name: str, password: str) -> Account | None:
    """The active account ``name`` if ``password`` is its password, else None (an unknown
    name, a wrong password, a disabled and a locked account are told apart by nobody).

    ``LOCK_AFTER`` wrong passwords in a row lock the account for ``LOCK_MINUTES``: a list of
    passwords tried against one account gets a few guesses an hour, not twenty a second.
    While locked, even the right password is refused."""
    with engine.begin() as conn:
        row = conn.execute(
            select(accounts.c.name, accounts.c.password_hash, accounts.c.locked_until).where(
                accounts.c.name == name
            )
        ).first()
    matches = check_password(password, _DECOY if row is None else row.password_hash)
    if row is None:
        return None
    now = _now()
    if row.locked_until is not None and row.locked_until > now:
        return None
    if not matches:
        _failed(engine, name, now)
        return None
    with engine.begin() as conn:
        conn.execute(
            update(accounts)
            .where(accounts.c.name == name)
            .values(failed_sign_ins=0, locked_until=None)
        )
    account = touch(engine, name, every=0)
    return account if account is not None and account.active else None


def _failed(engine: Engine, name: str, now: int) -> None:
    with engine.begin() as conn:
        failed = conn.execute(
            update(accounts)
            .where(accounts.c.name == name)
            .values(failed_sign_ins=accounts.c.failed_sign_ins + 1)
            .returning(accounts.c.failed_sign_ins)
        ).scalar_one()
        if failed >= LOCK_AFTER:
            conn.execute(
                update(accounts)
                .where(accounts.c.name == name)
                .values(failed_sign_ins=0, locked_until=now + LOCK_MINUTES * units.MINUTE)
            )


def touch(engine: Engine, name: str, *, every: int = 30 * units.SECOND) -> Account | None:
    """The account ``name``, its ``last_seen_at`` moved to now unless it was moved less
    than ``every`` microseconds ago (a page load is then a read, not a write). None if
    there is no such account."""
    now = _now()
    with engine.begin() as conn:
        row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
        if row is None:
            return None
        if row.disabled_at is None and (row.last_seen_at or 0) <= now - every:
            conn.execute(update(accounts).where(accounts.c.name == name).values(last_seen_at=now))
            return replace(_account(row), last_seen_at=now)
    return _account(row)


def sign_out(engine: Engine, name: str) -> None:
    """End every session of ``name`` begun until now, on every device."""
    with engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.name == name).values(signed_out_at=_now()))
