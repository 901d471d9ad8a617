"""The abuse patterns: who abuses, on which orders, when and with what claim.

- ``serial_refunder``: ordinary-looking accounts that ask for a refund on most orders
  (not as described, unused, other...), each claim plausible on its own.
- ``duplicate_refund``: a second request on an order already refunded (paid), days
  later, asking more than is left to refund (see ``outcomes``).
- ``redeemed_then_invalid``: a code redeemed at the issuer and credited to the buyer,
  then claimed invalid.
- ``credited_then_not_delivered``: game currency credited, then claimed not delivered.
- ``prorated_overclaim``: a membership used for many days, cancelled claiming fewer.
- ``refund_ring``: young accounts sharing devices, IPs and payment accounts, buying codes
  and currency and refunding most of them within hours.
- ``fake_orders``: a colluding seller and a ring of young buyers placing orders on its
  products and refunding them.
- ``double_dip``: a refund followed weeks later by a chargeback of the same payment.

Opportunists (established accounts) commit the patterns on single orders; rings and
schemes are groups from ``population``.

Patterns that only randomised worlds switch on (``world_abusive_requests``):

- ``colluding_seller``, ``device_takeover``, ``payment_takeover``: orders placed through an
  entity while it is bad (see ``turned``), most of them asked back;
- ``account_burst``: orders of a burst of new accounts, most of them asked back;
- ``amount_band``: established accounts that abuse only orders in one amount band;
- ``late_exploit``: from late in the window, ordinary accounts claim a duplicate charge
  on orders that were charged once.
"""

from __future__ import annotations

import numpy as np

