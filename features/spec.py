"""The language features are declared in: data, not code paths.

A feature is one of three kinds, each executed by both engines (``features.offline`` over
many requests at once, ``features.online`` for one request from the store):

- ``Aggregate``: events of one *source* (orders, refund requests and their outcomes,
  verdicts, decisions, usage days, entity sightings) that share the request's *entity*
  (its user, device, IP, payment account, seller, product or order), folded by an
  *aggregation* over a *window* that ends just before the request. Point in time by
  construction: an event counts only if its time is strictly before ``requested_at``.
  Windows are whole UTC days: a window of ``w`` days holds the ``w`` days before the
  request's own day and that day up to the request (``window_start``), so that a large
  entity's counts can be read from daily totals, and online and offline agree to the
  microsecond.
- ``Context``: a value of the request itself and its order, as known at ``requested_at``.
- ``Ratio``: one feature over another (a share, a rate, an amount against a mean), null
  where the denominator is not positive; declared rather than written as a formula, so the
  online engine divides all of a request's ratios in one numpy operation.
- ``Derived``: any other formula over other features (ages, entitlements).

``Context`` and ``Derived`` formulas are numpy functions over columns; the offline engine
calls them on a million rows, the online engine on one, so both give the same value.

    >>> from features.spec import Aggregate, Agg, Source, window_start
    >>> from riskmodel.units import DAY
    >>> Aggregate("user_orders_7d", Source.ORDERS, "user_id", Agg.COUNT, window=7 * DAY,
    ...           doc="orders paid by the user in the 7 days before the request").window_days
    7.0
    >>> window_start(10 * DAY + 5, 7 * DAY) == 3 * DAY
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from riskmodel.units import DAY

__all__ = [
    "Agg",
    "Aggregate",
    "Computed",
    "Context",
    "Derived",
    "Entity",
    "Feature",
    "Ratio",
    "Source",
    "Type",
    "divide",
    "window_start",
]


def window_start(t: int, window: int) -> int:
    """The first instant of a window of ``window`` (whole days) before time ``t``: the
    start of ``t``'s UTC day, ``window`` earlier. Works on numpy arrays too."""
    return t // DAY * DAY - window


Columns = Mapping[str, np.ndarray]


class Source(StrEnum):
    """Event streams features aggregate over, each with its time column.

    - ``orders``: orders, at ``paid_at``; value ``amount`` in currency units.
    - ``refunds``: refund requests, at ``requested_at``; value ``amount``.
    - ``abuse``: changes in what the labels say of a refund request, at the verdict's
      time (``labeled_at``, or the request's time if the verdict is dated before it);
      value +1 when a request becomes confirmed abuse, -1 when a later label clears it.
      Summed over all time this counts requests whose latest label known says abuse.
    - ``verdicts``: the first verdict on each refund request, at its time, value 1:
      how many of an entity's requests have been judged, the denominator of an abuse rate.
    - ``outcomes``: what each refund request came to in the end (``paid_amount`` and
      ``resolved_at`` both known), at ``resolved_at`` (at the request's time if dated
      before it); value ``paid_amount`` in cents of the order's currency; attribute
      ``outcome``: ``paid`` (more than 0 paid back) or ``refused`` (0).
    - ``decisions``: the service's earlier decisions, at ``decided_at`` (at the request's
      time if dated before it); value ``approved_amount`` in cents of the order's currency.
    - ``usage``: days a membership was used, at ``used_at``.
    - ``sightings``: the first time a user was seen (ordering or asking a refund) on a
      device, IP or payment account; value the user's ``registered_at``.
    """

    ORDERS = "orders"
    REFUNDS = "refunds"
    ABUSE = "abuse"
    VERDICTS = "verdicts"
    OUTCOMES = "outcomes"
    DECISIONS = "decisions"
    USAGE = "usage"
    SIGHTINGS = "sightings"


class Entity(StrEnum):
    """What events are matched on; each names the request field (or its order's) it keys."""

    USER = "user_id"
    ORDER = "order_id"
    DEVICE = "device_id"
    IP = "ip"
    PAYMENT_ACCOUNT = "payment_account"
    SELLER = "seller_id"
    PRODUCT = "product_id"

    @property
    def on_order(self) -> bool:
        """Whether a request carries the entity through its order, not its own fields."""
        return self in ORDER_SIDE


