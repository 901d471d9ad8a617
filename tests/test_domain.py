"""Domain types: valid records build, invalid ones name the field and the problem."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from riskmodel.domain import Decision, Label, Order, RefundRequest, User

ORDER: dict[str, Any] = {
    "order_id": "o1",
    "user_id": "u1",
    "product_type": "membership",
    "amount": "30.00",
    "paid_at": "2026-01-05T10:00:00Z",
    "service_days": 30,
}
REQUEST: dict[str, Any] = {
    "request_id": "r1",
    "order_id": "o1",
    "user_id": "u1",
    "requested_at": "2026-01-10T10:00:00+08:00",
    "amount": "22.00",
    "reason": "partial_use",
    "days_used_claimed": 2,
}


def test_timestamps_become_utc_and_money_stays_exact() -> None:
    request = RefundRequest(**REQUEST)
    user = User(user_id="u1", registered_at=datetime(2026, 1, 1, 8))  # naive: read as UTC

    assert request.requested_at == datetime(2026, 1, 10, 2, tzinfo=UTC)
    assert request.requested_at.utcoffset() == timedelta(0)
    assert request.amount == Decimal("22.00")
    assert user.registered_at.tzinfo is UTC
    shifted = datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=-5)))
    assert User(user_id="u", registered_at=shifted).registered_at.hour == 13


@pytest.mark.parametrize(
    ("model", "base", "change", "field", "problem"),
    [
        (Order, ORDER, {"product_type": "gift_card"}, "product_type", "Input should be"),
        (Order, ORDER, {"amount": "-1"}, "amount", "greater than or equal to 0"),
        (Order, ORDER, {"amount": "1.005"}, "amount", "more than two decimal places"),
        (Order, ORDER, {"paid_at": "yesterday"}, "paid_at", "Input should be a valid datetime"),
        (Order, ORDER, {"colour": "red"}, "colour", "Extra inputs are not permitted"),
        (RefundRequest, REQUEST, {"reason": "changed_mind"}, "reason", "Input should be"),
        (RefundRequest, REQUEST, {"amount": "0"}, "amount", "greater than 0"),
        (RefundRequest, REQUEST, {"days_used_claimed": -1}, "days_used_claimed", "greater than"),
        (RefundRequest, REQUEST, {"request_id": ""}, "request_id", "at least 1 character"),
    ],
)
def test_invalid_records_name_field_and_problem(
    model: type[Order] | type[RefundRequest],
    base: dict[str, Any],
    change: dict[str, Any],
    field: str | None,
    problem: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        model(**{**base, **change})

    error = caught.value.errors()[0]
    assert problem in error["msg"]
    if field is not None:
        assert error["loc"] == (field,)


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("False", False), (1, True)])
def test_label_flags_accept_plain_booleans(value: object, expected: bool) -> None:
    label = Label(request_id="r1", is_abuse=value, labeled_at="2026-01-01T00:00:00Z")
    assert label.is_abuse is expected


@pytest.mark.parametrize("value", ["no", "yes", 2, "abusive"])
def test_label_flags_refuse_anything_else(value: object) -> None:
    with pytest.raises(ValidationError, match="must be true or false"):
        Label(request_id="r1", is_abuse=value, labeled_at="2026-01-01T00:00:00Z")


def test_decisions_are_ordered_by_severity() -> None:
    assert Decision.APPROVE.severity < Decision.REVIEW.severity < Decision.BLOCK.severity
    assert Decision.most_severe(Decision.REVIEW, Decision.APPROVE) is Decision.REVIEW
    assert Decision.most_severe(Decision.REVIEW, Decision.BLOCK) is Decision.BLOCK
