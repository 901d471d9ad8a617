"""The language features are declared in: data, not code paths.

A feature is one of three kinds, each executed by both engines (``features.offline`` over
many requests at once, ``features.online`` for one request from the store):

- ``Aggregate``: events of one *source* (orders, refund requests, abuse labels, decisions,
  usage days, entity sightings) that share the request's *entity* (its user, device, IP,
  payment account, seller or order), folded by an *aggregation* over a *window* that ends
  just before the request. Point in time by construction: an event counts only if its time
  is strictly before ``requested_at`` and, for a window of ``w``, not before
  ``requested_at - w``.
- ``Context``: a value of the request itself and its order, as known at ``requested_at``.
- ``Derived``: a formula over other features (ratios, shares, entitlements).

``Context`` and ``Derived`` formulas are numpy functions over columns; the offline engine
calls them on a million rows, the online engine on one, so both give the same value.

    >>> from features.spec import Aggregate, Agg, Source, DAY
    >>> Aggregate("user_orders_7d", Source.ORDERS, "user_id", Agg.COUNT, window=7 * DAY,
    ...           doc="orders paid by the user in the 7 days before the request").window_days
    7.0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

__all__ = [
    "DAY",
    "HOUR",
    "Agg",
    "Aggregate",
    "Context",
    "Derived",
    "Entity",
    "Feature",
    "Source",
    "Type",
]

HOUR = 3_600_000_000  # microseconds, the store's unit
DAY = 24 * HOUR

Columns = Mapping[str, np.ndarray]


class Source(StrEnum):
    """Event streams features aggregate over, each with its time column.

    - ``orders``: orders, at ``paid_at``; value ``amount`` in currency units.
    - ``refunds``: refund requests, at ``requested_at``; value ``amount``.
    - ``abuse``: changes in what the labels say of a refund request, at ``labeled_at``;
      value +1 when a request becomes confirmed abuse, -1 when a later label clears it.
      Summed over all time this counts requests whose latest label known says abuse.
    - ``decisions``: the service's earlier decisions, at ``decided_at``.
    - ``usage``: days a membership was used, at ``used_at``.
    - ``sightings``: the first time a user was seen (ordering or asking a refund) on a
      device, IP or payment account; value the user's ``registered_at``.
    """

    ORDERS = "orders"
    REFUNDS = "refunds"
    ABUSE = "abuse"
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

    @property
    def in_currency(self) -> bool:
        """A sum of amounts: stored in cents, reported in currency units."""
        return self.agg is Agg.SUM and self.source in (Source.ORDERS, Source.REFUNDS)

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


Feature = Aggregate | Context | Derived