from riskmodel.simulator.catalog import Catalog
from riskmodel.simulator.common import (
    BAND_ABUSER,
    BANK_CARD,
    CARD_CODE,
    DAY,
    DUPLICATE_CHARGE,
    EXPLOITER,
    GAME_CURRENCY,
    HOUR,
    INVALID_CODE,
    MEMBERSHIP,
    MINUTE,
    MISSING,
    NOT_DELIVERED,
    OPPORTUNIST,
    PARTIAL_USE,
    SERIAL,
    SERVICE,
    UNUSED,
    Array,
    choice_codes,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import (
    BURST_ORDER,
    COLLUSION_ORDER,
    DEVICE_TAKEOVER_ORDER,
    PAYMENT_TAKEOVER_ORDER,
    REGULAR,
    RING_ORDER,
    SCHEME_ORDER,
    Orders,
    new_orders,
    pick_products,
)
from riskmodel.simulator.patterns import Pattern
from riskmodel.simulator.population import Group, Population
from riskmodel.simulator.requests import Picker, Requests, draw_reasons

__all__ = [
    "abusive_requests",
    "cancellation_time",
    "duplicate_refunds",
    "group_orders",
    "late_exploit_start",
    "world_abusive_requests",
]

# Reason weights in ``common.REASONS`` order: not_delivered, invalid_code,
# not_as_described, unused, partial_use, duplicate_charge, other.
_RING_REASONS = (0.35, 0.35, 0.15, 0.1, 0.0, 0.0, 0.05)
_SCHEME_REASONS = (0.3, 0.0, 0.4, 0.0, 0.0, 0.0, 0.3)
_SERIAL_REASONS = (0.15, 0.1, 0.3, 0.25, 0.0, 0.0, 0.2)
_DOUBLE_DIP_REASONS = (0.3, 0.0, 0.4, 0.0, 0.0, 0.0, 0.3)
_COLLUSION_REASONS = (0.25, 0.45, 0.2, 0.0, 0.0, 0.0, 0.1)
_BAND_REASONS = (0.25, 0.15, 0.35, 0.1, 0.0, 0.0, 0.15)
# Rings buy what resells: codes and currency, and some services.
_RING_PRODUCT_MIX = (0.5, 0.0, 0.35, 0.15)
# A burst's accounts share a device now and then and an IP about half the time.
_BURST_DEVICE_SHARE = 0.15
_BURST_IP_SHARE = 0.5
_BURST_ORDERS_PER_ACCOUNT = 2.5


def _group_members_orders(
    pop: Population, group: Group, mean_orders: float, rng: np.random.Generator
) -> tuple[Array, Array]:
    """Buyer and payment time of each order of one group."""
    counts = 1 + rng.poisson(mean_orders - 1 if mean_orders > 1 else 0.0, len(group.members))
    user = np.repeat(group.members, counts)
    earliest = np.maximum(pop.registered[user], group.start)
    paid = earliest + uniform_seconds(rng, 0, np.maximum(group.end - earliest, 1))
    return user, paid


def _group_entities(
    pop: Population, group: Group, user: Array, rng: np.random.Generator
) -> tuple[Array, Array, Array]:
    """Device, IP and payment account of each order: mostly the group's shared ones,
    sometimes the member's own so that the group is not one solid block."""
    n = len(user)
    r = rng.random((3, n))
    device = np.where(
        r[0] < 0.8, group.devices[rng.integers(0, len(group.devices), n)], pop.device[user]
    )
    public = pop.public_ips[choice_codes(rng, pop.public_weights, n)]
    ip = np.where(r[1] < 0.85, group.ips[rng.integers(0, len(group.ips), n)], public)
    account = np.where(
        r[2] < 0.7, group.accounts[rng.integers(0, len(group.accounts), n)], pop.account[user]
    )
    return device, ip, account


def group_orders(
    pop: Population, cat: Catalog, cfg: SimulationConfig, rng: np.random.Generator
) -> Orders:
    """Orders of refund rings and fake-order schemes (the loop runs over groups only)."""
    parts: list[Orders] = []
    for group in pop.rings:
        user, paid = _group_members_orders(pop, group, cfg.ring_orders_per_account, rng)
        product = pick_products(cat, rng, choice_codes(rng, _RING_PRODUCT_MIX, len(user)))
        device, ip, account = _group_entities(pop, group, user, rng)
        parts.append(new_orders(pop, cat, user, product, paid, account, device, ip, RING_ORDER))
    for group, products in zip(pop.schemes, cat.fake_seller_products, strict=True):
        user, paid = _group_members_orders(pop, group, cfg.fake_orders_per_account, rng)
        product = products[rng.integers(0, len(products), len(user))]
        device, ip, account = _group_entities(pop, group, user, rng)
        parts.append(new_orders(pop, cat, user, product, paid, account, device, ip, SCHEME_ORDER))
    for group in pop.bursts:
        user, paid = _group_members_orders(pop, group, _BURST_ORDERS_PER_ACCOUNT, rng)
        product = pick_products(cat, rng, choice_codes(rng, _RING_PRODUCT_MIX, len(user)))
        n = len(user)
        r = rng.random((2, n))
        shared_device = group.devices[rng.integers(0, len(group.devices), n)]
        device = np.where(r[0] < _BURST_DEVICE_SHARE, shared_device, pop.device[user])
        public = pop.public_ips[choice_codes(rng, pop.public_weights, n)]
        ip = np.where(r[1] < _BURST_IP_SHARE, group.ips[rng.integers(0, len(group.ips), n)], public)
        account = pop.account[user]
        parts.append(new_orders(pop, cat, user, product, paid, account, device, ip, BURST_ORDER))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return new_orders(pop, cat, empty, empty, empty, empty, empty, empty, RING_ORDER)
    return Orders.concat(parts)


def cancellation_time(orders: Orders, index: Array, end: int, rng: np.random.Generator) -> Array:
    """When a member cancels a membership part way: 10-80 % into the part of its service
    period that the window covers, at least an hour after paying."""
    paid = orders.paid[index]
    covered = np.minimum(orders.service_days[index] * DAY, np.maximum(end - paid, HOUR))
    return paid + np.maximum(HOUR, uniform_seconds(rng, 0.1 * covered, 0.8 * covered))


def abusive_requests(
    picker: Picker,
    orders: Orders,
    pop: Population,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> None:
    """Pick the orders behind every first abusive request (before any honest one)."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    n = len(orders)
    ptype = orders.product_type
    kind = pop.kind[orders.user]
    delivered = orders.delivered >= 0

    idx = picker.pick((orders.origin == RING_ORDER) & (rng.random(n) < cfg.ring_refund_rate))
    picker.add(
        idx,
        orders.paid[idx] + uniform_seconds(rng, 30 * MINUTE, 2 * DAY, len(idx)),
        draw_reasons(rng, _RING_REASONS, ptype[idx]),
        Pattern.REFUND_RING,
    )
    idx = picker.pick(
        (orders.origin == SCHEME_ORDER) & (rng.random(n) < cfg.fake_order_refund_rate)
    )
    picker.add(
        idx,
        orders.paid[idx] + uniform_seconds(rng, HOUR, 3 * DAY, len(idx)),
        draw_reasons(rng, _SCHEME_REASONS, ptype[idx]),
        Pattern.FAKE_ORDERS,
    )

    regular = orders.origin == REGULAR
    idx = picker.pick(regular & (kind == SERIAL) & (rng.random(n) < cfg.serial_refund_rate))
    reason = draw_reasons(rng, _SERIAL_REASONS, ptype[idx])
    claimed = np.where((reason == UNUSED) & (ptype[idx] == MEMBERSHIP), 0, MISSING)
    picker.add(
        idx,
        orders.paid[idx] + uniform_seconds(rng, HOUR, 5 * DAY, len(idx)),
        reason,
        Pattern.SERIAL_REFUNDER,
        claimed=claimed,
    )
    # A serial refunder claiming a code unused or invalid has not redeemed it here (it was
    # passed on): the issuer shows nothing, as for an honest claim.
    unredeemed = idx[(ptype[idx] == CARD_CODE) & ((reason == UNUSED) | (reason == INVALID_CODE))]
    orders.redeemed[unredeemed] = MISSING

    opportunist = regular & (kind == OPPORTUNIST)
    r = rng.random((4, n))
    # A code sold already used was redeemed before its buyer paid, not by the buyer. (A
    # code sold used or never credited is made so only if no request was picked on it
    # before, see ``refunds.lookalike_requests``: every code redeemed here was credited.)
    redeemed = (orders.redeemed >= 0) & (orders.redeemed >= orders.paid)
    idx = picker.pick(
        opportunist & (ptype == CARD_CODE) & redeemed & (r[0] < cfg.redeemed_then_invalid_rate)
    )
    picker.add(
        idx,
        orders.redeemed[idx] + uniform_seconds(rng, 10 * MINUTE, 3 * DAY, len(idx)),
        INVALID_CODE,
        Pattern.REDEEMED_THEN_INVALID,
    )
    idx = picker.pick(
        opportunist
        & (ptype == GAME_CURRENCY)
        & redeemed
        & (r[1] < cfg.credited_then_not_delivered_rate)
    )
    picker.add(
        idx,
        orders.redeemed[idx] + uniform_seconds(rng, 10 * MINUTE, 2 * DAY, len(idx)),
        NOT_DELIVERED,
        Pattern.CREDITED_THEN_NOT_DELIVERED,
    )
    idx = picker.pick(
        opportunist & (ptype == MEMBERSHIP) & delivered & (r[2] < cfg.prorated_overclaim_rate)
    )
    # ``claimed`` is set from the real usage once it is known (see ``refunds``).
    picker.add(
        idx, cancellation_time(orders, idx, end, rng), PARTIAL_USE, Pattern.PRORATED_OVERCLAIM
    )

    # Chargebacks are a card-network remedy, so double dips are mostly bank-card payments.
    dip_rate = np.where(orders.method == BANK_CARD, cfg.double_dip_rate, cfg.double_dip_rate / 10)
    idx = picker.pick(opportunist & delivered & (ptype != SERVICE) & (r[3] < dip_rate))
    picker.add(
        idx,
        orders.paid[idx] + uniform_seconds(rng, HOUR, 5 * DAY, len(idx)),
        draw_reasons(rng, _DOUBLE_DIP_REASONS, ptype[idx]),
        Pattern.DOUBLE_DIP,
    )


def world_abusive_requests(
    picker: Picker,
    orders: Orders,
    pop: Population,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> None:
    """Pick the orders behind the abusive patterns that only worlds switch on (after
    ``abusive_requests``, before any honest request). Draws nothing when they are off."""
    n = len(orders)
    ptype = orders.product_type
    paid = orders.paid
    turned = (
        (COLLUSION_ORDER, Pattern.COLLUDING_SELLER, _COLLUSION_REASONS, cfg.turned_refund_rate),
        (DEVICE_TAKEOVER_ORDER, Pattern.DEVICE_TAKEOVER, _RING_REASONS, cfg.turned_refund_rate),
        (PAYMENT_TAKEOVER_ORDER, Pattern.PAYMENT_TAKEOVER, _RING_REASONS, cfg.turned_refund_rate),
        (BURST_ORDER, Pattern.ACCOUNT_BURST, _RING_REASONS, cfg.burst_refund_rate),
    )
    for origin, pattern, weights, rate in turned:
        of_origin = orders.origin == origin
        if not of_origin.any():
            continue
        idx = picker.pick(of_origin & (rng.random(n) < rate))
        picker.add(
            idx,
            paid[idx] + uniform_seconds(rng, 30 * MINUTE, 3 * DAY, len(idx)),
            draw_reasons(rng, weights, ptype[idx]),
            pattern,
        )

    kind = pop.kind[orders.user]
    regular = orders.origin == REGULAR
    delivered = orders.delivered >= 0
    if cfg.band_abuser_share > 0:
        low, high = cfg.abuse_band
        in_band = (orders.amount >= low) & (orders.amount < high)
        chosen = regular & (kind == BAND_ABUSER) & in_band & delivered
        idx = picker.pick(chosen & (rng.random(n) < cfg.band_refund_rate))
        reason = draw_reasons(rng, _BAND_REASONS, ptype[idx])
        claimed = np.where((reason == UNUSED) & (ptype[idx] == MEMBERSHIP), 0, MISSING)
        picker.add(
            idx,
            paid[idx] + uniform_seconds(rng, HOUR, 4 * DAY, len(idx)),
            reason,
            Pattern.AMOUNT_BAND,
            claimed=claimed,
        )
    if cfg.late_exploiter_share > 0:
        begins = late_exploit_start(cfg)
        chosen = regular & (kind == EXPLOITER) & (paid >= begins) & delivered
        idx = picker.pick(chosen & (rng.random(n) < cfg.late_exploit_rate))
        picker.add(
            idx,
            paid[idx] + uniform_seconds(rng, 5 * MINUTE, 2 * DAY, len(idx)),
            DUPLICATE_CHARGE,
            Pattern.LATE_EXPLOIT,
        )


def late_exploit_start(cfg: SimulationConfig) -> int:
    """When the late exploit starts (seconds): no ``late_exploit`` request is earlier."""
    return int(cfg.start.timestamp()) + int(cfg.late_exploit_start * cfg.days * DAY)


def duplicate_refunds(
    first: Requests,
    orders: Orders,
    pop: Population,
    cfg: SimulationConfig,
    rng: np.random.Generator,
) -> Requests:
    """Second requests, by opportunists and serial refunders, on orders they already had
    refunded: the same amount again, days later, often with another reason. The first
    request is paid in full before it, and an amount within what is left to refund is
    raised to the whole price (``outcomes.settle_duplicates``)."""
    kind = pop.kind[orders.user[first.order]]
    chosen = np.flatnonzero(
        ((kind == OPPORTUNIST) | (kind == SERIAL))
        & (rng.random(len(first)) < cfg.duplicate_refund_rate)
    )
    second = first.take(chosen)
    second.requested = second.requested + uniform_seconds(rng, DAY, 10 * DAY, len(chosen))
    other = draw_reasons(rng, _SERIAL_REASONS, orders.product_type[second.order])
    second.reason = np.where(rng.random(len(chosen)) < 0.5, second.reason, other)
    second.claimed = np.where(second.reason == PARTIAL_USE, second.claimed, MISSING)
    second.claimed = np.where(
        (second.reason == UNUSED)
        & (second.claimed < 0)
        & (orders.product_type[second.order] == MEMBERSHIP),
        0,
        second.claimed,
    )
    second.pattern = np.full(len(chosen), Pattern.DUPLICATE_REFUND.code, dtype=np.int64)
    return second
