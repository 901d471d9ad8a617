"""The policy file's schema: what a risk manager may write, and nothing else.

Pydantic models with unknown keys refused. Conditions are parsed here, against the fields
the loader was given (``context={"fields": ...}``), so a misspelt feature fails the load.
Checks that span sections (names unique, a queue a rule names exists, lists that contradict
each other) live in ``riskmodel.policy.loader``, which reports every problem with its place
in the file.

Units: scores are calibrated probabilities in [0, 1]; amounts are currency units with at
most two decimals (as in the dataset files); deadlines are hours.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from riskmodel.domain import Decision, ProductType, RefundReason
from riskmodel.policy.conditions import Condition, ConditionError, Kind, parse_condition

__all__ = [
    "Explanations",
    "GreenChannel",
    "ListFile",
    "Lists",
    "ListsByKind",
    "PolicySpec",
    "Prorated",
    "Public",
    "Queue",
    "Review",
    "Rule",
    "Segment",
    "Thresholds",
]


def _condition(value: Any, info: ValidationInfo) -> Condition:
    if not isinstance(value, str):
        raise PydanticCustomError(
            "condition", "a condition is a text, not {kind}", {"kind": type(value).__name__}
        )
    fields: Mapping[str, Kind] | None = (info.context or {}).get("fields")
    if fields is None:
        raise PydanticCustomError(
            "condition", "no known fields were given to check the condition against"
        )
    try:
        return parse_condition(value, fields)
    except ConditionError as exc:
        raise PydanticCustomError(
            "condition", "{problem}", {"problem": exc.problem, "offset": exc.offset}
        ) from None


def _two_decimals(value: Decimal) -> Decimal:
    if not value.is_finite() or value != value.quantize(Decimal("0.01")):
        raise ValueError("an amount has at most two decimal places")
    return value


CompiledCondition = Annotated[Condition, PlainValidator(_condition)]
Amount = Annotated[Decimal, Field(ge=0), AfterValidator(_two_decimals)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
RuleCode = Annotated[str, Field(pattern=r"^RULE_[A-Z0-9_]+$", max_length=64)]
Entry = Annotated[str, Field(min_length=1, max_length=128)]


def _plain(value: str) -> str:
    # Published texts are shown to buyers. The page escapes them anyway; refusing markup
    # here means a risk manager learns at load time that it would be shown as raw text.
    if not value.strip():
        raise ValueError("a published text is not blank")
    if "<" in value or ">" in value:
        raise ValueError("a published text is plain text: no '<' or '>' (no HTML)")
    if any(unicodedata.category(char) == "Cc" and char != "\n" for char in value):
        raise ValueError("a published text has no control characters (other than new lines)")
    return value


def _one_line(value: str) -> str:
    if "\n" in value:
        raise ValueError("a title is one line")
    return value


PublicText = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(_plain)]
PublicTitle = Annotated[
    str, Field(min_length=1, max_length=120), AfterValidator(_plain), AfterValidator(_one_line)
]
PublicIntroduction = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_plain)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Segment(_Section):
    """Threshold override for the requests that match every criterion given.

    ``amount_from`` is inclusive and ``amount_below`` exclusive, on the amount asked back.
    ``account_age_below_days`` matches accounts younger than that many days *and* unknown
    users (no registration seen): no history is treated as new, never as established.
    """

    name: Name
    product_types: list[ProductType] | None = None
    amount_from: Amount | None = None
    amount_below: Amount | None = None
    account_age_below_days: Annotated[float, Field(gt=0)] | None = None
    review: Probability
    block: Probability

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.review >= self.block:
            raise ValueError(f"review ({self.review!r}) must be below block ({self.block!r})")
        if (
            self.product_types is None
            and self.amount_from is None
            and self.amount_below is None
            and self.account_age_below_days is None
        ):
            raise ValueError(
                "a segment needs at least one of product_types, amount_from, amount_below, "
                "account_age_below_days"
            )
        if (
            self.amount_from is not None
            and self.amount_below is not None
            and self.amount_from >= self.amount_below
        ):
            raise ValueError("amount_from must be below amount_below")
        return self


class Thresholds(_Section):
    """Score >= block: block; score >= review: review. The first matching segment wins.

    A block threshold of 1.0 means the model never blocks on its own: a score is a
    suggestion, and a policy may keep blocks for what the records prove."""

    review: Probability
    block: Probability
    segments: list[Segment] = []

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.review >= self.block:
            raise ValueError(f"review ({self.review!r}) must be below block ({self.block!r})")
        return self


class Rule(_Section):
    name: Name
    code: RuleCode
    when: CompiledCondition
    action: Decision
    message: Annotated[str, Field(min_length=1, max_length=500)]
    enabled: bool = True
    queue: Name | None = None  # review rules only: the queue their reviews go to
    public: PublicText | None = None  # for buyers; None keeps the rule internal

    @model_validator(mode="after")
    def _queue_for_review(self) -> Self:
        if self.queue is not None and self.action is not Decision.REVIEW:
            raise ValueError("only a review rule names a queue")
        return self


class ListFile(_Section):
    """Entries in a text file beside the policy: one per line, ``#`` starts a comment."""

    file: Annotated[str, Field(min_length=1)]


