"""The working form of refund requests and the rule of one first request per order.

Honest and abusive stages each pick orders and say when and why a refund was asked;
``Picker`` makes sure no order is picked twice, so the stages cannot contradict each
other. Later requests on an order (a duplicate refund, and the honest look-alikes: a
retry, a re-submission, a partial follow-up) are added separately.

    >>> import numpy as np
    >>> picker = Picker(3)
    >>> picker.pick(np.array([True, False, True])).tolist()
    [0, 2]
    >>> picker.pick(np.array([True, True, False])).tolist()
    [1]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from riskmodel.simulator.common import (
    CARD_CODE,
    GAME_CURRENCY,
    INVALID_CODE,
    MISSING,
    NOT_DELIVERED,
    OTHER,
    UNUSED,
    Array,
    choice_codes,
)
from riskmodel.simulator.patterns import Pattern

__all__ = ["Picker", "Requests", "draw_reasons", "no_requests"]


@dataclass
class Requests:
    """One element per refund request, in generation order."""

    order: Array
    requested: Array
    reason: Array
    pattern: Array
    claimed: Array
    """Days used as claimed by the requester; ``MISSING`` when not claimed."""
    amount: Array
    """Requested amount; NaN until ``refunds.price_requests`` fills it."""
    paid: Array
    """What the marketplace paid back in the end (0: refused); NaN while unanswered, and
    until ``outcomes.draw_outcomes`` fills it."""
    resolved: Array
    """When it was paid or refused; ``MISSING`` while unanswered."""

    def __len__(self) -> int:
        return len(self.order)

    @classmethod
    def concat(cls, parts: list[Requests]) -> Requests:
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def take(self, index: Array) -> Requests:
        return Requests(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


class Picker:
    """Collects first requests, at most one per order."""

    def __init__(self, n_orders: int) -> None:
        self.taken = np.zeros(n_orders, dtype=bool)
        self._parts: list[Requests] = []

    def pick(self, mask: Array) -> Array:
        """Orders of ``mask`` not picked before; they are now taken."""
        index = np.flatnonzero(mask & ~self.taken)
        self.taken[index] = True
        return index

    def add(
        self,
        order: Array,
        requested: Array,
        reason: Array | int,
        pattern: Pattern,
        claimed: Array | None = None,
    ) -> None:
        n = len(order)
        self._parts.append(
            Requests(
                order=order.astype(np.int64),
                requested=np.asarray(requested, dtype=np.int64),
                reason=np.broadcast_to(np.asarray(reason, dtype=np.int64), (n,)).copy(),
                pattern=np.full(n, pattern.code, dtype=np.int64),
                claimed=np.full(n, MISSING, dtype=np.int64) if claimed is None else claimed,
                amount=np.full(n, np.nan),
                paid=np.full(n, np.nan),
                resolved=np.full(n, MISSING, dtype=np.int64),
            )
        )

    def requests(self) -> Requests:
        return Requests.concat([no_requests(), *self._parts])


def no_requests() -> Requests:
    """An empty ``Requests``."""
    none = np.empty(0, dtype=np.int64)
    nothing = np.empty(0, dtype=np.float64)
    return Requests(
        order=none,
        requested=none,
        reason=none,
        pattern=none,
        claimed=none,
        amount=nothing,
        paid=nothing,
        resolved=none,
    )


def draw_reasons(
    rng: np.random.Generator, weights: tuple[float, ...], product_type: Array
) -> Array:
    """Reasons by ``weights`` (in ``common.REASONS`` order) that make sense for the product:
    only codes can be invalid and credited currency cannot be returned unused."""
    reason = choice_codes(rng, weights, len(product_type))
    reason = np.where((reason == INVALID_CODE) & (product_type != CARD_CODE), NOT_DELIVERED, reason)
    return np.where((reason == UNUSED) & (product_type == GAME_CURRENCY), OTHER, reason)
