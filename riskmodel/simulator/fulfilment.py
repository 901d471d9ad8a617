"""Delivery and redemption: what happened to each order after it was paid.

Most orders are delivered within seconds (services within hours). A few are late (hours to
days) or never delivered. Codes are redeemed at the game issuer a while after delivery,
except invalid ones (from a seller's bad batch or, rarely, any seller) which never redeem.
Game currency is credited at delivery (``redeemed_at`` = credited time). Anything that
would happen after the window is not known yet and stays null. A few codes are sold
already used (``sold_used_rate``): redeemed minutes to weeks *before* the buyer paid,
because the seller sold a used code or sold one code twice.

Whether the value reached the buyer is the issuer's word, next to the redemption: a code
redeemed by its buyer, or credited currency, is credited to the buyer's own account at
once (``credited``), except a few codes (``activation_failure_rate``) whose value never
arrives: the issuer reports the failure minutes later for ``activation_failed_share`` of
them (``activation_failed``), the others are simply never credited. A code sold already
used was redeemed into someone else's account: the buyer is credited nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskmodel.simulator.catalog import BadBatches
from riskmodel.simulator.common import (
    CARD_CODE,
    DAY,
    GAME_CURRENCY,
    HOUR,
    MINUTE,
    MISSING,
    SERVICE,
    Array,
    lognormal_seconds,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import COLLUSION_ORDER, DUPLICATE, REGULAR, SCHEME_ORDER, Orders

__all__ = ["Fulfilment", "activation_failures", "fulfil", "record_credits"]


@dataclass(frozen=True)
class Fulfilment:
    """Per-order facts that drive honest refunds (the delivery times live on ``Orders``)."""

    late: Array
    never: Array
    invalid: Array
    in_bad_batch: Array
    sold_used: Array
    """Card codes sold already used (redeemed before their buyer paid)."""
    sold_used_at: Array
    """When each code sold used was redeemed (``MISSING`` for the others); applied to
    ``orders.redeemed`` only where no request was picked on the order before (see
    ``refunds.lookalike_requests``)."""


def _in_bad_batch(orders: Orders, batches: BadBatches) -> Array:
    """Card codes paid inside their seller's bad batch window (a seller has one at most)."""
    if not len(orders):
        return np.zeros(0, dtype=bool)
    sellers = int(max(orders.seller.max(), batches.seller.max(initial=-1))) + 1
    begin = np.full(sellers, np.iinfo(np.int64).max)
    finish = np.full(sellers, np.iinfo(np.int64).min)
    begin[batches.seller] = batches.start
    finish[batches.seller] = batches.end
    card = orders.product_type == CARD_CODE
    paid = orders.paid
    inside: Array = card & (paid >= begin[orders.seller]) & (paid < finish[orders.seller])
    return inside


