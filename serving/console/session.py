"""The console's session: a cookie signed with HMAC-SHA256, and CSRF tokens bound to it.

    >>> secret = bytes(32)
    >>> cookie = issue(secret, "ana", now=0, hours=12)
    >>> opened = open_cookie(secret, cookie, now=60)
    >>> opened.name, check_csrf(secret, opened, csrf_token(secret, opened))
    ('ana', True)

The cookie holds the account's name, a random session id and when it expires; the
signature makes it unforgeable without the secret. It says who signed in, never what they
may do: every page reads the account again (a disabled account or a changed role takes
effect at once). It slides: each page issues it again with a new expiry, so it lapses
after ``hours`` without a page, not ``hours`` after signing in.

The secret is shared by every worker of every replica, so a session opened on one is good
on all: it is a row of the store's ``live_settings`` (``what = console_secret``), created
once when missing (``secrets.token_hex(32)``) and read once per worker (``shared_secret``).

The CSRF token of a form is an HMAC of the session id: a page of another site cannot read
it, so it cannot post a form as the signed-in person. The sign-in form, before any
session, binds its token to a random nonce in a short-lived cookie of its own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from riskmodel import units
from riskmodel.store.schema import live_settings

__all__ = [
    "COOKIE",
    "LOGIN_COOKIE",
    "SECRET_SETTING",
    "Session",
    "check_csrf",
    "check_login",
    "csrf_token",
    "issue",
    "login_token",
    "open_cookie",
    "shared_secret",
]

COOKIE = "console_session"
LOGIN_COOKIE = "console_login"
SECRET_SETTING = "console_secret"


@dataclass(frozen=True)
class Session:
    name: str
    session_id: str
    expires: int  # seconds since the epoch
    began: int  # microseconds since the epoch: the sign-in, kept as the session slides


def shared_secret(engine: Engine) -> bytes:
    """The signing secret in the store, created there when missing. Two workers starting
    at once both try to create it; the second insert fails and reads the first's."""
    for _ in range(2):
        with engine.begin() as conn:
            found = conn.execute(
                select(live_settings.c.value).where(live_settings.c.what == SECRET_SETTING)
            ).scalar_one_or_none()
        if found is not None:
            return bytes.fromhex(found)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(live_settings).values(
                        what=SECRET_SETTING,
                        value=secrets.token_hex(32),
                        changed_at=units.micros(datetime.now(UTC)),
                        changed_by="console",
                        reason="the console's session signing secret, made once",
                    )
                )
        except IntegrityError:
            continue
    raise RuntimeError("the console's signing secret could not be read or created")


def _sign(secret: bytes, purpose: str, payload: bytes) -> str:
    return hmac.new(secret, purpose.encode() + b"\x00" + payload, hashlib.sha256).hexdigest()


def issue(
    secret: bytes,
    name: str,
    *,
    now: int,
    hours: float,
    session_id: str = "",
    began: int | None = None,
) -> str:
    """A signed cookie value for ``name``, expiring ``hours`` after ``now`` (seconds);
    the same ``session_id`` and ``began`` when it slides, new ones at sign-in."""
    body = {
        "n": name,
        "s": session_id or secrets.token_hex(16),
        "e": now + int(hours * 3600),
        "b": time.time_ns() // 1000 if began is None else began,
    }
    payload = base64.urlsafe_b64encode(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload.decode()}.{_sign(secret, 'session', payload)}"


def open_cookie(secret: bytes, value: str | None, *, now: int) -> Session | None:
    """The session of a cookie with a good signature that has not expired; else None."""
    if not value or "." not in value:
        return None
    payload, _, signature = value.rpartition(".")
    expected = _sign(secret, "session", payload.encode())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(payload.encode()))
        session = Session(str(body["n"]), str(body["s"]), int(body["e"]), int(body["b"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now else None


def csrf_token(secret: bytes, session: Session) -> str:
    """The token every form of this session carries."""
    return _sign(secret, "csrf", session.session_id.encode())


def check_csrf(secret: bytes, session: Session, presented: str | None) -> bool:
    """True if ``presented`` is this session's token (compared in constant time)."""
    return presented is not None and hmac.compare_digest(csrf_token(secret, session), presented)


def login_token(secret: bytes, nonce: str) -> str:
    """The sign-in form's token, bound to the nonce of its own cookie."""
    return _sign(secret, "login", nonce.encode())


def check_login(secret: bytes, nonce: str, presented: str | None) -> bool:
    """True if ``presented`` is the sign-in token of ``nonce`` (constant time)."""
    return presented is not None and hmac.compare_digest(login_token(secret, nonce), presented)