ORDER_SIDE = frozenset({Entity.PAYMENT_ACCOUNT, Entity.SELLER, Entity.PRODUCT})

OWN_CURRENCY = frozenset({Source.OUTCOMES, Source.DECISIONS})
"""Sources whose amounts are kept in the order's currency only: summed by order alone."""
MONEY = frozenset({Source.ORDERS, Source.REFUNDS, *OWN_CURRENCY})
"""Sources whose values are amounts (cents), summed into currency units."""


class Agg(StrEnum):
    COUNT = "count"  # events; 0 when none
    SUM = "sum"  # of the source's value; 0 when none
    DISTINCT = "distinct"  # distinct values of ``of``; 0 when none
    HOURS_SINCE_LAST = "hours_since_last"  # hours from the latest event; null when none
    MAX = "max"  # largest value; null when none


class Type(StrEnum):
    NUMBER = "number"
    CATEGORY = "category"


@dataclass(frozen=True)
class Aggregate:
    name: str
    source: Source
    entity: Entity
    agg: Agg
    window: int | None = None  # microseconds; None is the whole history
    where: tuple[str, str] | None = None  # (column, value) that an event must have
    of: str | None = None  # the column DISTINCT counts
    doc: str = ""
    type: Type = Type.NUMBER
    internal: bool = False  # a step towards other features, not a model input

    def __post_init__(self) -> None:
        if self.agg is Agg.DISTINCT and self.of is None:
            raise ValueError(f"{self.name}: a distinct count needs 'of'")
        if self.agg is Agg.MAX and self.window is not None:
            raise ValueError(f"{self.name}: a maximum is over the whole history only")
        if self.window is not None and (self.window <= 0 or self.window % DAY):
            raise ValueError(f"{self.name}: a window is a positive number of whole days")
        own_currency = self.source in OWN_CURRENCY and self.entity is not Entity.ORDER
        if self.agg is Agg.SUM and own_currency:
            # Kept in the order's currency only: another entity's would add up currencies.
            raise ValueError(f"{self.name}: {self.source.value} amounts add up by order only")

    @property
    def in_currency(self) -> bool:
        """A sum of amounts: stored in cents, reported in currency units."""
        return self.agg is Agg.SUM and self.source in MONEY

    @property
    def window_days(self) -> float | None:
        return None if self.window is None else self.window / DAY

    @property
    def inputs(self) -> tuple[str, ...]:
        return ()


@dataclass(frozen=True)
class Context:
    name: str
    compute: Callable[[Columns], np.ndarray]
    needs: tuple[str, ...]  # request / order columns (``order_`` prefix) and aggregates
    doc: str = ""
    type: Type = Type.NUMBER
    levels: tuple[str, ...] = ()
    internal: bool = False

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.needs


@dataclass(frozen=True)
class Derived:
    name: str
    compute: Callable[[Columns], np.ndarray]
    inputs: tuple[str, ...] = field(default=())
    doc: str = ""
    type: Type = Type.NUMBER
    internal: bool = False


@dataclass(frozen=True)
class Ratio:
    name: str
    numerator: str
    denominator: str
    doc: str = ""
    clip: bool = False  # a rate: kept within [0, 1]
    type: Type = Type.NUMBER
    internal: bool = False

    @property
    def inputs(self) -> tuple[str, ...]:
        return (self.numerator, self.denominator)

    def compute(self, c: Columns) -> np.ndarray:
        return divide(c[self.numerator], c[self.denominator], clip=self.clip)


def divide(top: np.ndarray, bottom: np.ndarray, *, clip: bool = False) -> np.ndarray:
    """top / bottom, null where bottom is not positive or null; within [0, 1] if ``clip``.

    >>> divide(np.array([1.0, 1.0, 3.0]), np.array([2.0, 0.0, 2.0]), clip=True).tolist()
    [0.5, nan, 1.0]
    """
    bottom = np.asarray(bottom, dtype=float)
    # Dividing by NaN gives NaN without a warning: cheaper than a masked divide.
    out: np.ndarray = np.asarray(top, dtype=float) / np.where(bottom > 0, bottom, np.nan)
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out


Feature = Aggregate | Context | Derived | Ratio
Computed = Context | Derived | Ratio
"""Features computed from others, after the aggregates."""
