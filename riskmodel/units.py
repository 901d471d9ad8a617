"""The store's units, defined once: time in integer microseconds since the Unix epoch
(UTC), money in integer cents of its currency, currency rates in integer millionths.

    >>> from datetime import UTC, datetime
    >>> micros(datetime(1970, 1, 2, tzinfo=UTC)) == DAY
    True
    >>> iso(DAY), money(1999), cents(19.99)
    ('1970-01-02T00:00:00+00:00', '19.99', 1999)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from riskmodel.errors import DataError

__all__ = [
    "CENTS",
    "DAY",
    "EPOCH",
    "HOUR",
    "MINUTE",
    "RATE_UNIT",
    "SECOND",
    "WEEK",
    "cents",
    "iso",
    "micros",
    "moment",
    "money",
    "stamp",
    "to_micros",
]

SECOND = 1_000_000
"""One second in the store's time unit, the microsecond."""
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CENTS = 100
"""Cents in a unit of currency: the store keeps amounts in cents."""
RATE_UNIT = 1_000_000
"""Rates are stored as integer millionths: exact, and integer arithmetic on both databases."""

_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """A time as store microseconds, exactly (no float on the way); naive times are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _MICROSECOND


def to_micros(when: datetime | str | int | None) -> int | None:
    """A time given as a datetime, an ISO 8601 string or store microseconds, as store
    microseconds (None stays None); naive times and strings without an offset are UTC."""
    if when is None or isinstance(when, int):
        return when
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError as exc:
            raise DataError(f"{when!r} is not an ISO 8601 date") from exc
    return micros(when)


def moment(at: int | float) -> datetime:
    """Store microseconds as a UTC datetime."""
    return EPOCH + int(at) * _MICROSECOND


def iso(at: int | float) -> str:
    """Store microseconds as an ISO 8601 UTC timestamp, to the second."""
    return moment(at).isoformat(timespec="seconds")


def stamp(at: int | None) -> str | None:
    """Store microseconds as the API writes a time: ISO 8601 with its offset, to the
    microsecond where there is one; None stays None."""
    return None if at is None else moment(at).isoformat()


def cents(amount: float | Decimal) -> int:
    """An amount in currency units as store cents, rounded to the nearest cent."""
    return round(amount * CENTS)


def money(amount_cents: int) -> str:
    """Store cents as the API writes money: a decimal string with two places."""
    return f"{Decimal(int(amount_cents)) / CENTS:.2f}"
