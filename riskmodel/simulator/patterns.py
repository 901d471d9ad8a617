"""The names of what lies behind each refund request, as written to the ground truth.

Honest kinds come first, abusive patterns after them, so that ``code >= FIRST_ABUSE``
tells abuse from honesty. Patterns added later are appended to their half: the integer
codes live only inside one simulation, the names are what the ground truth records.
The patterns after ``double_dip`` and ``honest_sold_used`` never occur in the default
configuration; randomised worlds (``riskmodel.simulator.worlds``) switch them on.

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
    HONEST_SOLD_USED = "honest_sold_used"
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
WORLD_PATTERNS: tuple[Pattern, ...] = (
    Pattern.HONEST_SOLD_USED,
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
