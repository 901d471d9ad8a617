"""Accounts and the things they share: devices, IPs, payment accounts, households, rings.

Ordinary accounts have their own device (sometimes two), a home IP and one or two
payment accounts. Honest sharing is common on purpose: households of 2-5 accounts share a
device and a home IP (sometimes a payment account), and a small pool of public IPs
(campus, cafe, carrier NAT) is used by many honest accounts, so that a naive "shared IP"
rule hurts honest users. Refund rings and fake-order schemes are groups of young accounts
registered within days of each other that share a few devices, IPs and payment accounts;
bursts (a world's option) are larger groups of young accounts that share far less.

Entities are integer indices; ``output`` turns them into readable identifiers.

    >>> import numpy as np
    >>> from riskmodel.simulator.config import SimulationConfig
    >>> pop = build_population(SimulationConfig(users=1_000, days=30), np.random.default_rng(0))
    >>> len(pop.registered)
    1000
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from riskmodel.simulator.common import (
    BAND_ABUSER,
    BURST,
    DAY,
    EXPLOITER,
    FAKE_BUYER,
    HONEST,
    HOUR,
    MISSING,
    OPPORTUNIST,
    RING,
    SERIAL,
    Array,
    choice_codes,
    uniform_seconds,
)
from riskmodel.simulator.config import SimulationConfig

__all__ = ["Group", "Population", "build_population"]

# First octets of address blocks held by large Chinese carriers and clouds: plausible
# public addresses, none of them private or reserved.
_FIRST_OCTETS = np.array(
    [36, 39, 42, 49, 58, 59, 60, 61, 101, 106, 110, 111, 112, 113, 114, 115, 116, 117, 118,
     119, 120, 121, 122, 123, 124, 125, 171, 175, 180, 182, 183, 211, 218, 219, 220, 221,
     222, 223],
    dtype=np.int64,
)  # fmt: skip


@dataclass(frozen=True)
class Group:
    """A refund ring or a fake-order scheme: accounts and the entities they share."""

    members: Array
    devices: Array
    ips: Array
    accounts: Array
    start: int
    """When the group starts buying (seconds); members register just before."""
    end: int
    """When the group stops buying (seconds, at most the window end)."""


@dataclass(frozen=True)
class Population:
    """One row per account (arrays indexed by account) plus the shared entities."""

    registered: Array
    phone_verified: Array
    kind: Array
    """HONEST, OPPORTUNIST, SERIAL, RING, FAKE_BUYER, BAND_ABUSER, EXPLOITER or BURST
    (see ``common``)."""
    activity: Array
    """Mean orders per 30 days of ordinary accounts (0 for ring, scheme and burst members)."""
    propensity: Array
    """Multiplier (mean 1) on an account's discretionary honest refunds."""
    device: Array
    second_device: Array
    household_device: Array
    home_ip: Array
    public_ip: Array
    """The shared public IP an account uses when away from home."""
    public_share: Array
    account: Array
    second_account: Array
    household_account: Array
    account_method: Array
    """Payment method code of each payment account."""
    public_ips: Array
    public_weights: Array
    ip_numbers: Array
    """32-bit address of each IP index."""
    n_devices: int
    rings: tuple[Group, ...]
    schemes: tuple[Group, ...]
    bursts: tuple[Group, ...] = ()
    """Bursts of new accounts; their ``accounts`` is empty (each pays with its own)."""


class _Counter:
    """Hands out consecutive indices of one kind of entity."""

    def __init__(self) -> None:
        self.used = 0

    def take(self, count: int) -> Array:
        out = np.arange(self.used, self.used + count, dtype=np.int64)
        self.used += count
        return out


def _group_sizes(rng: np.random.Generator, total: int, size: tuple[int, int]) -> list[int]:
    """Split ``total`` accounts into groups; a remainder too small for a group joins the
    last one (and with no group at all, those accounts stay ordinary)."""
    sizes: list[int] = []
    left = total
    while left >= size[0]:
        s = min(int(rng.integers(size[0], size[1] + 1)), left)
        sizes.append(s)
        left -= s
    if left and sizes:
        sizes[-1] += left
    return sizes


def _registration(
    rng: np.random.Generator, cfg: SimulationConfig, start: int, existing: Array
) -> Array:
    n = len(existing)
    before = start - uniform_seconds(rng, HOUR, cfg.existing_user_max_age_days * DAY, n)
    during = start + uniform_seconds(rng, 0, 0.95 * cfg.days * DAY, n)
    return np.where(existing, before, during)


