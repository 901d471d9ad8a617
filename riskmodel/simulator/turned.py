"""Entities that turn bad for a few weeks: a seller, a device, a payment account.

Each is honest before and after its bad spell (``turned_days``), and most orders placed
through it during the spell are asked back (``turned_refund_rate``):

- a colluding seller (``colluding_seller_share``): an ordinary seller with an honest
  history and honest buyers; during the spell a few established accounts, its
  accomplices, buy its codes and ask them back. The seller delivers at once and keeps the
  codes to sell them again, so the buyer never redeems them;
- a taken-over device (``device_takeover_share``): an honest account's own device is
  taken over; during the spell its owner's account and a few other established accounts
  (taken over too) buy codes and currency through it, from its home IP, paying with
  their own payment accounts;
- a taken-over payment account (``payment_takeover_share``): an honest account's payment
  account is taken over; a few other established accounts pay with it from their own
  devices.

Accomplices and taken-over accounts are ordinary accounts otherwise: the rest of their
history is honest. Nothing is drawn when the three shares are zero.

    >>> import numpy as np
    >>> from riskmodel.simulator.catalog import build_catalog
    >>> from riskmodel.simulator.config import SimulationConfig
    >>> from riskmodel.simulator.population import build_population
    >>> cfg = SimulationConfig(users=2_000, days=60, device_takeover_share=0.001)
    >>> rng = np.random.default_rng(0)
    >>> pop = build_population(cfg, rng)
    >>> cat = build_catalog(cfg, rng, int(cfg.start.timestamp()), len(pop.schemes))
    >>> [t.origin for t in draw_turns(pop, cat, cfg, rng)]
    [5, 5]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskmodel.simulator.catalog import Catalog
from riskmodel.simulator.common import (
    CARD_CODE,
    DAY,
    HONEST,
    Array,
    choice_codes,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.orders import (
    COLLUSION_ORDER,
    DEVICE_TAKEOVER_ORDER,
    PAYMENT_TAKEOVER_ORDER,
    RING_ORDER,
    Orders,
    new_orders,
    pick_products,
    usual_device_ip,
)
from riskmodel.simulator.population import Population

__all__ = ["Turn", "draw_turns", "turned_orders"]

# Accounts buying through one bad entity: (fewest, most).
_MEMBERS = {COLLUSION_ORDER: (3, 10), DEVICE_TAKEOVER_ORDER: (3, 8), PAYMENT_TAKEOVER_ORDER: (2, 6)}
_ORDERS_PER_MEMBER = 3.0
# What is bought through a taken-over device or payment account: what resells.
_TAKEOVER_PRODUCT_MIX = (0.55, 0.0, 0.35, 0.1)
# Share of a taken-over device's orders from its home IP (the rest from public networks).
_HOME_IP_SHARE = 0.85


@dataclass(frozen=True)
class Turn:
    """One entity's bad spell."""

    origin: int
    """COLLUSION_ORDER, DEVICE_TAKEOVER_ORDER or PAYMENT_TAKEOVER_ORDER (see ``orders``)."""
    entity: int
    """The seller, device or payment account index."""
    members: Array
    """Accounts that buy through it during the spell; for a device, its owner first."""
    start: int
    end: int


def _count(share: float, population: int) -> int:
    return max(1, round(share * population)) if share > 0 else 0


def draw_turns(
    pop: Population, cat: Catalog, cfg: SimulationConfig, rng: np.random.Generator
) -> tuple[Turn, ...]:
    """Which entities turn bad, when, and which accounts buy through them."""
    start = int(cfg.start.timestamp())
    established = np.flatnonzero((pop.kind == HONEST) & (pop.registered < start))
    honest_sellers = cat.n_sellers - len(cat.fake_seller_products)
    counts = (
        (COLLUSION_ORDER, _count(cfg.colluding_seller_share, honest_sellers)),
        (DEVICE_TAKEOVER_ORDER, _count(cfg.device_takeover_share, cfg.users)),
        (PAYMENT_TAKEOVER_ORDER, _count(cfg.payment_takeover_share, cfg.users)),
    )
    if len(established) < 12 or not any(count for _, count in counts):
        return ()
    card = cat.product_type == CARD_CODE
    card_sellers = np.unique(cat.seller[card & (cat.seller < honest_sellers)])
    sellers = rng.permutation(card_sellers)
    turns: list[Turn] = []
    for origin, count in counts:
        for k in range(count):
            low, high = cfg.turned_days
            length = min(int(rng.integers(low, high + 1)), cfg.days) * DAY
            begin = start + int(uniform_seconds(rng, 0, cfg.days * DAY - length + 1))
            fewest, most = _MEMBERS[origin]
            size = int(rng.integers(fewest, most + 1)) + 1
            chosen = rng.choice(established, size=size, replace=False)
            if origin == COLLUSION_ORDER:
                if k >= len(sellers):
                    break
                entity, members = int(sellers[k]), chosen[1:]
            elif origin == DEVICE_TAKEOVER_ORDER:
                entity, members = int(pop.device[chosen[0]]), chosen[:-1]
            else:
                entity, members = int(pop.account[chosen[0]]), chosen[1:]
            turns.append(Turn(origin, entity, members, begin, begin + length))
    return tuple(turns)


def turned_orders(
    turns: tuple[Turn, ...],
    pop: Population,
    cat: Catalog,
    rng: np.random.Generator,
) -> Orders:
    """The orders placed through each entity during its spell (a loop over spells only)."""
    parts: list[Orders] = []
    for turn in turns:
        per_member = 1 + rng.poisson(_ORDERS_PER_MEMBER - 1, len(turn.members))
        user = np.repeat(turn.members, per_member)
        n = len(user)
        paid = turn.start + uniform_seconds(rng, 0, turn.end - turn.start, n)
        account = pop.account[user]
        if turn.origin == COLLUSION_ORDER:
            own = np.flatnonzero(cat.seller == turn.entity)
            codes = own[cat.product_type[own] == CARD_CODE]
            stock = codes if len(codes) else own
            product = stock[rng.integers(0, len(stock), n)]
            device, ip = usual_device_ip(pop, rng, user)
        else:
            product = pick_products(cat, rng, choice_codes(rng, _TAKEOVER_PRODUCT_MIX, n))
            device, ip = usual_device_ip(pop, rng, user)
        if turn.origin == DEVICE_TAKEOVER_ORDER:
            device = np.full(n, turn.entity, dtype=np.int64)
            home = pop.home_ip[turn.members[0]]
            ip = np.where(rng.random(n) < _HOME_IP_SHARE, home, ip)
        elif turn.origin == PAYMENT_TAKEOVER_ORDER:
            account = np.full(n, turn.entity, dtype=np.int64)
        parts.append(new_orders(pop, cat, user, product, paid, account, device, ip, turn.origin))
    if not parts:
        empty = np.empty(0, dtype=np.int64)
        return new_orders(pop, cat, empty, empty, empty, empty, empty, empty, RING_ORDER)
    return Orders.concat(parts)
