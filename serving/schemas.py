"""The API's input and output bodies (the OpenAPI document is generated from them).

Inputs are the domain types of ``riskmodel.domain`` with the bounds the store needs and
JSON's own types, taken strictly: a number is not a text nor a boolean, a time is ISO 8601
text, an amount is a decimal text or a whole number, a boolean is ``true`` or ``false``.
Texts are taken as sent, never trimmed: they fit their columns, hold no NUL, and neither
begin nor end with white space. Every documented pattern is the check itself, so what the
document admits is exactly what validation admits. A value outside them is a 422 naming
the field, never a database error.

    >>> DecisionIn.model_validate({"request_id": "r1", "order_id": "o1", "user_id": "u1",
    ...     "requested_at": "2026-05-02T18:00:00+08:00", "amount": "30.00",
    ...     "reason": "unused"}).requested_at.isoformat()
    '2026-05-02T10:00:00+00:00'
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    WithJsonSchema,
    field_validator,
)

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

__all__ = [
    "ID_PATTERN",
    "MAX_BATCH_REQUESTS",
    "MAX_BATCH_ROWS",
    "NO_NUL",
    "AppealIn",
    "AppealOut",
    "BatchIn",
    "BatchItem",
    "BatchOut",
    "DecisionIn",
    "DecisionOut",
    "DeliveriesOut",
    "DeliveryOut",
    "ErrorBody",
    "ErrorOut",
    "EventsOut",
    "FieldProblem",
    "LabelRow",
    "LabelsIn",
    "OrderRow",
    "OrdersIn",
    "OutcomeOut",
    "OutcomesOut",
    "Reason",
    "ReasonOut",
    "ReplayIn",
    "ReviewOut",
    "StoredDecisionOut",
    "UsageIn",
    "UsageRow",
    "UserRow",
    "UsersIn",
    "VerdictIn",
    "WebhookIn",
    "WebhookOut",
    "WebhooksOut",
    "storable",
    "trimmed",
]

MAX_BATCH_REQUESTS = 1_000
"""The most requests a ``decisions:batch`` body may hold, whatever the settings say.

Checked before any item is validated, so that a huge list costs its length and not one
error per item; the deployment's own limit (``Settings.max_batch``) is at most this.
"""
MAX_BATCH_ROWS = 10 * MAX_BATCH_REQUESTS
"""The most rows a history batch may hold (the deployment's limit is ten times its
``max_batch``, at most this)."""

NO_NUL = r"^[^\x00]*$"
"""The documented form of a text the store can keep: anything but a NUL character."""

_MAX_AMOUNT = 1_000_000_000


def storable(value: str) -> str:
    """``value`` if a database can store it: no NUL, encodable as UTF-8."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def trimmed(value: str) -> str:
    """``value`` if it neither begins nor ends with white space."""
    # The dataset contract trims texts; one sent with white space at an end would be
    # stored as another, or as nothing, so it is refused rather than altered.
    if value and (value[0].isspace() or value[-1].isspace()):
        raise ValueError("must not begin or end with white space")
    return value


def _pattern_of(text: str) -> str:
    """``text`` (a regular expression) as a JSON Schema pattern, anchored at both ends."""
    return f"^({text})$"


# The characters Python's str.isspace() (and so the dataset contract's trimming) counts as
# white space, spelled so that JSON Schema (ECMA 262) and Python read them alike.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_END = rf"[^\x00{_SPACE}]"
ID_PATTERN = _pattern_of(rf"{_END}([^\x00]*{_END})?")
"""The documented form of an identifier: no NUL, no white space at either end."""
_TEXT_PATTERN = _pattern_of(rf"({_END}([^\x00]*{_END})?)?")

