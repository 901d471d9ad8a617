"""When to send a call again, how long to wait, and when to stop: pure, shared by the
sync and the async client.

A call is sent again only when sending the same bytes again is safe and may succeed: the
connection failed or timed out, or the service (or a proxy before it) said it is busy or
unavailable (429, 502, 503, 504). Every call of the API is safe to repeat: a decision is
idempotent by ``request_id`` (the same id gets the stored decision, counted once), and
history and labels are upserts. The wait doubles from ``backoff`` up to ``max_backoff``,
spread at random (callers that failed together do not all come back together), and is at
least what ``Retry-After`` says. Everything fits in the call's ``budget``: a wait that
would leave no time for the next attempt ends the call now rather than later.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

__all__ = [
    "RETRIED_STATUSES",
    "Budget",
    "Policy",
    "Retry",
    "extra_for",
    "pause",
    "retry_after",
    "transient",
]

RETRIED_STATUSES = frozenset({429, 502, 503, 504})

_LEAST_ATTEMPT_SECONDS = 0.02
"""An attempt given less than this cannot get an answer (one decision over loopback takes
about 5 ms, more on a busy machine): waiting for it would only spend the budget."""


@dataclass(frozen=True)
class Policy:
    """``timeout``: one attempt, seconds; ``budget``: the whole call, retries and waits
    included; ``backoff`` and ``max_backoff``: the first and the longest wait between
    attempts (before jitter)."""

    timeout: float = 2.0
    budget: float = 5.0
    backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.budget > 0):
            raise ValueError("timeout and budget must be above 0")
        if not 0 < self.backoff <= self.max_backoff:
            raise ValueError("backoff must be above 0 and at most max_backoff")


@dataclass(frozen=True)
class Retry:
    """Why an attempt failed in a way that sending it again may fix: ``why`` is
    ``timeout``, ``unreachable``, ``overloaded`` or ``unavailable``; ``after`` is what the
    service's ``Retry-After`` asked for, seconds."""

    why: str
    detail: str
    after: float | None = None

    @classmethod
    def of_exception(cls, exc: BaseException) -> Retry:
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return cls("timeout", f"no answer in time ({type(exc).__name__})")
        return cls("unreachable", f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))


def transient(status: int, headers: Mapping[str, str], body: bytes) -> Retry | None:
    """The ``Retry`` for an answer worth sending again, None for a final one."""
    if status not in RETRIED_STATUSES:
        return None
    after = retry_after(headers.get("retry-after"))
    if status == 429 or _error_code(body) == "overloaded":
        return Retry("overloaded", f"{status}: the service asks to send again later", after)
    if status in (502, 504):
        return Retry("unreachable", f"{status} from a proxy before the service", after)
    return Retry("unavailable", f"{status}: the service is unavailable", after)


def _error_code(body: bytes) -> str | None:
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """``Retry-After`` in seconds: a number of seconds or an HTTP date; None if absent or
    unreadable.

    >>> retry_after("2"), retry_after(None), retry_after("soon")
    (2.0, None, None)
    """
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or _utc_now)()).total_seconds()
    return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Budget:
    """The time left to one call, and the waits between its attempts."""

    policy: Policy
    budget: float
    clock: Callable[[], float] = time.monotonic
    rng: Callable[[], float] = random.random
    started: float = field(init=False)
    failures: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def remaining(self) -> float:
        return self.budget - (self.clock() - self.started)

    def attempt_timeout(self, extra: float = 0.0) -> float:
        """How long the next attempt may take: ``timeout`` (plus ``extra``, a long
        poll's own wait), never past the budget."""
        return min(self.policy.timeout + extra, self.remaining())

    def next_wait(self, retry: Retry) -> float | None:
        """Seconds to wait before the next attempt, or None: the budget cannot cover it."""
        self.failures += 1
        step = min(self.policy.max_backoff, self.policy.backoff * 2.0 ** (self.failures - 1))
        wait = step * (0.5 + self.rng())  # from half to one and a half times the step
        if retry.after is not None:
            wait = max(wait, retry.after * (1 + 0.25 * self.rng()))
        if wait + _LEAST_ATTEMPT_SECONDS > self.remaining():
            return None
        return wait


def extra_for(policy: Policy, timeout: float | None) -> float:
    """The seconds a call given its own ``timeout`` (a large history batch) gets on top
    of the policy's, for its attempt and its budget alike."""
    return 0.0 if timeout is None else max(0.0, timeout - policy.timeout)


def pause(policy: Policy, failures: int) -> float:
    """How long a feed that keeps failing waits before asking again."""
    return min(policy.max_backoff, policy.backoff * 2.0 ** min(failures, 30))
