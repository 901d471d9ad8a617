"""What the marketplace's existing refund process did with each request, and when.

The outcome of a request is what was paid back in the end (``paid``; 0 for a refusal)
and when (``resolved``); a request never answered has neither. The existing process:

- answers ``auto_decision_share`` of requests automatically, 1 s - 2 min after them, and
  the others after a person looked, 1 h - 4 days later (log-uniform);
- refuses ``honest_refusal_rate`` of honest requests and catches and refuses
  ``abuse_refusal_rate`` of abusive ones; it also refuses ``redeemed_claim_refusal_rate``
  of invalid_code claims on codes its records show redeemed, honest or not;
- pays the rest in full, except that ``elapsed_proration_rate`` of membership refunds
  (partial use, unused) are prorated by the days elapsed since delivery instead of the
  days used, which pays less than asked;
- always pays a double dip (a chargeback follows the refund) and the first request of a
  duplicate refund, in full and before the duplicate (``settle_duplicates``): a duplicate
  refund is a real second payout asked for.

Outcomes are drawn independently of labels. A request answered at or after the end of
the window is unanswered at export, and an export keeps only ``outcome_report_rate`` of
the outcomes (``export_outcomes``).

    >>> from riskmodel.simulator import SimulationConfig, simulate
    >>> requests = simulate(SimulationConfig(users=500, days=14, seed=1)).refund_requests
    >>> bool((requests["paid_amount"] > requests["amount"]).any())
    False
"""

from __future__ import annotations

import numpy as np

