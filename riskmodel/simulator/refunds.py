"""Honest refund requests, and the amount and claim of every request.

Honest kinds (ground-truth pattern in brackets):

- not delivered: never delivered (``honest_not_delivered``) or late, often asked before
  the delivery arrived (``honest_late_delivery``);
- invalid code from a seller's bad batch (``honest_bad_batch``) or an isolated bad code
  (``honest_invalid_code``); such codes never redeem;
- unused: a code, membership or service returned soon, nothing redeemed or used
  (``honest_unused``);
- partial use of a membership: the claim equals the real usage days and the amount is
  ``price * (service_days - days_used) / service_days - fee`` (``honest_partial_use``);
- duplicate charge: the second of two charges minutes apart (``honest_duplicate_charge``);
- not as described (``honest_not_as_described``) and other (``honest_other``).

Discretionary kinds scale with each account's refund propensity.

Honest look-alikes of abuse picked here (``lookalike_requests``, after every other first
request), each claimed invalid_code on a code the issuer saw redeemed:

- a code sold already used, redeemed before its buyer paid (``honest_double_sold``);
- a code its buyer redeemed whose value never reached the buyer's account
  (``honest_not_credited``).

The look-alikes that are second requests on an order are in ``lookalikes``.
"""

from __future__ import annotations

import numpy as np