Id = Annotated[
    str,
    Field(min_length=1, max_length=128, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(storable),
    AfterValidator(trimmed),
]
OptionalId = (
    Annotated[
        str,
        Field(max_length=128, json_schema_extra={"pattern": _TEXT_PATTERN}),
        AfterValidator(storable),
        AfterValidator(trimmed),
    ]
    | None
)
Reason = Annotated[
    str,
    Field(min_length=1, max_length=500, json_schema_extra={"pattern": ID_PATTERN}),
    AfterValidator(storable),
    AfterValidator(trimmed),
]
"""Why a person made a change (the audit trail): required text, as an identifier's form."""
Text = (
    Annotated[
        str,
        Field(max_length=255, json_schema_extra={"pattern": _TEXT_PATTERN}),
        AfterValidator(storable),
        AfterValidator(trimmed),
    ]
    | None
)

# An ISO 8601 date-time as a pattern that admits real calendar dates only (leap years
# included), so that a schema-driven client or generator writes valid times directly and
# validation refuses exactly what the pattern refuses.
_MONTH_DAY = (
    r"(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"  # every month has 28 days
    r"|(0[13-9]|1[0-2])-(29|30)"  # all but February have 30
    r"|(0[13578]|1[02])-31"
)
# Every fourth year is a leap year, but 2100 is not.
_LEAP_YEAR = (
    r"19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26])|21(0[48]|[2468][048]|[13579][26])"
)
_INNER_YEAR = r"19(7[1-9]|[89][0-9])|20[0-9]{2}|21([0-8][0-9]|9[0-8])"
# Up to nanoseconds, as Go's RFC 3339 and pandas write them; the store keeps microseconds,
# so the digits beyond the sixth are dropped.
_CLOCK = r"[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,9})?)?"
_OFFSET = r"([01][0-9]|2[0-3]):?[0-5][0-9]"
# In 1970 an offset east of UTC could put the time before the epoch, and in 2199 one west
# of it past 2200: those two years take only offsets that keep every time in range.
_WHEN = re.compile(
    rf"(({_INNER_YEAR})-({_MONTH_DAY})|({_LEAP_YEAR})-02-29){_CLOCK}(Z|[+-]{_OFFSET})?"
    rf"|1970-({_MONTH_DAY}){_CLOCK}(Z|-{_OFFSET}|\+00:?00)?"
    rf"|2199-({_MONTH_DAY}){_CLOCK}(Z|\+{_OFFSET}|-00:?00)?"
)
_WHEN_SCHEMA = {
    "type": "string",
    "pattern": _pattern_of(_WHEN.pattern),
    "description": "ISO 8601 date-time from 1970 to 2199, UTC when no offset is given (in "
    "1970 an offset is zero or west of UTC, in 2199 zero or east of it)",
}


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str) or _WHEN.fullmatch(value) is None:
        raise ValueError(
            "must be an ISO 8601 date-time text from 1970 to 2199, such as 2026-05-02T10:00:00Z"
        )
    return value


def _utc(value: datetime) -> datetime:
    # The pattern keeps every time between 1970 and 2200 in UTC, so this cannot overflow.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


When = Annotated[
    datetime, BeforeValidator(_iso_text), AfterValidator(_utc), WithJsonSchema(_WHEN_SCHEMA)
]


def _whole_number(value: Any) -> int:
    # JSON Schema counts 2.0 (or 2e0) as the integer 2, and so do clients generated from
    # it: a whole number is taken however it is spelled, a fraction or a text never.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError("must be a whole number")


# The bounds come before the check, so that the document gives them as integer bounds.
Days = Annotated[int, Field(ge=0, le=100_000), BeforeValidator(_whole_number)]
PositiveDays = Annotated[int, Field(gt=0, le=100_000), BeforeValidator(_whole_number)]

# Money as text: digits, at most two decimals, no sign, exponent or leading zero, within
# the bounds; the text pattern is the whole check. As a JSON number: at most two decimals
# as the number is written (96.45, 100, 1e2), within the bounds.
_PRICE_TEXT = re.compile(r"(0|[1-9][0-9]{0,8})(\.[0-9]{1,2})?|1000000000(\.0{1,2})?")
_AMOUNT_TEXT = re.compile(
    r"[1-9][0-9]{0,8}(\.[0-9]{1,2})?|0\.([1-9][0-9]?|0[1-9])|1000000000(\.0{1,2})?"
)


def _cents_number(value: float) -> Decimal:
    """A JSON number as the decimal it was written as (``repr`` gives back the shortest
    text of the float the parser read), refused beyond two decimals."""
    written = Decimal(repr(value))
    if not written.is_finite() or written != written.quantize(Decimal("0.01")):
        raise ValueError("must have at most two decimals")
    return written


