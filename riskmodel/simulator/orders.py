"""Orders of ordinary accounts: when they buy, what, how they pay, from where.

Buyer activity is heavy-tailed (log-normal rate per account), so a few trusted accounts
buy very often. Purchases follow a daily rhythm in China time, and in some worlds a weekly
cycle and a sales event (``Seasons``). Most purchases use the
account's own device, home IP and payment account; household members sometimes use the
shared device or payment account, and everyone is sometimes on a shared public IP.
Honest duplicate charges are a copy of a purchase minutes later.

    >>> import numpy as np
    >>> from riskmodel.simulator.catalog import build_catalog
    >>> from riskmodel.simulator.config import SimulationConfig
    >>> from riskmodel.simulator.population import build_population
    >>> cfg = SimulationConfig(users=1_000, days=30)
    >>> rng = np.random.default_rng(0)
    >>> pop = build_population(cfg, rng)
    >>> cat = build_catalog(cfg, rng, int(cfg.start.timestamp()), len(pop.schemes))
    >>> len(regular_orders(pop, cat, cfg, rng)) > 0
    True
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta

import numpy as np

from riskmodel.simulator.catalog import Catalog
from riskmodel.simulator.common import (
    BURST,
    DAY,
    FAKE_BUYER,
    HOUR,
    MINUTE,
    MISSING,
    PRODUCT_TYPES,
    RING,
    Array,
    choice_codes,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig
from riskmodel.simulator.population import Population

__all__ = [
    "BURST_ORDER",
    "COLLUSION_ORDER",
    "DEVICE_TAKEOVER_ORDER",
    "DUPLICATE",
    "PAYMENT_TAKEOVER_ORDER",
    "REGULAR",
    "RING_ORDER",
    "SCHEME_ORDER",
    "TURNED_ORIGINS",
    "Orders",
    "Seasons",
    "duplicate_charges",
    "new_orders",
    "pick_products",
    "regular_orders",
    "usual_device_ip",
]

# Where an order comes from.
REGULAR, DUPLICATE, RING_ORDER, SCHEME_ORDER = range(4)
# Origins that only randomised worlds produce: orders through an entity while it is bad
# (a colluding seller, a taken-over device or payment account) and orders of bursts.
COLLUSION_ORDER, DEVICE_TAKEOVER_ORDER, PAYMENT_TAKEOVER_ORDER, BURST_ORDER = range(4, 8)
TURNED_ORIGINS = (COLLUSION_ORDER, DEVICE_TAKEOVER_ORDER, PAYMENT_TAKEOVER_ORDER)

# Relative purchase activity per hour of the day in China (UTC+8): evenings are busiest.
_LOCAL_HOUR_WEIGHTS = (
    0.6, 0.4, 0.25, 0.15, 0.1, 0.1, 0.2, 0.4, 0.7, 0.9, 1.0, 1.1,
    1.2, 1.0, 1.0, 1.0, 1.1, 1.2, 1.3, 1.5, 1.7, 1.8, 1.6, 1.1,
)  # fmt: skip
_UTC_OFFSET_HOURS = 8


@dataclass
class Orders:
    """One element per order, in generation order (``output`` sorts them)."""

    user: Array
    product: Array
    product_type: Array
    amount: Array
    paid: Array
    seller: Array
    account: Array
    method: Array
    device: Array
    ip: Array
    service_days: Array
    origin: Array
    """REGULAR, DUPLICATE, RING_ORDER, SCHEME_ORDER or one of the world origins."""
    delivered: Array
    redeemed: Array
    credited: Array
    """When the value reached the buyer's own account (``MISSING``: never, or not yet)."""
    activation_failed: Array
    """When the issuer reported that the value failed to reach the buyer (``MISSING``: no
    such report)."""

    def __len__(self) -> int:
        return len(self.user)

    @classmethod
    def concat(cls, parts: list[Orders]) -> Orders:
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def take(self, index: Array) -> Orders:
        return Orders(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def new_orders(
    pop: Population,
    cat: Catalog,
    user: Array,
    product: Array,
    paid: Array,
    account: Array,
    device: Array,
    ip: Array,
    origin: int,
) -> Orders:
    """Orders with the product's attributes filled in and nothing delivered yet."""
    n = len(user)
    return Orders(
        user=user.astype(np.int64),
        product=product.astype(np.int64),
        product_type=cat.product_type[product],
        amount=cat.price[product],
        paid=paid.astype(np.int64),
        seller=cat.seller[product],
        account=account.astype(np.int64),
        method=pop.account_method[account],
        device=device.astype(np.int64),
        ip=ip.astype(np.int64),
        service_days=cat.service_days[product],
        origin=np.full(n, origin, dtype=np.int64),
        delivered=np.full(n, MISSING, dtype=np.int64),
        redeemed=np.full(n, MISSING, dtype=np.int64),
        credited=np.full(n, MISSING, dtype=np.int64),
        activation_failed=np.full(n, MISSING, dtype=np.int64),
    )


def pick_products(cat: Catalog, rng: np.random.Generator, product_type: Array) -> Array:
    """A product of each requested type, by popularity."""
    product = np.empty(len(product_type), dtype=np.int64)
    for t in range(len(PRODUCT_TYPES)):
        wanted = np.flatnonzero(product_type == t)
        of_type = np.flatnonzero(cat.product_type == t)
        cumulative = np.cumsum(cat.weight[of_type])
        drawn = np.searchsorted(cumulative, rng.random(len(wanted)) * cumulative[-1], side="right")
        product[wanted] = of_type[np.minimum(drawn, len(of_type) - 1)]
    return product


def usual_device_ip(pop: Population, rng: np.random.Generator, user: Array) -> tuple[Array, Array]:
    """The device and IP an ordinary account uses for one action."""
    n = len(user)
    r = rng.random((3, n))
    device = pop.device[user]
    second = pop.second_device[user]
    device = np.where((second >= 0) & (r[0] < 0.25), second, device)
    shared = pop.household_device[user]
    device = np.where((shared >= 0) & (r[1] < 0.3), shared, device)

    away = r[2] < pop.public_share[user]
    # Away from home an account mostly returns to its usual public network (campus,
    # carrier), sometimes another one.
    favourite = rng.random(n) < 0.7
    any_public = pop.public_ips[choice_codes(rng, pop.public_weights, n)]
    public = np.where(favourite, pop.public_ip[user], any_public)
    ip = np.where(away, public, pop.home_ip[user])
    return device, ip


def _usual_account(pop: Population, rng: np.random.Generator, user: Array) -> Array:
    r = rng.random((2, len(user)))
    account = pop.account[user]
    second = pop.second_account[user]
    account = np.where((second >= 0) & (r[0] < 0.25), second, account)
    shared = pop.household_account[user]
    return np.where((shared >= 0) & (r[1] < 0.4), shared, account)


def _daily_rhythm(rng: np.random.Generator, t: Array, earliest: Array, end: int) -> Array:
    """Move each time to an hour of its day drawn from the daily rhythm; a time that would
    leave the account's active span keeps its uniform draw."""
    local_hour = choice_codes(rng, _LOCAL_HOUR_WEIGHTS, len(t))
    utc_hour = (local_hour - _UTC_OFFSET_HOURS) % 24
    moved = t - t % DAY + utc_hour * HOUR + uniform_seconds(rng, 0, HOUR, len(t))
    return np.where((moved >= earliest) & (moved < end), moved, t)


class Seasons:
    """Purchase activity by day of the window: a weekly cycle and a sales event.

    Activity is measured in days of average activity from the start of the window;
    ``time_at`` inverts ``mass_at``, so uniform masses give times as likely as each
    day's weight.
    """

    def __init__(self, cfg: SimulationConfig) -> None:
        self.start = int(cfg.start.timestamp())
        self.days = cfg.days
        day = np.arange(cfg.days)
        local = cfg.start + timedelta(hours=_UTC_OFFSET_HOURS)
        weekday = (day + local.weekday()) % 7
        weight = 1.0 + cfg.weekly_amplitude * np.cos(2 * np.pi * (weekday - 5.5) / 7)
        peak_first = int(cfg.sales_peak_at * cfg.days)
        peak = (day >= peak_first) & (day < peak_first + cfg.sales_peak_length)
        self.weight: Array = np.where(peak, weight * (1.0 + cfg.sales_peak_lift), weight)
        self.cumulative: Array = np.concatenate([[0.0], np.cumsum(self.weight)])

    @property
    def total(self) -> float:
        return float(self.cumulative[-1])

    def mass_at(self, t: Array) -> Array:
        """Activity from the start of the window to each time ``t`` (seconds)."""
        days = (np.asarray(t, dtype=np.float64) - self.start) / DAY
        whole = np.clip(np.floor(days).astype(np.int64), 0, self.days - 1)
        mass: Array = self.cumulative[whole] + self.weight[whole] * (days - whole)
        return mass

    def time_at(self, mass: Array) -> Array:
        """The time (whole seconds) at which the activity reaches each ``mass``."""
        day = np.searchsorted(self.cumulative, mass, side="right") - 1
        day = np.clip(day, 0, self.days - 1)
        days = day + (mass - self.cumulative[day]) / self.weight[day]
        seconds: Array = np.floor(self.start + days * DAY).astype(np.int64)
        return seconds


def regular_orders(
    pop: Population, cat: Catalog, cfg: SimulationConfig, rng: np.random.Generator
) -> Orders:
    """Every purchase of ordinary accounts (honest, opportunist, serial refunders, band
    abusers and exploiters)."""
    start = int(cfg.start.timestamp())
    end = start + cfg.days * DAY
    buyers = np.flatnonzero(~np.isin(pop.kind, (RING, FAKE_BUYER, BURST)))
    active_from = np.maximum(pop.registered[buyers], start)
    span = end - active_from
    if cfg.weekly_amplitude > 0 or cfg.sales_peak_lift > 0:
        seasons = Seasons(cfg)
        begin = seasons.mass_at(active_from)
        mass = seasons.total - begin
        counts = rng.poisson(pop.activity[buyers] * mass / 30)
        user = np.repeat(buyers, counts)
        first = np.repeat(active_from, counts)
        target = np.repeat(begin, counts) + rng.random(len(user)) * np.repeat(mass, counts)
        paid = np.clip(seasons.time_at(target), first, end - 1)
    else:
        counts = rng.poisson(pop.activity[buyers] * span / (30 * DAY))
        user = np.repeat(buyers, counts)
        first = np.repeat(active_from, counts)
        paid = first + uniform_seconds(rng, 0, np.repeat(span, counts))
    paid = _daily_rhythm(rng, paid, first, end)
    product = pick_products(cat, rng, choice_codes(rng, cfg.product_mix, len(user)))
    device, ip = usual_device_ip(pop, rng, user)
    account = _usual_account(pop, rng, user)
    return new_orders(pop, cat, user, product, paid, account, device, ip, REGULAR)


def duplicate_charges(orders: Orders, cfg: SimulationConfig, rng: np.random.Generator) -> Orders:
    """Second charges of the same purchase, seconds to minutes after the first."""
    end = int(cfg.start.timestamp()) + cfg.days * DAY
    chosen = np.flatnonzero(
        (orders.origin == REGULAR) & (rng.random(len(orders)) < cfg.duplicate_charge_rate)
    )
    copies = orders.take(chosen)
    copies.paid = copies.paid + uniform_seconds(rng, 30, 10 * MINUTE, len(chosen))
    copies.origin = np.full(len(chosen), DUPLICATE, dtype=np.int64)
    return copies.take(np.flatnonzero(copies.paid < end))
