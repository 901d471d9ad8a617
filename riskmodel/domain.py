"""Domain types: the things the service reasons about, validated on construction.

Each type mirrors one table of the dataset directory (see ``riskmodel.dataset``).
Validation errors name the field and the problem::

    >>> from riskmodel.domain import Order
    >>> Order(order_id="o1", user_id="u1", product_type="membership",
    ...       amount="30.00", paid_at="2026-01-01T00:00:00Z", service_days=30).service_days
    30

Timestamps are timezone-aware UTC; a timestamp without an offset is read as UTC.
Money is a ``Decimal`` with at most two decimal places (the store keeps integer cents).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

__all__ = [
    "Decision",
    "Label",
    "LabelSource",
    "Money",
    "Order",
    "ProductType",
    "RefundReason",
    "RefundRequest",
    "UsageDay",
    "User",
    "UtcDatetime",
]


class ProductType(StrEnum):
    CARD_CODE = "card_code"
    MEMBERSHIP = "membership"
    GAME_CURRENCY = "game_currency"
    SERVICE = "service"


class RefundReason(StrEnum):
    NOT_DELIVERED = "not_delivered"
    INVALID_CODE = "invalid_code"
    NOT_AS_DESCRIBED = "not_as_described"
    UNUSED = "unused"
    PARTIAL_USE = "partial_use"
    DUPLICATE_CHARGE = "duplicate_charge"
    OTHER = "other"


class LabelSource(StrEnum):
    REVIEW = "review"
    CHARGEBACK = "chargeback"
    ISSUER_REPORT = "issuer_report"
    DISPUTE = "dispute"


class Decision(StrEnum):
    """The answer to a refund request, ordered by severity (approve < review < block)."""

    APPROVE = "approve"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @classmethod
    def most_severe(cls, *decisions: Decision) -> Decision:
        """The harshest of ``decisions``: the one a stricter check wins with."""
        return max(decisions, key=lambda d: d.severity)


_SEVERITY = {Decision.APPROVE: 0, Decision.REVIEW: 1, Decision.BLOCK: 2}


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _two_decimals(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("has more than two decimal places")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Money = Annotated[Decimal, AfterValidator(_two_decimals)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class User(_Record):
    user_id: Identifier
    registered_at: UtcDatetime
    phone_verified: bool | None = None


class Order(_Record):
    """A paid order. A code redeemed or delivered before ``paid_at`` (sold already used)
    and a membership of unknown length are facts of the history, not errors."""

    order_id: Identifier
    user_id: Identifier
    product_type: ProductType
    amount: Annotated[Money, Field(ge=0)]
    paid_at: UtcDatetime
    currency: str | None = None
    seller_id: str | None = None
    product_id: str | None = None
    payment_method: str | None = None
    payment_account: str | None = None
    device_id: str | None = None
    ip: str | None = None
    delivered_at: UtcDatetime | None = None
    redeemed_at: UtcDatetime | None = None
    credited_at: UtcDatetime | None = None
    activation_failed_at: UtcDatetime | None = None
    service_days: Annotated[int, Field(gt=0)] | None = None


class UsageDay(_Record):
    """One day on which the platform saw a membership used."""

    order_id: Identifier
    used_at: UtcDatetime


class RefundRequest(_Record):
    request_id: Identifier
    order_id: Identifier
    user_id: Identifier
    requested_at: UtcDatetime
    amount: Annotated[Money, Field(gt=0)]
    reason: RefundReason
    days_used_claimed: Annotated[int, Field(ge=0)] | None = None
    device_id: str | None = None
    ip: str | None = None
    channel: str | None = None


class Label(_Record):
    """An outcome learned after the request: an analyst's verdict, a chargeback, a report."""

    request_id: Identifier
    is_abuse: bool
    labeled_at: UtcDatetime
    source: LabelSource | None = None

    @field_validator("is_abuse", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # "no" or 2 silently becoming True would flip a label; accept only plain booleans.
        if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
            return value.strip().lower() == "true"
        if isinstance(value, bool) or value in (0, 1):
            return value
        raise ValueError("must be true or false")