def fulfil(
    orders: Orders, batches: BadBatches, cfg: SimulationConfig, rng: np.random.Generator
) -> Fulfilment:
    """Fill ``orders.delivered`` and ``orders.redeemed`` and say which orders went wrong.

    Example (with orders from ``orders.regular_orders``)::

        facts = fulfil(orders, catalog.batches, cfg, rng)
        orders.delivered[facts.never]  # all MISSING
    """
    n = len(orders)
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    service = orders.product_type == SERVICE
    lag = np.where(
        service, lognormal_seconds(rng, 2 * HOUR, 1.0, n), lognormal_seconds(rng, 20, 1.0, n)
    )
    # A colluding seller marks its fake orders delivered at once; a duplicate charge is
    # the same purchase, so it is delivered when its original was.
    reliable = np.isin(orders.origin, (SCHEME_ORDER, DUPLICATE, COLLUSION_ORDER))
    r = rng.random((2, n))
    never = ~reliable & (r[0] < cfg.undelivered_rate)
    late = ~reliable & ~never & (r[1] < cfg.late_delivery_rate)
    lag = np.where(late, uniform_seconds(rng, 2 * HOUR, 72 * HOUR, n), lag)
    delivered = np.where(never, MISSING, orders.paid + lag)

    card = (orders.product_type == CARD_CODE) & ~never
    in_batch = _in_bad_batch(orders, batches) & card
    r = rng.random((3, n))
    invalid = card & (
        (in_batch & (r[0] < cfg.bad_batch_invalid_rate)) | (r[1] < cfg.invalid_code_base_rate)
    )
    redeem_lag = lognormal_seconds(rng, 30 * 60, 2.0, n)
    redeemed = np.where(
        card & ~invalid & (r[2] >= cfg.never_redeemed_rate), delivered + redeem_lag, MISSING
    )
    currency = (orders.product_type == GAME_CURRENCY) & ~never
    redeemed = np.where(currency, delivered, redeemed)
    # The second charge of a duplicate brought no second code or credit into use; a
    # seller turned bad keeps the codes its accomplices buy (to sell them again).
    redeemed = np.where(np.isin(orders.origin, (DUPLICATE, COLLUSION_ORDER)), MISSING, redeemed)

    orders.delivered = np.where(delivered < end, delivered, MISSING)
    orders.redeemed = np.where((redeemed >= 0) & (redeemed < end), redeemed, MISSING)
    sold_used = np.zeros(n, dtype=bool)
    sold_used_at = np.full(n, MISSING, dtype=np.int64)
    if cfg.sold_used_rate > 0:  # no draw otherwise
        usable = card & ~invalid & (orders.origin == REGULAR) & (orders.delivered >= 0)
        sold_used = usable & (rng.random(n) < cfg.sold_used_rate)
        before = uniform_seconds(rng, 10 * MINUTE, 30 * DAY, n)
        sold_used_at = np.where(sold_used, orders.paid - before, MISSING)
    return Fulfilment(
        late=late,
        never=never,
        invalid=invalid,
        in_bad_batch=in_batch & invalid,
        sold_used=sold_used,
        sold_used_at=sold_used_at,
    )


def activation_failures(orders: Orders, cfg: SimulationConfig, rng: np.random.Generator) -> Array:
    """Card codes redeemed by their buyer whose value would never reach the buyer's
    account; made so only where no request was picked on the order before (see
    ``refunds.lookalike_requests``), so that every code an abuser claims was credited."""
    by_buyer = (orders.product_type == CARD_CODE) & (orders.origin == REGULAR)
    by_buyer &= (orders.redeemed >= 0) & (orders.redeemed >= orders.paid)
    failed: Array = by_buyer & (rng.random(len(orders)) < cfg.activation_failure_rate)
    return failed


def record_credits(
    orders: Orders, failed: Array, cfg: SimulationConfig, rng: np.random.Generator
) -> None:
    """Fill ``orders.credited`` and ``orders.activation_failed`` from the final
    redemptions (after the requests, which may revoke a code returned unused).

    Only ``credit_report_rate`` of orders keep the issuer's word when it is below 1.
    """
    n = len(orders)
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    redeemed = orders.redeemed
    by_buyer = (redeemed >= 0) & (redeemed >= orders.paid)
    failed = failed & by_buyer & (orders.product_type == CARD_CODE)
    credited = np.where(by_buyer & ~failed, redeemed, MISSING)
    reported = rng.random(n) < cfg.activation_failed_share
    failed_at = redeemed + lognormal_seconds(rng, 2 * MINUTE, 2.0, n)
    failed_at = np.where(failed & reported & (failed_at < end), failed_at, MISSING)
    if 0 < cfg.credit_report_rate < 1:  # no draw otherwise
        known = rng.random(n) < cfg.credit_report_rate
        credited = np.where(known, credited, MISSING)
        failed_at = np.where(known, failed_at, MISSING)
    orders.credited = credited.astype(np.int64)
    orders.activation_failed = failed_at.astype(np.int64)
