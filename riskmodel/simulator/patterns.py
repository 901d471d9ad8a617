"""The names of what lies behind each refund request, as written to the ground truth.

Honest kinds come first, abusive patterns after them, so that ``code >= FIRST_ABUSE``
tells abuse from honesty. Patterns added later are appended to their half: the integer
codes live only inside one simulation, the names are what the ground truth records.
The abusive patterns after ``double_dip`` never occur in the default configuration;
randomised worlds (``riskmodel.simulator.worlds``) switch them on. The honest patterns
after ``honest_other`` are look-alikes: honest requests whose records resemble an abusive
pattern (a second request on an order, a code redeemed and then claimed invalid).

    >>> Pattern.REFUND_RING.is_abuse, Pattern.HONEST_BAD_BATCH.is_abuse
    (True, False)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ABUSE_PATTERNS",
    "DEFAULT_PATTERNS",
    "FIRST_ABUSE",
    "HONEST_PATTERNS",
    "LOOKALIKE_PATTERNS",
    "PATTERNS",
    "WORLD_PATTERNS",
    "Pattern",
]


class Pattern(StrEnum):
    HONEST_NOT_DELIVERED = "honest_not_delivered"
    HONEST_LATE_DELIVERY = "honest_late_delivery"
    HONEST_BAD_BATCH = "honest_bad_batch"
    HONEST_INVALID_CODE = "honest_invalid_code"
    HONEST_UNUSED = "honest_unused"
    HONEST_PARTIAL_USE = "honest_partial_use"
    HONEST_DUPLICATE_CHARGE = "honest_duplicate_charge"
    HONEST_NOT_AS_DESCRIBED = "honest_not_as_described"
    HONEST_OTHER = "honest_other"
    HONEST_DOUBLE_SOLD = "honest_double_sold"
    HONEST_NOT_CREDITED = "honest_not_credited"
    HONEST_RETRY = "honest_retry"
    HONEST_RESUBMISSION = "honest_resubmission"
    HONEST_PARTIAL_FOLLOWUP = "honest_partial_followup"
    SERIAL_REFUNDER = "serial_refunder"
    DUPLICATE_REFUND = "duplicate_refund"
    REDEEMED_THEN_INVALID = "redeemed_then_invalid"
    CREDITED_THEN_NOT_DELIVERED = "credited_then_not_delivered"
    PRORATED_OVERCLAIM = "prorated_overclaim"
    REFUND_RING = "refund_ring"
    FAKE_ORDERS = "fake_orders"
    DOUBLE_DIP = "double_dip"
    COLLUDING_SELLER = "colluding_seller"
    DEVICE_TAKEOVER = "device_takeover"
    PAYMENT_TAKEOVER = "payment_takeover"
    AMOUNT_BAND = "amount_band"
    ACCOUNT_BURST = "account_burst"
    LATE_EXPLOIT = "late_exploit"

    @property
    def code(self) -> int:
        """Position in ``PATTERNS``: the integer the simulator carries in its arrays."""
        return PATTERNS.index(self)

    @property
    def is_abuse(self) -> bool:
        return self.code >= FIRST_ABUSE


PATTERNS: tuple[Pattern, ...] = tuple(Pattern)
FIRST_ABUSE = PATTERNS.index(Pattern.SERIAL_REFUNDER)
HONEST_PATTERNS: tuple[Pattern, ...] = PATTERNS[:FIRST_ABUSE]
ABUSE_PATTERNS: tuple[Pattern, ...] = PATTERNS[FIRST_ABUSE:]
LOOKALIKE_PATTERNS: tuple[Pattern, ...] = (
    Pattern.HONEST_DOUBLE_SOLD,
    Pattern.HONEST_NOT_CREDITED,
    Pattern.HONEST_RETRY,
    Pattern.HONEST_RESUBMISSION,
    Pattern.HONEST_PARTIAL_FOLLOWUP,
)
"""Honest requests whose records look like abuse: a code redeemed (before the buyer paid,
or never credited to the buyer) then claimed invalid, and second requests on an order
that never pay twice (a pipeline retry, a re-submission after a refusal, a follow-up for
the unpaid part of a prorated refund)."""
WORLD_PATTERNS: tuple[Pattern, ...] = (
    Pattern.COLLUDING_SELLER,
    Pattern.DEVICE_TAKEOVER,
    Pattern.PAYMENT_TAKEOVER,
    Pattern.AMOUNT_BAND,
    Pattern.ACCOUNT_BURST,
    Pattern.LATE_EXPLOIT,
)
"""Patterns that only randomised worlds switch on (rate 0 in the default configuration)."""
DEFAULT_PATTERNS: tuple[Pattern, ...] = tuple(p for p in PATTERNS if p not in WORLD_PATTERNS)
"""Patterns of the default configuration."""
