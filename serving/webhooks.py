"""Delivering the outcome feed to webhooks: each registered receiver is posted every
outcome, in order, one at a time, signed, until it answers 2xx.

A receiver that fails is tried again after 1, 2, 4 ... times ``webhook_backoff_seconds``
(at most ten minutes apart) and nothing after that outcome reaches it meanwhile, so it
never sees them out of order. Delivery is at least once: a receiver that answered but
whose answer was lost gets the outcome again, with the same ``X-Riskmodel-Event-Id``.

The body is the outcome as ``GET /v1/outcomes`` lists it. The signature header reads
``t=<unix seconds>,v1=<hex>``, where the hex is HMAC-SHA256 under the receiver's secret of
``"<t>." + body``; ``verify`` checks it (and that ``t`` is recent, against replays).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from riskmodel import units
from riskmodel.store import (
    any_webhooks,
    delivered,
    due_webhooks,
    failed_attempt,
    feed,
    reading,
    record_attempt,
    sequence,
    take,
)
from serving.runtime import Runtime
from serving.verdicts import render_outcome

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "deliver_due",
    "deliver_forever",
    "sign",
    "verify",
]

log = logging.getLogger("serving")

SIGNATURE_HEADER = "X-Riskmodel-Signature"
EVENT_HEADER = "X-Riskmodel-Event-Id"
POLL_SECONDS = 0.25
"""How often each worker looks for outcomes to deliver while receivers are registered."""
_TIMEOUT_SECONDS = 5.0
# How long a worker holds a receiver: renewed at every attempt, so it only has to outlast
# one post (``_TIMEOUT_SECONDS``); a worker that dies holding it delays the receiver by
# at most this.
_LEASE_US = 15 * 1_000_000
_MAX_BACKOFF_SECONDS = 600.0
_PER_TURN = 100  # outcomes delivered to one receiver before the others get a turn


def sign(secret: str, body: bytes, at: int) -> str:
    """The signature header's value for ``body`` sent at unix time ``at``."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance_seconds: float = 300) -> bool:
    """Whether ``header`` signs ``body`` under ``secret``, sent within the tolerance."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    stated = parts.get("t", "")
    if not (stated.isdigit() and len(stated) <= 12) or "v1" not in parts:
        return False
    at = int(parts["t"])
    if abs(time.time() - at) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, body, at), f"t={at},v1={parts['v1']}")


@dataclass(frozen=True)
class _Answer:
    status: int | None
    error: str | None
    duration_us: int

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _post(url: str, body: bytes, headers: Mapping[str, str]) -> _Answer:
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    status: int | None
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as answer:
            status, error = answer.status, None
    except urllib.error.HTTPError as exc:
        status, error = exc.code, f"answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        status, error = None, f"no answer: {getattr(exc, 'reason', exc)}"
    duration = int((time.perf_counter() - started) * 1_000_000)
    return _Answer(status, error, duration)


def _now() -> int:
    return units.micros(datetime.now(UTC))


def _backoff_us(attempts: int, base_seconds: float) -> int:
    seconds = min(base_seconds * 2 ** max(attempts - 1, 0), _MAX_BACKOFF_SECONDS)
    return int(seconds * 1_000_000)


def _deliver(engine: Engine, hook: Mapping[str, Any], base_seconds: float) -> None:
    """Up to ``_PER_TURN`` outcomes to one receiver that this worker holds."""
    position, hook_id = int(hook["delivered_through"]), int(hook["id"])
    attempts = int(hook["attempts"])
    for _ in range(_PER_TURN):
        with reading(engine) as conn:
            found = feed(conn, position, 1)
        if not found:
            break
        outcome = render_outcome(found[0])
        body = json.dumps(outcome, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: outcome["event_id"],
            SIGNATURE_HEADER: sign(str(hook["secret"]), body, int(time.time())),
            "User-Agent": "riskmodel-webhooks/1",
        }
        answer = _post(str(hook["url"]), body, headers)
        now = _now()
        with engine.begin() as conn:
            record_attempt(
                conn, hook_id, outcome["seq"], now, answer.status, answer.error, answer.duration_us
            )
            if not answer.ok:
                retry_at = now + _backoff_us(attempts + 1, base_seconds)
                failed_attempt(conn, hook_id, answer.error or "failed", retry_at)
                return
            position, attempts = outcome["seq"], 0
            delivered(conn, hook_id, position, now + _LEASE_US)
    with engine.begin() as conn:  # let go: due again at once
        delivered(conn, hook_id, position, _now())


def deliver_due(runtime: Runtime) -> bool:
    """One turn: every receiver due with outcomes waiting gets them (those this worker
    takes; another worker's turn delivers to the rest). Whether any receiver is in
    service, due or not."""
    engine = runtime.store.available()
    if engine is None:
        return False
    now = _now()
    with reading(engine) as conn:
        listening = any_webhooks(conn)
        hooks = due_webhooks(conn, now) if listening else []
    if not hooks:
        return listening
    with engine.begin() as conn:
        sequence(conn)
    for hook in hooks:
        with reading(engine) as conn:
            if not feed(conn, int(hook["delivered_through"]), 1):
                continue
        with engine.begin() as conn:
            if not take(conn, hook, now + _LEASE_US):
                continue
        _deliver(engine, hook, runtime.settings.webhook_backoff_seconds)
    return True


async def deliver_forever(runtime: Runtime) -> None:
    """The delivery loop of one worker, until cancelled: every ``POLL_SECONDS`` while
    receivers are registered; else it looks again after ``follow_seconds`` (a receiver
    registered on another worker), or at once when this worker registers one."""
    listening = False
    while True:
        wait = POLL_SECONDS if listening else runtime.settings.follow_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.webhooks_changed.wait(), wait)
        runtime.webhooks_changed.clear()
        try:
            listening = await asyncio.to_thread(deliver_due, runtime)
        except Exception:  # the store went away mid-turn: the next turn starts over
            log.exception("webhook delivery turn failed")