def _households(rng: np.random.Generator, cfg: SimulationConfig, kind: Array) -> Array:
    """Household index of each ordinary account, ``MISSING`` for one living alone."""
    eligible = np.flatnonzero(kind != SERIAL)
    chosen = rng.permutation(eligible)[: round(len(eligible) * cfg.household_share)]
    sizes = rng.integers(2, 6, len(chosen) // 2 + 1)
    full = int(np.searchsorted(np.cumsum(sizes), len(chosen), side="right"))
    used = int(sizes[:full].sum())
    household = np.full(len(kind), MISSING, dtype=np.int64)
    household[chosen[:used]] = np.repeat(np.arange(full), sizes[:full])
    return household


def _beta_around(rng: np.random.Generator, mean: float, n: int) -> Array:
    """Per-account shares spread widely around ``mean`` (some accounts are always on the
    move, others never leave home)."""
    if not 0 < mean < 1:
        return np.full(n, float(mean))
    a = 1.2
    return rng.beta(a, a * (1 - mean) / mean, n)


def _ip_numbers(rng: np.random.Generator, count: int) -> Array:
    """Distinct plausible public IPv4 addresses as 32-bit integers."""
    numbers = np.empty(0, dtype=np.int64)
    while len(numbers) < count:
        need = count - len(numbers)
        first = _FIRST_OCTETS[rng.integers(0, len(_FIRST_OCTETS), need)]
        middle = rng.integers(0, 1 << 16, need)
        last = rng.integers(1, 255, need)
        drawn = (first << 24) | (middle << 8) | last
        numbers = np.concatenate([numbers, drawn])
        _, first_seen = np.unique(numbers, return_index=True)
        numbers = numbers[np.sort(first_seen)]
    return numbers


def build_population(cfg: SimulationConfig, rng: np.random.Generator) -> Population:
    """Draw every account and its devices, IPs and payment accounts."""
    start = int(cfg.start.timestamp())
    end = start + cfg.days * DAY
    n = cfg.users
    ring_sizes = _group_sizes(rng, round(n * cfg.ring_account_share), cfg.ring_size)
    scheme_sizes = _group_sizes(
        rng, round(n * cfg.fake_order_account_share), cfg.fake_order_ring_size
    )
    burst_total = 0
    if cfg.burst_account_share > 0:
        burst_total = min(n // 2, max(cfg.burst_size[0], round(n * cfg.burst_account_share)))
    # Without bursts this draws nothing, so the other draws stay where they were.
    burst_sizes = _group_sizes(rng, burst_total, cfg.burst_size)
    n_serial = round(n * cfg.serial_refunder_share)
    n_opportunist = round(n * cfg.opportunist_share)
    n_band = round(n * cfg.band_abuser_share)
    n_exploiter = round(n * cfg.late_exploiter_share)
    n_grouped = sum(ring_sizes) + sum(scheme_sizes) + sum(burst_sizes)
    n_ordinary = n - n_grouped

    kind = np.full(n, HONEST, dtype=np.int64)
    # Which ordinary accounts are serial refunders, opportunists, band abusers or
    # exploiters is drawn at random, so that nothing about an account's position reveals it.
    special = rng.permutation(n_ordinary)
    taken = 0
    for special_kind, count in (
        (SERIAL, n_serial),
        (OPPORTUNIST, n_opportunist),
        (BAND_ABUSER, n_band),
        (EXPLOITER, n_exploiter),
    ):
        kind[special[taken : taken + count]] = special_kind
        taken += count
    first_scheme = n_ordinary + sum(ring_sizes)
    first_burst = first_scheme + sum(scheme_sizes)
    kind[n_ordinary:first_scheme] = RING
    kind[first_scheme:first_burst] = FAKE_BUYER
    kind[first_burst:] = BURST

    existing = rng.random(n_ordinary) < cfg.existing_user_share
    # Opportunists and band abusers are established accounts.
    existing |= np.isin(kind[:n_ordinary], (OPPORTUNIST, BAND_ABUSER))
    existing[kind[:n_ordinary] == SERIAL] = rng.random(n_serial) < 0.5
    registered = np.empty(n, dtype=np.int64)
    registered[:n_ordinary] = _registration(rng, cfg, start, existing)

    phone = np.empty(n, dtype=bool)
    phone[:n_ordinary] = rng.random(n_ordinary) < cfg.phone_verified_rate
    serial = kind == SERIAL
    phone[serial] = rng.random(int(serial.sum())) < 0.8 * cfg.phone_verified_rate
    phone[n_ordinary:] = rng.random(n_grouped) < cfg.young_phone_verified_rate

    activity = np.zeros(n)
    mu = np.log(cfg.orders_per_user_month) - cfg.activity_sigma**2 / 2
    activity[:n_ordinary] = rng.lognormal(mu, cfg.activity_sigma, n_ordinary)
    shape = cfg.refund_propensity_shape
    propensity = rng.gamma(shape, 1.0 / shape, n)

    devices = _Counter()
    ips = _Counter()
    accounts = _Counter()
    account_methods: list[Array] = []

    device = devices.take(n)  # every account has a device of its own
    second_device = np.full(n, MISSING, dtype=np.int64)
    has_second = np.flatnonzero(rng.random(n_ordinary) < cfg.second_device_rate)
    second_device[has_second] = devices.take(len(has_second))

    household = np.full(n, MISSING, dtype=np.int64)
    household[:n_ordinary] = _households(rng, cfg, kind[:n_ordinary])
    n_households = int(household.max()) + 1
    household_device = np.full(n, MISSING, dtype=np.int64)
    household_ip = ips.take(n_households)
    in_household = np.flatnonzero(household >= 0)
    household_device[in_household] = devices.take(n_households)[household[in_household]]
    home_ip = np.full(n, MISSING, dtype=np.int64)
    alone = np.flatnonzero(household[:n_ordinary] < 0)
    home_ip[alone] = ips.take(len(alone))
    home_ip[in_household] = household_ip[household[in_household]]

    n_public = max(5, round(n / 1000 * cfg.public_ips_per_1000_users))
    public_ips = ips.take(n_public)
    public_weights = 1.0 / np.arange(1, n_public + 1) ** 0.8
    public_weights /= public_weights.sum()
    public_ip = np.full(n, MISSING, dtype=np.int64)
    public_ip[:n_ordinary] = public_ips[choice_codes(rng, public_weights, n_ordinary)]
    public_share = np.zeros(n)
    public_share[:n_ordinary] = _beta_around(rng, cfg.public_ip_share, n_ordinary)

    account = accounts.take(n)
    account_methods.append(choice_codes(rng, cfg.payment_method_mix, n))
    second_account = np.full(n, MISSING, dtype=np.int64)
    has_two = np.flatnonzero(rng.random(n_ordinary) < cfg.second_payment_account_rate)
    second_account[has_two] = accounts.take(len(has_two))
    other_method = (account_methods[0][has_two] + rng.integers(1, 4, len(has_two))) % 4
    account_methods.append(other_method)
    household_account = np.full(n, MISSING, dtype=np.int64)
    shares = rng.random(n_households) < cfg.household_shared_payment_rate
    shared_of = np.full(n_households, MISSING, dtype=np.int64)
    shared_of[shares] = accounts.take(int(shares.sum()))
    # A shared family account is a card or a wallet app, never an account's own balance.
    account_methods.append(choice_codes(rng, cfg.payment_method_mix[:3], int(shares.sum())))
    household_account[in_household] = shared_of[household[in_household]]

    groups: list[Group] = []
    first = n_ordinary
    for size in [*ring_sizes, *scheme_sizes]:
        members = np.arange(first, first + size, dtype=np.int64)
        first += size
        g_start = start + int(uniform_seconds(rng, 0, max(cfg.days - 14, 1) * DAY * 0.9))
        g_end = min(end, g_start + int(rng.uniform(7, 21) * DAY))
        # Accounts are opened in a burst just before the group starts buying.
        registered[members] = g_start - uniform_seconds(rng, HOUR, 3 * DAY, size)
        g_accounts = accounts.take(int(rng.integers(1, 4)))
        account_methods.append(choice_codes(rng, (0.4, 0.35, 0.25), len(g_accounts)))
        groups.append(
            Group(
                members=members,
                devices=devices.take(max(1, size // 4)),
                ips=ips.take(int(rng.integers(1, 4))),
                accounts=g_accounts,
                start=g_start,
                end=g_end,
            )
        )
    bursts = _bursts(rng, cfg, burst_sizes, first, registered, devices, ips)

    return Population(
        registered=registered,
        phone_verified=phone,
        kind=kind,
        activity=activity,
        propensity=propensity,
        device=device,
        second_device=second_device,
        household_device=household_device,
        home_ip=home_ip,
        public_ip=public_ip,
        public_share=public_share,
        account=account,
        second_account=second_account,
        household_account=household_account,
        account_method=np.concatenate(account_methods).astype(np.int64),
        public_ips=public_ips,
        public_weights=public_weights,
        ip_numbers=_ip_numbers(rng, ips.used),
        n_devices=devices.used,
        rings=tuple(groups[: len(ring_sizes)]),
        schemes=tuple(groups[len(ring_sizes) :]),
        bursts=bursts,
    )


def _bursts(
    rng: np.random.Generator,
    cfg: SimulationConfig,
    sizes: list[int],
    first: int,
    registered: Array,
    devices: _Counter,
    ips: _Counter,
) -> tuple[Group, ...]:
    """Bursts of accounts opened within a few days: each keeps its own device and payment
    account, and only a few devices (one per ten accounts) and IPs are shared."""
    start = int(cfg.start.timestamp())
    end = start + cfg.days * DAY
    bursts: list[Group] = []
    for size in sizes:
        members = np.arange(first, first + size, dtype=np.int64)
        first += size
        g_start = start + int(uniform_seconds(rng, 0, max(cfg.days - 14, 1) * DAY * 0.9))
        g_end = min(end, g_start + int(rng.uniform(7, 21) * DAY))
        registered[members] = g_start - uniform_seconds(rng, HOUR, 3 * DAY, size)
        bursts.append(
            Group(
                members=members,
                devices=devices.take(max(1, size // 10)),
                ips=ips.take(int(rng.integers(2, 6))),
                accounts=np.empty(0, dtype=np.int64),
                start=g_start,
                end=g_end,
            )
        )
    return tuple(bursts)