from riskmodel.simulator.common import (
    DAY,
    HOUR,
    INVALID_CODE,
    MEMBERSHIP,
    MINUTE,
    MISSING,
    PARTIAL_USE,
    UNUSED,
    Array,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import Orders
from riskmodel.simulator.patterns import FIRST_ABUSE, Pattern
from riskmodel.simulator.requests import Requests

__all__ = ["draw_outcomes", "export_outcomes", "paid_before_duplicates", "settle_duplicates"]

# Margin (reporting currency) by which a duplicate refund asks more than is left to
# refund, so that rounding to another currency's cents cannot close the gap.
_BEYOND = 1.0


def _log_uniform(rng: np.random.Generator, low: float, high: float, n: int) -> Array:
    """Whole seconds, log-uniform in ``[low, high)``."""
    drawn = np.exp(rng.uniform(np.log(low), np.log(high), n))
    return np.floor(drawn).astype(np.int64)


def draw_outcomes(
    requests: Requests,
    orders: Orders,
    cfg: SimulationConfig,
    rng: np.random.Generator,
    *,
    paid_in_full: Array | None = None,
    prorate: bool = True,
) -> None:
    """Fill ``requests.paid`` and ``requests.resolved`` (see the module docstring).

    ``paid_in_full`` marks requests the process pays as asked whatever it would have done
    (the first request of a duplicate refund); ``prorate`` allows membership refunds to be
    paid by the days elapsed.
    """
    n = len(requests)
    order = requests.order
    abusive = requests.pattern >= FIRST_ABUSE
    r = rng.random((4, n))
    redeemed = orders.redeemed[order]
    seen_redeemed = (
        (requests.reason == INVALID_CODE) & (redeemed >= 0) & (redeemed < requests.requested)
    )
    forced = requests.pattern == Pattern.DOUBLE_DIP.code
    if paid_in_full is not None:
        forced = forced | paid_in_full
    refusal = np.where(abusive, cfg.abuse_refusal_rate, cfg.honest_refusal_rate)
    refused = (r[0] < refusal) | (seen_redeemed & (r[1] < cfg.redeemed_claim_refusal_rate))
    refused &= ~forced

    automatic = r[2] < cfg.auto_decision_share
    quick = uniform_seconds(rng, 1, 2 * MINUTE, n)
    slow = _log_uniform(rng, HOUR, 4 * DAY, n)
    delay = np.where(automatic, quick, slow)

    paid = np.where(refused, 0.0, requests.amount)
    if prorate:
        paid = _by_days_elapsed(requests, orders, cfg, paid, r[3], ~refused & ~forced)
    requests.paid = paid
    requests.resolved = requests.requested + delay


def _by_days_elapsed(
    requests: Requests,
    orders: Orders,
    cfg: SimulationConfig,
    paid: Array,
    draw: Array,
    eligible: Array,
) -> Array:
    """Membership refunds prorated by the days elapsed since delivery (each day begun
    counts), where that pays at least a cent and less than asked."""
    order = requests.order
    delivered = orders.delivered[order]
    days = orders.service_days[order]
    chosen = (
        eligible
        & (orders.product_type[order] == MEMBERSHIP)
        & np.isin(requests.reason, (PARTIAL_USE, UNUSED))
        & (delivered >= 0)
        & (days > 0)
        & (draw < cfg.elapsed_proration_rate)
    )
    safe_days = np.where(days > 0, days, 1)
    elapsed = np.clip(-(-(requests.requested - delivered) // DAY), 1, safe_days)
    price = orders.amount[order]
    by_elapsed = np.round(price * (safe_days - elapsed) / safe_days - cfg.prorated_fee, 2)
    partly = chosen & (by_elapsed >= 0.01) & (by_elapsed <= paid - 0.01)
    result: Array = np.where(partly, by_elapsed, paid)
    return result


def settle_duplicates(requests: Requests, orders: Orders) -> Array:
    """Make each duplicate refund a real second payout asked for; returns the mask of
    the first requests that must be paid in full (for ``draw_outcomes``).

    A duplicate refund repeats the first request's amount; where that would still be
    within what is left to refund once the first is paid (price minus the first amount),
    it asks the whole price instead. Call ``paid_before_duplicates`` after the outcomes.
    """
    duplicate = requests.pattern == Pattern.DUPLICATE_REFUND.code
    first = _first_of_duplicates(requests, duplicate)
    dup = np.flatnonzero(duplicate)
    price = orders.amount[requests.order[dup]]
    asked = requests.amount[first]
    within = asked - (price - asked) < _BEYOND
    requests.amount[dup] = np.where(within, price, requests.amount[dup])
    in_full = np.zeros(len(requests), dtype=bool)
    in_full[first] = True
    return in_full


def paid_before_duplicates(requests: Requests) -> None:
    """Move the payment of each duplicate's first request to at least an hour before the
    duplicate (the abuser asks again once paid)."""
    duplicate = requests.pattern == Pattern.DUPLICATE_REFUND.code
    first = _first_of_duplicates(requests, duplicate)
    latest = requests.requested[duplicate] - HOUR
    resolved = np.minimum(requests.resolved[first], latest)
    requests.resolved[first] = np.maximum(resolved, requests.requested[first] + 1)


def _first_of_duplicates(requests: Requests, duplicate: Array) -> Array:
    """Index of the first request on the order of each duplicate refund."""
    firsts = np.flatnonzero(~duplicate)
    first_of = np.full(int(requests.order.max(initial=-1)) + 1, MISSING, dtype=np.int64)
    first_of[requests.order[firsts]] = firsts
    found: Array = first_of[requests.order[duplicate]]
    return found


def export_outcomes(requests: Requests, cfg: SimulationConfig, rng: np.random.Generator) -> None:
    """What an export made at the end of the window knows: an answer at or after the end
    has not come yet, and only ``outcome_report_rate`` of answers are kept."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    unanswered = (requests.resolved < 0) | (requests.resolved >= end)
    if 0 < cfg.outcome_report_rate < 1:  # no draw otherwise
        unanswered |= rng.random(len(requests)) >= cfg.outcome_report_rate
    requests.paid = np.where(unanswered, np.nan, requests.paid)
    requests.resolved = np.where(unanswered, MISSING, requests.resolved)
