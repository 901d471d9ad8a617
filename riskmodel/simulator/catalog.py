"""Sellers, their products and their bad batches of codes.

Sellers stock products of every type; their popularity is heavy-tailed. Some card-code
sellers receive a bad batch: a window of days in which many of the codes they sell are
invalid, so that honest invalid_code refunds cluster on one seller and a few days. A
world may shift every price (``price_level``) and spread them with a heavy right tail
(``price_sigma``).

    >>> import numpy as np
    >>> from riskmodel.simulator.config import SimulationConfig
    >>> cat = build_catalog(SimulationConfig(users=1_000, days=30), np.random.default_rng(0), 0, 2)
    >>> cat.n_sellers >= 10
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskmodel.simulator.common import (
    CARD_CODE,
    DAY,
    GAME_CURRENCY,
    MEMBERSHIP,
    PRODUCT_TYPES,
    SERVICE,
    Array,
    choice_codes,
)
from riskmodel.simulator.config import SimulationConfig

__all__ = ["BadBatches", "Catalog", "build_catalog"]

_CARD_DENOMINATIONS = np.array([10, 20, 30, 50, 100, 200, 300, 500], dtype=np.float64)
_CARD_WEIGHTS = (0.08, 0.12, 0.2, 0.25, 0.18, 0.1, 0.04, 0.03)
_CURRENCY_PACKS = np.array([6, 30, 68, 128, 198, 328, 648], dtype=np.float64)
_CURRENCY_WEIGHTS = (0.3, 0.25, 0.15, 0.12, 0.08, 0.06, 0.04)
_SERVICE_DAYS = np.array([30, 90, 365], dtype=np.int64)
_LONG_TERM_DISCOUNT = np.array([1.0, 0.9, 0.75])


@dataclass(frozen=True)
class BadBatches:
    """One row per bad batch: a seller and the window in which its codes fail."""

    seller: Array
    start: Array
    end: Array


@dataclass(frozen=True)
class Catalog:
    """Products (one row each) and the sellers that stock them."""

    n_sellers: int
    seller: Array
    product_type: Array
    price: Array
    service_days: Array
    """Membership length in days; 0 for other products."""
    weight: Array
    """Popularity of the product within its product type (sums to 1 per type)."""
    batches: BadBatches
    fake_seller_products: tuple[Array, ...]
    """Products of each colluding seller of a fake-order scheme, one array per scheme."""


def build_catalog(
    cfg: SimulationConfig, rng: np.random.Generator, start: int, schemes: int
) -> Catalog:
    """Sellers and products, plus one colluding seller for each of ``schemes`` fake-order
    schemes (its few products are barely bought by honest users)."""
    honest_sellers = max(10, cfg.users // cfg.users_per_seller)
    per_seller = 1 + rng.poisson(cfg.products_per_seller - 1, honest_sellers)
    seller = np.repeat(np.arange(honest_sellers), per_seller)
    seller_pull = rng.lognormal(0.0, 1.2, honest_sellers)
    weight = seller_pull[seller] * rng.lognormal(0.0, 0.8, len(seller))
    ptype = choice_codes(rng, cfg.product_mix, len(seller))
    # A type absent from the draw would make the product mix unreachable.
    ptype[: len(PRODUCT_TYPES)] = np.arange(len(PRODUCT_TYPES))

    fake_products: list[Array] = []
    fake_seller: list[Array] = []
    fake_types: list[Array] = []
    next_product = len(seller)
    for k in range(schemes):
        count = int(rng.integers(2, 5))
        fake_products.append(np.arange(next_product, next_product + count))
        fake_seller.append(np.full(count, honest_sellers + k))
        # Cash-out schemes favour high-value codes and services that need no real delivery.
        fake_types.append(np.where(rng.random(count) < 0.5, CARD_CODE, SERVICE))
        next_product += count
    if schemes:
        seller = np.concatenate([seller, *fake_seller])
        ptype = np.concatenate([ptype, *fake_types])
        weight = np.concatenate([weight, np.full(next_product - len(weight), 1e-3)])

    price, service_days = _prices(rng, ptype, cfg.membership_days_mix)
    if schemes:
        fake = np.concatenate(fake_products)
        price[fake] = np.round(rng.choice([300.0, 500.0, 800.0, 1000.0], len(fake)), 2)
    # Skipped (no draw) at the defaults, so that the default market keeps its prices.
    if cfg.price_level != 1.0 or cfg.price_sigma > 0:
        spread = rng.lognormal(0.0, cfg.price_sigma, len(price)) if cfg.price_sigma > 0 else 1.0
        price = np.maximum(np.round(price * cfg.price_level * spread, 2), 0.5)
    for t in range(len(PRODUCT_TYPES)):
        of_type = ptype == t
        weight[of_type] = weight[of_type] / weight[of_type].sum()

    return Catalog(
        n_sellers=honest_sellers + schemes,
        seller=seller.astype(np.int64),
        product_type=ptype.astype(np.int64),
        price=price,
        service_days=service_days,
        weight=weight,
        batches=_bad_batches(cfg, rng, start, seller_pull),
        fake_seller_products=tuple(fake_products),
    )


def _prices(
    rng: np.random.Generator, ptype: Array, days_mix: tuple[float, ...]
) -> tuple[Array, Array]:
    n = len(ptype)
    price = np.zeros(n)
    service_days = np.zeros(n, dtype=np.int64)

    card = ptype == CARD_CODE
    denominations = _CARD_DENOMINATIONS[choice_codes(rng, _CARD_WEIGHTS, n)]
    price[card] = (denominations * rng.uniform(0.95, 1.0, n))[card]

    member = ptype == MEMBERSHIP
    length = choice_codes(rng, days_mix, n)
    monthly = rng.uniform(12.0, 30.0, n)
    member_price = np.round(monthly * _SERVICE_DAYS[length] / 30 * _LONG_TERM_DISCOUNT[length])
    price[member] = (member_price - 0.01)[member]
    service_days[member] = _SERVICE_DAYS[length][member]

    currency = ptype == GAME_CURRENCY
    price[currency] = _CURRENCY_PACKS[choice_codes(rng, _CURRENCY_WEIGHTS, n)][currency]

    service = ptype == SERVICE
    price[service] = np.clip(rng.lognormal(np.log(40.0), 0.8, n), 5.0, 500.0)[service]
    return np.round(price, 2), service_days


def _bad_batches(
    cfg: SimulationConfig, rng: np.random.Generator, start: int, seller_pull: Array
) -> BadBatches:
    sellers = len(seller_pull)
    count = round(sellers * cfg.bad_batch_seller_share)
    # Sellers that move more stock source more batches, so they are hit more often.
    chosen = np.sort(
        rng.choice(sellers, size=count, replace=False, p=seller_pull / seller_pull.sum())
    )
    low, high = cfg.bad_batch_days
    length = rng.uniform(low, high, count) * DAY
    begin = start + rng.uniform(0.0, 1.0, count) * np.maximum(cfg.days * DAY - length, 0)
    return BadBatches(
        seller=chosen.astype(np.int64),
        start=np.floor(begin).astype(np.int64),
        end=np.floor(begin + length).astype(np.int64),
    )