def _list_form(value: Any) -> str:
    return "file" if isinstance(value, dict | ListFile) else "inline"


# Tagged, so a mistake is reported against the form the writer chose, not against both.
ListSource = Annotated[
    Annotated[list[Entry], Tag("inline")] | Annotated[ListFile, Tag("file")],
    Discriminator(_list_form),
]


class ListsByKind(_Section):
    users: ListSource = []
    devices: ListSource = []
    ips: ListSource = []
    payment_accounts: ListSource = []


class Lists(_Section):
    block: ListsByKind = ListsByKind()
    allow: ListsByKind = ListsByKind()


class Queue(_Section):
    name: Name
    deadline_hours: Annotated[float, Field(gt=0, le=24 * 30)]
    when: CompiledCondition | None = None  # None: only by default or by a rule's queue


class Review(_Section):
    """Where a review goes: the first hit review rule's queue, else the first queue whose
    ``when`` holds, else ``default_queue``."""

    default_queue: Name
    queues: Annotated[list[Queue], Field(min_length=1)]


class Prorated(_Section):
    """Membership refunds by unused day:
    ``price * (service_days - max(days_used_seen, min_charged_days)) / service_days - fee``,
    to the nearest cent, never below zero; only for ``reasons``."""

    fee: Amount = Decimal("0")
    min_charged_days: Annotated[int, Field(ge=0)] = 0
    reasons: list[RefundReason] = [
        RefundReason.UNUSED,
        RefundReason.PARTIAL_USE,
        RefundReason.NOT_AS_DESCRIBED,
        RefundReason.OTHER,
    ]


class GreenChannel(_Section):
    """Lighter checks for trusted frequent buyers (``who``), up to ``max_amount``: the
    model's review threshold rises to ``review_threshold`` (never above the block
    threshold) and the ``exempt_rules`` (review rules only) are not applied."""

    enabled: bool = True
    who: CompiledCondition
    max_amount: Amount
    review_threshold: Probability
    exempt_rules: list[Name] = []


class Explanations(_Section):
    top_contributions: Annotated[int, Field(ge=0, le=20)] = 3


class Public(_Section):
    """What the published refund rules page says above the rules (plain text, for buyers)."""

    title: PublicTitle
    introduction: PublicIntroduction | None = None


class PolicySpec(_Section):
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]
    description: str = ""
    thresholds: Thresholds
    rules: list[Rule] = []
    lists: Lists = Lists()
    review: Review
    prorated: Prorated = Prorated()
    green_channel: GreenChannel | None = None
    explanations: Explanations = Explanations()
    public: Public | None = None