from riskmodel.simulator.abuse import cancellation_time
from riskmodel.simulator.common import (
    BURST,
    CARD_CODE,
    DAY,
    DUPLICATE_CHARGE,
    FAKE_BUYER,
    GAME_CURRENCY,
    HOUR,
    INVALID_CODE,
    MEMBERSHIP,
    MINUTE,
    MISSING,
    NOT_AS_DESCRIBED,
    NOT_DELIVERED,
    OTHER,
    PARTIAL_USE,
    RING,
    UNUSED,
    Array,
    choice_codes,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.fulfilment import Fulfilment
from riskmodel.simulator.orders import (
    BURST_ORDER,
    DUPLICATE,
    REGULAR,
    TURNED_ORIGINS,
    Orders,
    usual_device_ip,
)
from riskmodel.simulator.patterns import FIRST_ABUSE, Pattern
from riskmodel.simulator.population import Population
from riskmodel.simulator.requests import Picker, Requests

__all__ = ["honest_requests", "lookalike_requests", "price_requests", "request_context"]

# Weights of the app, web and support channels. Abusers script the app and avoid talking
# to support; a duplicate refund is often pushed through support after the app refused.
_HONEST_CHANNELS = (0.6, 0.28, 0.12)
_ABUSE_CHANNELS = (0.7, 0.27, 0.03)
_DUPLICATE_REFUND_CHANNELS = (0.2, 0.3, 0.5)


def honest_requests(
    picker: Picker,
    orders: Orders,
    facts: Fulfilment,
    pop: Population,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> None:
    """Pick the orders behind every honest request (after the abusive ones)."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    n = len(orders)
    ptype = orders.product_type
    paid = orders.paid
    delivered = orders.delivered >= 0
    r = rng.random((9, n))

    idx = picker.pick(orders.origin == DUPLICATE)
    picker.add(
        idx,
        paid[idx] + uniform_seconds(rng, 5 * MINUTE, 2 * DAY, len(idx)),
        DUPLICATE_CHARGE,
        Pattern.HONEST_DUPLICATE_CHARGE,
    )

    regular = orders.origin == REGULAR
    idx = picker.pick(regular & facts.never & (r[0] < cfg.undelivered_refund_rate))
    picker.add(
        idx,
        paid[idx] + uniform_seconds(rng, 10 * MINUTE, 3 * DAY, len(idx)),
        NOT_DELIVERED,
        Pattern.HONEST_NOT_DELIVERED,
    )

    idx = picker.pick(regular & facts.late & (r[1] < cfg.late_delivery_refund_rate))
    arrived = orders.delivered[idx]
    # Most complain while waiting; some only after the order finally arrived, late.
    waiting = (rng.random(len(idx)) < 0.7) | (arrived < 0)
    wait_until = np.where(arrived >= 0, arrived, paid[idx] + 3 * DAY)
    requested = np.where(
        waiting,
        uniform_seconds(rng, paid[idx] + 30 * MINUTE, np.maximum(wait_until, paid[idx] + HOUR)),
        arrived + uniform_seconds(rng, 0, DAY, len(idx)),
    )
    picker.add(idx, requested, NOT_DELIVERED, Pattern.HONEST_LATE_DELIVERY)

    invalid = regular & facts.invalid & delivered & (r[2] < cfg.invalid_code_refund_rate)
    for pattern, from_batch in (
        (Pattern.HONEST_BAD_BATCH, facts.in_bad_batch),
        (Pattern.HONEST_INVALID_CODE, ~facts.in_bad_batch),
    ):
        idx = picker.pick(invalid & from_batch)
        picker.add(idx, orders.delivered[idx] + _noticed(rng, len(idx)), INVALID_CODE, pattern)

    propensity = pop.propensity[orders.user]
    returnable = (ptype != GAME_CURRENCY) & delivered
    idx = picker.pick(regular & returnable & (r[3] < cfg.unused_refund_rate * propensity))
    claimed = np.where(ptype[idx] == MEMBERSHIP, 0, MISSING)
    requested = orders.delivered[idx] + uniform_seconds(rng, 5 * MINUTE, 3 * DAY, len(idx))
    picker.add(idx, requested, UNUSED, Pattern.HONEST_UNUSED, claimed=claimed)
    # Returned unused: the code was never redeemed (the refund revokes it).
    orders.redeemed[idx[ptype[idx] == CARD_CODE]] = MISSING

    member = regular & (ptype == MEMBERSHIP) & delivered
    idx = picker.pick(member & (r[4] < cfg.partial_use_refund_rate * propensity))
    picker.add(
        idx, cancellation_time(orders, idx, end, rng), PARTIAL_USE, Pattern.HONEST_PARTIAL_USE
    )

    idx = picker.pick(regular & delivered & (r[5] < cfg.not_as_described_rate * propensity))
    after = uniform_seconds(rng, HOUR, 7 * DAY, len(idx))
    picker.add(
        idx, orders.delivered[idx] + after, NOT_AS_DESCRIBED, Pattern.HONEST_NOT_AS_DESCRIBED
    )

    idx = picker.pick(regular & (r[6] < cfg.other_refund_rate * propensity))
    picker.add(
        idx,
        paid[idx] + uniform_seconds(rng, HOUR, 14 * DAY, len(idx)),
        OTHER,
        Pattern.HONEST_OTHER,
    )


def lookalike_requests(
    picker: Picker,
    orders: Orders,
    facts: Fulfilment,
    failed: Array,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> Array:
    """Make the codes sold already used (``facts.sold_used``) and those never credited
    to their buyer (``failed``) so, among orders no request was picked on before (an
    abuser's or an honest claim stays what it was), and pick their buyers' honest
    invalid_code claims, from a stream of their own. Returns the codes never credited."""
    n = len(orders)
    r = rng.random((2, n))
    free = (orders.origin == REGULAR) & ~picker.taken
    sold_used = facts.sold_used & free
    orders.redeemed[sold_used] = facts.sold_used_at[sold_used]
    idx = picker.pick(sold_used & (r[0] < cfg.invalid_code_refund_rate))
    requested = orders.delivered[idx] + _noticed(rng, len(idx))
    picker.add(idx, requested, INVALID_CODE, Pattern.HONEST_DOUBLE_SOLD)

    by_buyer = (orders.redeemed >= 0) & (orders.redeemed >= orders.paid)
    never_credited: Array = failed & free & by_buyer
    idx = picker.pick(never_credited & (r[1] < cfg.invalid_code_refund_rate))
    # The buyer redeems the code, sees nothing arrive and asks.
    requested = orders.redeemed[idx] + np.maximum(_noticed(rng, len(idx)), MINUTE)
    picker.add(idx, requested, INVALID_CODE, Pattern.HONEST_NOT_CREDITED)
    return never_credited


def _noticed(rng: np.random.Generator, n: int) -> Array:
    """How long after delivery a buyer notices that a code does not work."""
    return np.minimum(np.exp(rng.normal(np.log(20 * MINUTE), 1.5, n)).astype(np.int64), 3 * DAY)


def price_requests(
    requests: Requests,
    orders: Orders,
    used_days: Array,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> Requests:
    """Fill claims and amounts; requests with nothing left to refund are dropped.

    ``used_days[i]`` is the number of usage days of order ``i`` before its first request.
    Prorated claims pay ``price * (service_days - claimed) / service_days - fee``: honest
    ones claim the real usage, over-claims a fraction of it.
    """
    order = requests.order
    price = orders.amount[order]
    days = orders.service_days[order]
    used = used_days[order]
    claimed = requests.claimed.copy()
    honest_partial = requests.pattern == Pattern.HONEST_PARTIAL_USE.code
    claimed[honest_partial] = used[honest_partial]
    over = requests.pattern == Pattern.PRORATED_OVERCLAIM.code
    claimed[over] = np.floor(used[over] * rng.uniform(0.0, 0.6, int(over.sum()))).astype(np.int64)

    prorated = claimed >= 0
    safe_days = np.where(days > 0, days, 1)
    entitlement = price * (safe_days - np.maximum(claimed, 0)) / safe_days - cfg.prorated_fee
    amount = np.where(prorated, entitlement, price)
    # "Other" refunds are sometimes a goodwill part of the price.
    partial = (requests.reason == OTHER) & (rng.random(len(requests)) < 0.4)
    amount = np.where(partial, price * rng.uniform(0.2, 0.9, len(requests)), amount)
    amount = np.minimum(np.round(amount, 2), price)

    priced = Requests(
        order=order,
        requested=requests.requested,
        reason=requests.reason,
        pattern=requests.pattern,
        claimed=claimed,
        amount=amount,
        paid=requests.paid,
        resolved=requests.resolved,
    )
    return priced.take(np.flatnonzero(amount >= 0.01))


def request_context(
    requests: Requests, orders: Orders, pop: Population, rng: np.random.Generator
) -> tuple[Array, Array, Array]:
    """Device, IP and channel code of each request.

    Ordinary accounts ask from the device they bought on or another of their usual ones;
    ring, scheme and burst members, and orders through an entity turned bad, ask from the
    device and IP of the order.
    """
    n = len(requests)
    order = requests.order
    user = orders.user[order]
    device, ip = usual_device_ip(pop, rng, user)
    device = np.where(rng.random(n) < 0.6, orders.device[order], device)
    grouped = np.isin(pop.kind[user], (RING, FAKE_BUYER, BURST))
    grouped |= np.isin(orders.origin[order], (*TURNED_ORIGINS, BURST_ORDER))
    device = np.where(grouped, orders.device[order], device)
    ip = np.where(grouped, orders.ip[order], ip)

    channel = choice_codes(rng, _HONEST_CHANNELS, n)
    channel = np.where(
        requests.pattern >= FIRST_ABUSE, choice_codes(rng, _ABUSE_CHANNELS, n), channel
    )
    duplicate = requests.pattern == Pattern.DUPLICATE_REFUND.code
    channel = np.where(duplicate, choice_codes(rng, _DUPLICATE_REFUND_CHANNELS, n), channel)
    return device, ip, channel
