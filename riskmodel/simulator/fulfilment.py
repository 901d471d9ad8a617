"""Delivery and redemption: what happened to each order after it was paid.

Most orders are delivered within seconds (services within hours). A few are late (hours to
days) or never delivered. Codes are redeemed at the game issuer a while after delivery,
except invalid ones (from a seller's bad batch or, rarely, any seller) which never redeem.
Game currency is credited at delivery (``redeemed_at`` = credited time). Anything that
would happen after the window is not known yet and stays null.
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
    MISSING,
    SERVICE,
    Array,
    lognormal_seconds,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import DUPLICATE, SCHEME_ORDER, Orders

__all__ = ["Fulfilment", "fulfil"]


@dataclass(frozen=True)
class Fulfilment:
    """Per-order facts that drive honest refunds (the delivery times live on ``Orders``)."""

    late: Array
    never: Array
    invalid: Array
    in_bad_batch: Array


def _in_bad_batch(orders: Orders, batches: BadBatches) -> Array:
    inside = np.zeros(len(orders), dtype=bool)
    card = orders.product_type == CARD_CODE
    for seller, begin, finish in zip(batches.seller, batches.start, batches.end, strict=True):
        inside |= card & (orders.seller == seller) & (orders.paid >= begin) & (orders.paid < finish)
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
    reliable = (orders.origin == SCHEME_ORDER) | (orders.origin == DUPLICATE)
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
    # The second charge of a duplicate brought no second code or credit into use.
    redeemed = np.where(orders.origin == DUPLICATE, MISSING, redeemed)

    orders.delivered = np.where(delivered < end, delivered, MISSING)
    orders.redeemed = np.where((redeemed >= 0) & (redeemed < end), redeemed, MISSING)
    return Fulfilment(late=late, never=never, invalid=invalid, in_bad_batch=in_batch & invalid)
