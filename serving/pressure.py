"""Back-pressure: a worker holding as many decision calls as it should answers the next at
once (503, or 429 when the excess is one caller's), with ``Retry-After``, instead of
queueing it behind the others.

A worker is one event loop: every call it admits waits for the same CPU and the same
group commit (``serving.writer``), so admitting more than it can finish only makes every
answer later, without bound, and a caller waiting on a deadline gives up on answers that
were coming. Counting the calls in flight bounds the wait of the admitted ones (about the
limit times one decision's cost) and tells the rest, in a millisecond, to come back, which
a retrying caller does with the same ``request_id`` (decisions are idempotent).

Only the decision paths (``/v1/decisions...``) are counted: they are the calls the refund
pipeline waits on. Long polls (the outcomes feed) hold a call open by design and would
fill the count. The answer is sent before the body is read: a flood costs headers only.

One caller may hold at most three quarters of the calls (``caller_share``), so that
another caller (support looking up a decision, a second pipeline) still finds room: a
caller past its share gets 429 ``too_many_requests``; a call that finds the whole worker
full gets 503 ``overloaded``. Each refusal is counted in ``riskmodel_refused_total``
(labels ``status`` and ``reason``) on ``/metrics``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.errors import CallerOverloaded, Overloaded, ServingError, send_error
from serving.runtime import Runtime

__all__ = ["GUARDED_PATHS", "RETRY_AFTER_SECONDS", "InFlightLimit", "caller_share", "limit"]

GUARDED_PATHS = "/v1/decisions"
"""The prefix of the counted paths: ``/v1/decisions``, ``/v1/decisions:batch`` and
``/v1/decisions/{request_id}``."""

RETRY_AFTER_SECONDS = 1
"""What a refused call is told to wait: a decision takes milliseconds, so a second later
the calls that filled the worker are answered."""


def caller_share(max_in_flight: int) -> int:
    """The most calls one caller may hold: three quarters of the worker's, at least one.

    >>> caller_share(64), caller_share(4), caller_share(1)
    (48, 3, 1)
    """
    return max(1, max_in_flight - max_in_flight // 4)


class InFlightLimit:
    """ASGI middleware: see the module docstring. Inside the key gate (it needs the
    caller), outside the body limit (it answers before the body is read)."""

    def __init__(self, app: ASGIApp, max_in_flight: int) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.share = caller_share(max_in_flight)
        # One event loop per worker: these are read and changed without awaiting between,
        # so they need no lock.
        self.in_flight = 0
        self.by_caller: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(GUARDED_PATHS):
            await self.app(scope, receive, send)
            return
        caller = _caller_name(scope)
        refusal = self._refusal(caller)
        if refusal is not None:
            _count(scope, refusal)
            retry = str(RETRY_AFTER_SECONDS).encode()
            await send_error(send, refusal, [(b"retry-after", retry)])
            return
        self.in_flight += 1
        self.by_caller[caller] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.by_caller[caller] -= 1
            if not self.by_caller[caller]:
                del self.by_caller[caller]

    def _refusal(self, caller: str) -> ServingError | None:
        if self.by_caller[caller] >= self.share:
            return CallerOverloaded(
                f"this caller has {self.by_caller[caller]} decision calls in flight on this "
                f"worker, its share of {self.max_in_flight}; retry after "
                f"{RETRY_AFTER_SECONDS} s"
            )
        if self.in_flight >= self.max_in_flight:
            return Overloaded(
                f"{self.in_flight} decision calls in flight on this worker, its limit; "
                f"retry after {RETRY_AFTER_SECONDS} s"
            )
        return None


def _count(scope: Scope, refusal: ServingError) -> None:
    """One more refusal on ``/metrics``: the application's runtime holds the counter
    (made when the application starts, after this middleware)."""
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    if isinstance(runtime, Runtime):
        runtime.metrics.refused.labels(str(refusal.status), refusal.code).inc()


def _caller_name(scope: Scope) -> str:
    # The key gate put the caller there; a call without one never reaches here on /v1/.
    caller = scope.get("state", {}).get("caller")
    return "" if caller is None else str(caller.name)


_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds to wait before sending the same call again",
        "schema": {"type": "integer"},
    }
}
_DOCUMENTED = {
    "429": "this caller holds its share (three quarters) of the worker's decision calls in "
    "flight; send the same call again after Retry-After (too_many_requests)",
    "503": "the worker holds RISKMODEL_MAX_IN_FLIGHT decision calls already; send the same "
    "call again after Retry-After (overloaded)",
}


def limit(app: FastAPI, max_in_flight: int) -> None:
    """Add the limit to ``app`` and its two answers to the guarded operations of its
    OpenAPI document, which the routes cannot know of: they come from here."""
    app.add_middleware(InFlightLimit, max_in_flight=max_in_flight)
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()  # FastAPI's, built once and kept
        for path, operations in document.get("paths", {}).items():
            if path.startswith(GUARDED_PATHS):
                for operation in operations.values():
                    _document(operation["responses"])
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _document(responses: dict[str, Any]) -> None:
    for status, meaning in _DOCUMENTED.items():
        found = responses.get(status)
        if found is None:
            responses[status] = {
                "description": meaning,
                "headers": _RETRY_AFTER_HEADER,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                },
            }
        elif meaning not in found["description"]:  # a 503 of its own: the store's
            found["description"] = f"{found['description']}; or {meaning}"
            found.setdefault("headers", _RETRY_AFTER_HEADER)