def _money(text: re.Pattern[str], *, above_zero: bool) -> tuple[BeforeValidator, WithJsonSchema]:
    """The check and the documented form of an amount whose text form is ``text``."""
    lowest = "above 0" if above_zero else "0 or more"

    def check(value: Any) -> Any:
        if isinstance(value, str):
            if text.fullmatch(value) is None:
                raise ValueError(
                    f"must be currency units {lowest} and at most 1000000000, with at most "
                    'two decimals, written like "30.00"'
                )
            return value
        if isinstance(value, float):
            return _cents_number(value)
        try:
            return _whole_number(value)
        except ValueError:
            raise ValueError('must be a text like "30.00" or a number like 30.5') from None

    schema = {
        "anyOf": [
            {"type": "string", "pattern": _pattern_of(text.pattern)},
            {
                "type": "number",
                "multipleOf": 0.01,
                "exclusiveMinimum" if above_zero else "minimum": 0,
                "maximum": _MAX_AMOUNT,
            },
        ],
        "description": f"currency units {lowest}, at most two decimals: a text keeps them "
        "exact; a number is read as it is written",
    }
    return BeforeValidator(check), WithJsonSchema(schema)


_AMOUNT_CHECK, _AMOUNT_SCHEMA = _money(_AMOUNT_TEXT, above_zero=True)
_PRICE_CHECK, _PRICE_SCHEMA = _money(_PRICE_TEXT, above_zero=False)
Amount = Annotated[Decimal, Field(gt=0, le=_MAX_AMOUNT), _AMOUNT_CHECK, _AMOUNT_SCHEMA]
Price = Annotated[Decimal, Field(ge=0, le=_MAX_AMOUNT), _PRICE_CHECK, _PRICE_SCHEMA]

# The domain types trim texts (they read CSV cells); the API takes a text as it is sent.
_AS_SENT = ConfigDict(str_strip_whitespace=False)


class DecisionIn(RefundRequest):
    """One refund request: the refund_requests columns of the dataset contract."""

    model_config = _AS_SENT
    request_id: Id
    order_id: Id
    user_id: Id
    requested_at: When
    amount: Amount
    reason: RefundReason
    days_used_claimed: Days | None = None
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
    requests: list[DecisionIn] = Field(
        min_length=1,
        max_length=MAX_BATCH_REQUESTS,
        description="at most the deployment's RISKMODEL_MAX_BATCH (413 above it)",
    )


class FieldProblem(BaseModel):
    field: str = Field(description="where: body.amount, query.limit, orders.row 1.user_id, ...")
    message: str


class ErrorOut(BaseModel):
    code: str
    message: str
    fields: list[FieldProblem] = Field(
        default_factory=list, description="the first 50 problems; the message counts them all"
    )


class ErrorBody(BaseModel):
    """Every error answer: ``{"error": {"code", "message", "fields"}}``."""

    error: ErrorOut


class BatchItem(BaseModel):
    request_id: str
    status: int = Field(description="the status the single call would have answered")
    decision: DecisionOut | None = None
    error: ErrorOut | None = None


class BatchOut(BaseModel):
    results: list[BatchItem]


class UserRow(User):
    model_config = _AS_SENT
    user_id: Id
    registered_at: When
    phone_verified: StrictBool | None = None


class OrderRow(Order):
    model_config = _AS_SENT
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
    service_days: PositiveDays | None = None


class UsageRow(UsageDay):
    model_config = _AS_SENT
    order_id: Id
    used_at: When


