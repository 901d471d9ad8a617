"""A receiver of the service's webhooks: check a delivery's signature, read its outcome.

The service posts each final outcome to a registered receiver, one at a time, in order,
again until it answers 2xx (so at least once: keep ``outcome.event_id`` to drop a
repeat). The body is the outcome as ``GET /v1/outcomes`` lists it; the header
``X-Riskmodel-Signature`` reads ``t=<unix seconds>,v1=<hex>``, the hex being
HMAC-SHA256, under the secret the service gave when the receiver was registered, of
``"<t>."`` followed by the body's bytes, exactly as they came.

    >>> body = b'{"seq":1}'
    >>> header = sign_webhook("whsec", body, at=1_800_000_000)
    >>> verify_webhook("whsec", body, header, now=1_800_000_060)
    True
    >>> verify_webhook("whsec", body + b" ", header, now=1_800_000_060)   # forged
    False
    >>> verify_webhook("whsec", body, header, now=1_800_000_000 + 3600)   # too old
    False
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from riskmodel_client.types import Outcome, UnreadableAnswer

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "parse_outcome",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "X-Riskmodel-Signature"
"""The header that signs a delivery: ``t=<unix seconds>,v1=<hex HMAC-SHA256>``."""
EVENT_HEADER = "X-Riskmodel-Event-Id"
"""The header naming the delivered outcome's ``event_id`` (the same on a repeat)."""

TOLERANCE_SECONDS = 300.0
"""How far a delivery's ``t`` may be from the receiver's clock: older is a replay."""


def _mac(secret: str | bytes, body: bytes, at: int) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{at}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: str | bytes, body: bytes, at: int | None = None) -> str:
    """The signature header the service sends with ``body`` at unix time ``at`` (now by
    default): for a receiver's own tests."""
    moment = int(time.time()) if at is None else at
    return f"t={moment},v1={_mac(secret, body, moment)}"


def verify_webhook(
    secret: str | bytes,
    body: bytes,
    signature_header: str,
    *,
    tolerance_seconds: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``signature_header`` signs ``body`` (the raw bytes received, before any
    parsing) under ``secret``, sent within ``tolerance_seconds`` of ``now`` (the
    receiver's clock by default). False for anything else, a malformed header included;
    it never raises on what a sender put in the header."""
    stamps: list[str] = []
    macs: list[str] = []
    for part in signature_header.split(","):
        name, equals, value = part.strip().partition("=")
        if not equals:
            continue
        if name == "t":
            stamps.append(value)
        elif name == "v1":
            macs.append(value.lower())
    if len(stamps) != 1 or not macs or not _unix_time(stamps[0]):
        return False
    at = int(stamps[0])
    moment = time.time() if now is None else now
    if abs(moment - at) > tolerance_seconds:
        return False
    expected = _mac(secret, body, at)
    # Every v1 compared, in constant time each: a sender rotating secrets may send two.
    found = False
    for mac in macs:
        found |= mac.isascii() and hmac.compare_digest(mac, expected)
    return found


def _unix_time(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


def parse_outcome(body: bytes | str) -> Outcome:
    """A delivery's body as an ``Outcome``; ``UnreadableAnswer`` if it is not one. Check
    the signature first, on the same bytes."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableAnswer(f"not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise UnreadableAnswer("not an outcome: the body is not a JSON object")
    return Outcome.from_json(document)
