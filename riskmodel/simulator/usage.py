"""Membership usage: the days on which the platform saw each membership used.

Each membership has an engagement (the chance of use on a given day, Beta-distributed
around ``membership_usage_rate``) and a day on which its member loses interest
(exponential, mean ``membership_churn_days``). Usage runs from activation (delivery) to
the earliest of the end of the service period, the first refund request on the order
(a refunded membership stops) and the end of the window. A membership returned unused
has no usage; one cancelled part way was used on its first day; an over-claimer used
the membership heavily, which is what the claim hides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskmodel.simulator.common import DAY, MEMBERSHIP, Array
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import DUPLICATE, Orders
from riskmodel.simulator.patterns import Pattern

__all__ = ["Usage", "membership_usage"]


@dataclass(frozen=True)
class Usage:
    """One element per usage day, plus the number of usage days of every order."""

    order: Array
    used_at: Array
    days_per_order: Array


def membership_usage(
    orders: Orders,
    first_request: Array,
    first_pattern: Array,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> Usage:
    """Usage days of every membership.

    ``first_request[i]`` and ``first_pattern[i]`` are the time and pattern code of the
    first refund request on order ``i`` (``MISSING`` when there is none).
    """
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    member = np.flatnonzero((orders.product_type == MEMBERSHIP) & (orders.delivered >= 0))
    pattern = first_pattern[member]
    period_end = orders.paid[member] + orders.service_days[member] * DAY
    stop = np.minimum(period_end, end)
    requested = first_request[member]
    stop = np.where(requested >= 0, np.minimum(stop, requested), stop)
    begin = orders.delivered[member]

    unused = (pattern == Pattern.HONEST_UNUSED.code) | (orders.origin[member] == DUPLICATE)
    over = pattern == Pattern.PRORATED_OVERCLAIM.code
    forced_first = over | (pattern == Pattern.HONEST_PARTIAL_USE.code)
    m = cfg.membership_usage_rate
    if 0 < m < 1:
        engagement = rng.beta(2.0, 2.0 * (1 - m) / m, len(member))
    else:
        engagement = np.full(len(member), float(m))
    engagement = np.where(over, rng.uniform(0.6, 1.0, len(member)), engagement)
    churn = np.where(over, np.inf, rng.exponential(cfg.membership_churn_days, len(member)))

    span = np.maximum(stop - begin, 0)
    horizon = np.where(unused, 0, -(-span // DAY))
    total = int(horizon.sum())
    owner = np.repeat(np.arange(len(member)), horizon)
    first_of_owner = np.repeat(np.cumsum(horizon) - horizon, horizon)
    day = np.arange(total, dtype=np.int64) - first_of_owner
    day_start = begin[owner] + day * DAY
    # Within its day a use can fall at any second that is still before the stop.
    room = np.minimum(DAY, stop[owner] - day_start)
    used_at = day_start + np.floor(rng.random(total) * room).astype(np.int64)
    keep = (rng.random(total) < engagement[owner]) & (day < churn[owner])
    keep |= forced_first[owner] & (day == 0)

    order = member[owner[keep]]
    return Usage(
        order=order,
        used_at=used_at[keep],
        days_per_order=np.bincount(order, minlength=len(orders)).astype(np.int64),
    )