class LabelRow(Label):
    model_config = _AS_SENT
    request_id: Id
    is_abuse: StrictBool
    labeled_at: When
    source: LabelSource | None = None

    @field_validator("is_abuse", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        # Replaces the domain's reading of CSV text ("true", 1): JSON has booleans.
        return value


class _Rows(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Checked before any row is validated (see MAX_BATCH_REQUESTS).
_ROWS = Field(
    min_length=1,
    max_length=MAX_BATCH_ROWS,
    description="at most ten times the deployment's RISKMODEL_MAX_BATCH (413 above it)",
)


class UsersIn(_Rows):
    rows: Annotated[list[UserRow], _ROWS]


class OrdersIn(_Rows):
    rows: Annotated[list[OrderRow], _ROWS]


class UsageIn(_Rows):
    rows: Annotated[list[UsageRow], _ROWS]


class LabelsIn(_Rows):
    rows: Annotated[list[LabelRow], _ROWS]


class EventsOut(BaseModel):
    table: str
    received: int
    written: int = Field(description="rows new or changed; equal rows are left alone")


class VerdictIn(BaseModel):
    """A reviewer's verdict on a request in the review queue, or on an open appeal: the
    request's final outcome (a new version of its decision) and a label for training."""

    model_config = ConfigDict(extra="forbid")
    decision: Literal["approve", "refuse"]
    approved_amount: Price | None = Field(
        default=None,
        description="approve: what may be paid (at most the amount asked); null: in full",
    )
    is_abuse: StrictBool
    note: Text = None


class AppealIn(BaseModel):
    """A buyer's appeal of a block or a refusal: it goes to the disputes queue."""

    model_config = ConfigDict(extra="forbid")
    request_id: Id
    statement: Annotated[
        str,
        Field(min_length=1, max_length=2000, json_schema_extra={"pattern": ID_PATTERN}),
        AfterValidator(storable),
        AfterValidator(trimmed),
    ]
    channel: Literal["buyer", "support"] = Field(
        default="buyer", description="buyer: sent by the buyer; support: taken by phone"
    )


class OutcomeOut(BaseModel):
    """One final outcome of a refund request: a version of its decision that settles it."""

    seq: int | None = Field(description="its place in the feed; null for a moment after it")
    event_id: str = Field(description="<request_id>:<version>, unique: deduplicate on it")
    request_id: str
    version: int = Field(description="1: the automatic decision; then verdicts, appeals")
    kind: Literal["automatic", "verdict", "appeal"]
    decision: Literal["approve", "block", "refuse"]
    approved_amount: str = Field(description="what may be paid, currency units, two decimals")
    is_abuse: bool | None
    note: str | None
    decided_by: str | None
    decided_at: datetime
    due_at: datetime | None
    late: bool = Field(description="decided after the review's or the appeal's deadline")


class OutcomesOut(BaseModel):
    outcomes: list[OutcomeOut]
    last: int = Field(description="pass as ``after`` to read on; equal to after when empty")


class StoredDecisionOut(DecisionOut):
    versions: list[OutcomeOut] = Field(
        description="the final outcomes, oldest first: empty while under review"
    )


class AppealOut(BaseModel):
    request_id: str
    filed_at: datetime
    filed_by: str
    channel: str
    statement: str
    queue: str
    due_at: datetime
    against_version: int
    first_reviewer: str | None
    decided_version: int | None


Seq = Annotated[int, Field(ge=0, le=10**15), BeforeValidator(_whole_number)]
"""A sequence number of the outcome feed (far below where JSON numbers lose precision)."""
_WEB_ADDRESS = r"^https?://[^\s\x00]+$"


def _web_address(value: str) -> str:
    if re.fullmatch(_WEB_ADDRESS[1:-1], value) is None:
        raise ValueError("must be an http:// or https:// address without spaces")
    return value


class WebhookIn(BaseModel):
    """A receiver of the outcome feed."""

    model_config = ConfigDict(extra="forbid")
    url: Annotated[
        str,
        Field(max_length=2000, json_schema_extra={"pattern": _WEB_ADDRESS}),
        AfterValidator(_web_address),
    ]
    after: Seq | None = Field(
        default=None,
        description="deliver the outcomes after this sequence number; null: from now on",
    )


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    after: Seq = Field(description="deliver again every outcome after this")


class WebhookOut(BaseModel):
    id: int
    url: str
    secret: str | None = Field(description="shown once, when the webhook is registered")
    created_at: datetime
    created_by: str
    delivered_through: int = Field(description="the last sequence number answered 2xx")
    attempts: int = Field(description="failed attempts at the next outcome")
    next_attempt_at: datetime
    last_error: str | None
    disabled_at: datetime | None


class WebhooksOut(BaseModel):
    webhooks: list[WebhookOut]


class DeliveryOut(BaseModel):
    seq: int
    attempted_at: datetime
    status: int | None = Field(description="the HTTP status answered; null: no answer")
    error: str | None
    duration_ms: float


class DeliveriesOut(BaseModel):
    deliveries: list[DeliveryOut]
