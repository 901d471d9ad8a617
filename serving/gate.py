"""Authentication at the door: a call to the API without a known key answers 401 before a
byte of its body is read, parsed or counted.

Every route under ``/v1/`` needs a key; the operations routes (``/healthz``, ``/readyz``,
``/metrics``) and the documentation are open. The caller found here is handed to the
routes in the request's state, where their dependency (``serving.deps.requires``) checks
its roles: a known key without the role is a 403, which needs to know the route.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from serving.auth import presented_key
from serving.errors import Unauthorized, send_error

__all__ = ["GUARDED_PREFIX", "KeyGate"]

GUARDED_PREFIX = "/v1/"


class KeyGate:
    """ASGI middleware: see the module docstring. Outermost, so that it answers before
    the body limit reads the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        key = presented_key(_text(headers.get(b"authorization")), _text(headers.get(b"x-api-key")))
        if key is None:
            await _refuse(send, "an API key is required (Authorization: Bearer <key>)")
            return
        caller = scope["app"].state.runtime.keys.authenticate(key)
        if caller is None:
            await _refuse(send, "unknown API key")
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def _text(value: bytes | None) -> str | None:
    # Header values are Latin-1 in HTTP; a key is ASCII, so anything else fails to match.
    return None if value is None else value.decode("latin-1")


async def _refuse(send: Send, message: str) -> None:
    await send_error(send, Unauthorized(message), [(b"www-authenticate", b"Bearer")])
