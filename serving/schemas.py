"""The API's input and output bodies (the OpenAPI document is generated from them).

Inputs are the domain types of ``riskmodel.domain`` with the bounds the store needs: texts
fit their columns and hold no NUL, times lie between 1970 and 2200, amounts below a
billion. A value outside them is a 422 naming the field, never a database error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from riskmodel.domain import (
    Decision,
    Label,
    LabelSource,
    Order,
    ProductType,
    RefundReason,
    RefundRequest,
    UsageDay,
    User,
)
from riskmodel.units import EPOCH

__all__ = [
    "BatchIn",
    "BatchItem",
    "BatchOut",
    "DecisionIn",
    "DecisionOut",
    "ErrorOut",
    "EventsOut",
    "LabelRow",
    "LabelsIn",
    "OrderRow",
    "OrdersIn",
    "ReasonOut",
    "ReviewOut",
    "UsageIn",
    "UsageRow",
    "UserRow",
    "UsersIn",
    "VerdictIn",
    "storable",
]

_EARLIEST = EPOCH
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)
_MAX_AMOUNT = Decimal("1000000000")


def storable(value: str) -> str:
    """``value`` if a database can store it: no NUL, encodable as UTF-8."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _in_range(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError("is out of range") from None
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError("must lie between 1970 and 2200")
    return utc


def _two_decimals(value: Decimal) -> Decimal:
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("has more than two decimal places")
    return value


Id = Annotated[str, Field(min_length=1, max_length=128), AfterValidator(storable)]
OptionalId = Annotated[str, Field(max_length=128), AfterValidator(storable)] | None
Text = Annotated[str, Field(max_length=255), AfterValidator(storable)] | None
# The documented forms say what is accepted, bounds included, so that clients (and the
# schema-driven tests) know it without trying.
_WHEN_SCHEMA = {
    "type": "string",
    # A whole ISO 8601 date-time in the accepted years, as a pattern rather than a format
    # plus a year pattern: a schema-driven generator then writes valid times directly.
    "pattern": r"^(19[7-9][0-9]|20[0-9]{2}|21[0-9]{2})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])?$",
    "description": "ISO 8601 date-time between 1970 and 2200; UTC when no offset is given",
}


def _money_schema(minimum: str) -> dict[str, Any]:
    return {
        "anyOf": [
            {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$"},
            {"type": "integer", minimum: 0, "maximum": 1_000_000_000},
        ],
        "description": "currency units, at most two decimals; a string keeps them exact",
    }


When = Annotated[datetime, AfterValidator(_in_range), WithJsonSchema(_WHEN_SCHEMA)]
Amount = Annotated[
    Decimal,
    Field(gt=0, le=_MAX_AMOUNT, allow_inf_nan=False),
    AfterValidator(_two_decimals),
    WithJsonSchema(_money_schema("exclusiveMinimum")),
]
Price = Annotated[
    Decimal,
    Field(ge=0, le=_MAX_AMOUNT, allow_inf_nan=False),
    AfterValidator(_two_decimals),
    WithJsonSchema(_money_schema("minimum")),
]


class DecisionIn(RefundRequest):
    """One refund request: the refund_requests columns of the dataset contract."""

    request_id: Id
    order_id: Id
    user_id: Id
    requested_at: When
    amount: Amount
    reason: RefundReason
    days_used_claimed: Annotated[int, Field(ge=0, le=100_000)] | None = None
    device_id: OptionalId = None
    ip: OptionalId = None
    channel: Text = None


class ReasonOut(BaseModel):
    code: str
    kind: str = Field(description="rule | model | list | policy")
    message: str
    feature: str | None = None
    value: float | str | None = None
    contribution: float | None = None


class ReviewOut(BaseModel):
    queue: str
    due_at: datetime


class DecisionOut(BaseModel):
    request_id: str
    decision: Decision
    score: float | None = Field(description="calibrated probability of abuse; null: no score")
    approved_amount: str = Field(description="what may be paid, currency units, two decimals")
    reasons: list[ReasonOut]
    review: ReviewOut | None
    model_version: str | None
    policy_version: str | None
    policy_hash: str | None
    feature_version: str | None
    decided_at: datetime
    stored: bool = Field(
        description="false: a provisional review that was not recorded; ask again with the "
        "same request_id"
    )
    replayed: bool = Field(description="true: the decision stored for this request_id")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[DecisionIn] = Field(min_length=1)


class ErrorOut(BaseModel):
    code: str
    message: str
    fields: list[dict[str, str]] = Field(default_factory=list)


class BatchItem(BaseModel):
    request_id: str
    status: int = Field(description="the status the single call would have answered")
    decision: DecisionOut | None = None
    error: ErrorOut | None = None


class BatchOut(BaseModel):
    results: list[BatchItem]


class UserRow(User):
    user_id: Id
    registered_at: When


class OrderRow(Order):
    order_id: Id
    user_id: Id
    product_type: ProductType
    amount: Price
    paid_at: When
    currency: Text = None
    seller_id: OptionalId = None
    product_id: OptionalId = None
    payment_method: Text = None
    payment_account: OptionalId = None
    device_id: OptionalId = None
    ip: OptionalId = None
    delivered_at: When | None = None
    redeemed_at: When | None = None
    credited_at: When | None = None
    activation_failed_at: When | None = None
    service_days: Annotated[int, Field(gt=0, le=100_000)] | None = None


class UsageRow(UsageDay):
    order_id: Id
    used_at: When


class LabelRow(Label):
    request_id: Id
    labeled_at: When
    source: LabelSource | None = None


class _Rows(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UsersIn(_Rows):
    rows: list[UserRow] = Field(min_length=1)


class OrdersIn(_Rows):
    rows: list[OrderRow] = Field(min_length=1)


class UsageIn(_Rows):
    rows: list[UsageRow] = Field(min_length=1)


class LabelsIn(_Rows):
    rows: list[LabelRow] = Field(min_length=1)


class EventsOut(BaseModel):
    table: str
    received: int
    written: int = Field(description="rows new or changed; equal rows are left alone")


class VerdictIn(BaseModel):
    """A reviewer's verdict on a request in the review queue; it becomes a label."""

    model_config = ConfigDict(extra="forbid")
    is_abuse: bool
    note: Text = None
