"""Randomised simulated worlds: a whole marketplace drawn from one number.

The model and its features must work on marketplaces nobody here built. A world is a
``SimulationConfig`` whose parameters are drawn, deterministically, from a world number
``N >= 1``: the mix and rate of every abuse pattern (some absent, some dominant), the
label regime (sources, coverage, delays), how much devices and IPs are shared, prices,
seasonality, the honest refund kinds, the number of sellers, which of the patterns
and oddities absent from the default market are switched on, how often honest requests
look like abuse (retries, re-submissions, partial follow-ups, codes redeemed but never
credited or sold already used), what the existing process paid, and how much of the
outcomes and of the issuer's crediting records the export holds. Same number, same
world; with the same size and seed, the same bytes.

Choices (features, defaults, thresholds) are made on ``DEVELOPMENT_WORLDS`` and figures
are reported on ``EVALUATION_WORLDS``; the two sets never share a world. World ``N``
always has ``SWITCHES[N % 8]`` on (the others at random) and the label regime
``REGIME_BY_RESIDUE[N % 8]`` (its parameters at random), so any eight consecutive
numbers, and each of the two sets, cover every new pattern, oddity and label regime,
with five worlds in eight under the standard regime. Likewise the export holds the
requests' outcomes as ``OUTCOMES_BY_RESIDUE[N % 3]`` and the crediting records as
``CREDITS_BY_RESIDUE[N % 5]`` (absent, partial or full), so that both sets hold worlds
without either.

    >>> from riskmodel.simulator.worlds import draw_world
    >>> world = draw_world(3, users=3_000, days=90)
    >>> world.config.users, world.config.seed
    (3000, 3)
    >>> "amount_band" in world.switched_on          # SWITCHES[3 % 8]
    True
    >>> draw_world(3, users=3_000, days=90) == world
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from riskmodel.simulator.config import SimulationConfig

__all__ = [
    "COVERAGES",
    "CREDITS_BY_RESIDUE",
    "DEVELOPMENT_WORLDS",
    "EVALUATION_WORLDS",
    "LABEL_REGIMES",
    "OUTCOMES_BY_RESIDUE",
    "REGIME_BY_RESIDUE",
    "SWITCHES",
    "WORLD_FILE",
    "World",
    "draw_world",
    "write_world",
]

DEVELOPMENT_WORLDS: tuple[int, ...] = tuple(range(1, 13))
"""Worlds on which choices are made: features, defaults, thresholds, model settings."""
EVALUATION_WORLDS: tuple[int, ...] = tuple(range(101, 109))
"""Worlds on which figures are reported, never used to make a choice."""

WORLD_FILE = "world.json"
"""Name of the file, next to the tables, that records a world's drawn parameters."""

SWITCHES: tuple[str, ...] = (
    "colluding_seller",
    "device_takeover",
    "payment_takeover",
    "amount_band",
    "account_burst",
    "late_exploit",
    "sold_used",
    "multi_currency",
)
"""Patterns and oddities that a world may switch on: absent from the default market, but
for ``sold_used``, many more codes sold already used than its few."""

LABEL_REGIMES: tuple[str, ...] = ("standard", "fixed_delay", "sparse_honest", "chargebacks_only")
"""How verdicts arrive: late, partial and noisy (``standard``); one true verdict on every
request a fixed number of days later, like a card-fraud benchmark (``fixed_delay``);
honest requests almost never judged (``sparse_honest``); chargebacks only."""
REGIME_BY_RESIDUE: tuple[str, ...] = (
    "standard",
    "standard",
    "chargebacks_only",
    "standard",
    "fixed_delay",
    "standard",
    "sparse_honest",
    "standard",
)
"""The label regime of world ``N`` is ``REGIME_BY_RESIDUE[N % 8]``: stratified rather than
drawn, so that every set of eight consecutive worlds holds each regime."""

COVERAGES: tuple[str, ...] = ("absent", "partial", "full")
"""How much of a kind of record an export holds: none (the columns are left out), some
(each record kept with a drawn probability) or all."""
OUTCOMES_BY_RESIDUE: tuple[str, ...] = ("absent", "partial", "full")
"""The export of world ``N`` holds the requests' outcomes (``paid_amount``,
``resolved_at``) as ``OUTCOMES_BY_RESIDUE[N % 3]``."""
CREDITS_BY_RESIDUE: tuple[str, ...] = ("absent", "partial", "full", "absent", "full")
"""The export of world ``N`` holds the issuer's crediting records (``credited_at``,
``activation_failed_at``) as ``CREDITS_BY_RESIDUE[N % 5]``."""

# Existing abuse patterns and the parameter that sets each one's volume.
_ABUSE_VOLUME: dict[str, str] = {
    "serial_refunder": "serial_refunder_share",
    "duplicate_refund": "duplicate_refund_rate",
    "redeemed_then_invalid": "redeemed_then_invalid_rate",
    "credited_then_not_delivered": "credited_then_not_delivered_rate",
    "prorated_overclaim": "prorated_overclaim_rate",
    "refund_ring": "ring_account_share",
    "fake_orders": "fake_order_account_share",
    "double_dip": "double_dip_rate",
}
_PATTERN_PRESENT = 0.8
_SCALE = (0.25, 4.0)
_DOMINANT_CHANCE = 0.35
_DOMINANT_SCALE = (4.0, 10.0)
_SWITCH_CHANCE = 0.35
_HONEST_KINDS = (
    "unused_refund_rate",
    "partial_use_refund_rate",
    "not_as_described_rate",
    "other_refund_rate",
    "duplicate_charge_rate",
)
_HONEST_SCALE = (1 / 3, 3.0)
# Currencies a multi-currency world may use, with a typical value in the reporting
# currency (each world moves them by up to 10 %).
_CURRENCIES = (
    ("USD", 7.1),
    ("EUR", 7.8),
    ("GBP", 9.1),
    ("HKD", 0.91),
    ("JPY", 0.047),
    ("KRW", 0.0052),
    ("SGD", 5.3),
    ("TWD", 0.22),
)
_FIXED_DELAYS = (1.0, 2.0, 3.0, 7.0, 14.0, 30.0)
_BAND_LOWS = (20.0, 50.0, 100.0, 200.0)
# Entropy mixed with the world number, so that worlds are not the simulator's seeds.
_SALT = 0x5EED_0F_3031D5


@dataclass(frozen=True)
class World:
    """A drawn world: its configuration and what was drawn, in words.

    Example::

        >>> from riskmodel.simulator import draw_world, simulate
        >>> world = draw_world(101, users=2_000, days=60)
        >>> world.label_regime in ("standard", "fixed_delay", "sparse_honest",
        ...                        "chargebacks_only")
        True
        >>> sim = simulate(world.config)                        # doctest: +SKIP
    """

    number: int
    config: SimulationConfig
    label_regime: str
    abuse_scale: Mapping[str, float]
    """Multiplier on the default volume of each existing abuse pattern (0: absent)."""
    dominant: str | None
    """The existing pattern scaled far above the others, if any."""
    switched_on: tuple[str, ...]
    """Members of ``SWITCHES`` that this world has."""
    outcomes: str = "full"
    """How much of the requests' outcomes the export holds (one of ``COVERAGES``)."""
    credits: str = "full"
    """How much of the issuer's crediting records the export holds (``COVERAGES``)."""

    def parameters(self) -> dict[str, Any]:
        """Everything drawn, as JSON-ready data (what ``world.json`` holds)."""
        config = dataclasses.asdict(self.config)
        config["start"] = self.config.start.isoformat().replace("+00:00", "Z")
        return {
            "world": self.number,
            "label_regime": self.label_regime,
            "abuse_scale": dict(self.abuse_scale),
            "dominant": self.dominant,
            "switched_on": list(self.switched_on),
            "outcomes": self.outcomes,
            "credits": self.credits,
            "config": config,
        }

    def summary(self) -> list[str]:
        """A few lines that say what is special about this world."""
        c = self.config
        labels = {
            "standard": f"standard (abusive {c.abuse_label_rate:.0%} judged, honest "
            f"{c.honest_label_rate:.0%})",
            "fixed_delay": f"every request judged {c.fixed_label_delay_days:g} days later",
            "sparse_honest": f"honest requests almost never judged ({c.honest_label_rate:.1%})",
            "chargebacks_only": f"chargebacks only ({c.abuse_chargeback_rate:.0%} of abusive "
            "requests on bank cards)",
        }[self.label_regime]
        present = [
            f"{name} x{scale:.2g}" + (" (dominant)" if name == self.dominant else "")
            for name, scale in self.abuse_scale.items()
            if scale > 0
        ]
        absent = [name for name, scale in self.abuse_scale.items() if scale == 0]
        peak = (
            f"sales peak +{c.sales_peak_lift:.0%} for {c.sales_peak_length} days"
            if c.sales_peak_lift > 0
            else "no sales peak"
        )
        market = (
            f"{c.users_per_seller} users per seller, price level {c.price_level:.2g} "
            f"(spread {c.price_sigma:.2g}), weekly swing {c.weekly_amplitude:.0%}, {peak}, "
            f"households {c.household_share:.0%}, public IPs {c.public_ip_share:.0%} of activity"
        )
        lookalikes = (
            f"retries {c.retry_rate:.1%} of requests, honest refusals {c.honest_refusal_rate:.0%} "
            f"(re-submitted {c.resubmission_rate:.0%}), abuse caught {c.abuse_refusal_rate:.0%}, "
            f"prorated by days elapsed {c.elapsed_proration_rate:.0%} (followed up "
            f"{c.partial_followup_rate:.0%}), codes never credited {c.activation_failure_rate:.2%}"
            f", sold used {c.sold_used_rate:.2%}"
        )
        export = (
            f"outcomes {_coverage(self.outcomes, c.outcome_report_rate)}, "
            f"crediting records {_coverage(self.credits, c.credit_report_rate)}"
        )
        return [
            f"world {self.number} (seed {c.seed}): labels {labels}",
            "  abuse: " + ", ".join(present) + (f"; absent: {', '.join(absent)}" if absent else ""),
            "  switched on: " + (", ".join(self.switched_on) or "nothing new"),
            f"  market: {market}",
            f"  look-alikes: {lookalikes}",
            f"  export: {export}",
        ]


def _coverage(coverage: str, rate: float) -> str:
    return f"partial ({rate:.0%})" if coverage == "partial" else coverage


class _Draws:
    """Readable draws of world parameters, each rounded to 4 significant digits."""

    def __init__(self, number: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([_SALT, number])))

    def uniform(self, low: float, high: float) -> float:
        return _round(float(self.rng.uniform(low, high)))

    def log_uniform(self, low: float, high: float) -> float:
        return _round(math.exp(float(self.rng.uniform(math.log(low), math.log(high)))))

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)

    def integer(self, low: int, high: int) -> int:
        """A whole number in ``[low, high]``."""
        return int(self.rng.integers(low, high + 1))

    def pick(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(0, len(options)))]

    def mix(self, around: Sequence[float], concentration: float = 20.0) -> tuple[float, ...]:
        """Weights summing to 1, spread around ``around``; none below 1 %."""
        w = np.maximum(self.rng.dirichlet(np.asarray(around) * concentration), 0.01)
        rounded = [round(float(x), 4) for x in w / w.sum()]
        rounded[-1] = round(1.0 - sum(rounded[:-1]), 4)
        return tuple(rounded)


def _round(value: float) -> float:
    return float(f"{value:.4g}")


def draw_world(
    number: int,
    *,
    users: int = 10_000,
    days: int = 180,
    seed: int | None = None,
    start: datetime | None = None,
) -> World:
    """The world numbered ``number`` (at least 1) at the given size.

    The parameters depend only on ``number``; ``users``, ``days``, ``start`` and ``seed``
    (default: ``number``) set the size, the window and the simulator's random streams.
    """
    if number < 1:
        raise ValueError(f"a world number is at least 1, got {number}")
    d = _Draws(number)
    ref = SimulationConfig()
    values: dict[str, Any] = {
        "users": users,
        "days": days,
        "seed": number if seed is None else seed,
        "start": start or ref.start.astimezone(UTC),
    }
    values.update(_market(d, ref))

    # Existing abuse: each present or not, one perhaps dominant.
    scale: dict[str, float] = {}
    for name in _ABUSE_VOLUME:
        present = d.chance(_PATTERN_PRESENT)
        scale[name] = d.log_uniform(*_SCALE) if present else 0.0
    dominant: str | None = None
    if d.chance(_DOMINANT_CHANCE):
        dominant = d.pick(list(_ABUSE_VOLUME))
        scale[dominant] = d.uniform(*_DOMINANT_SCALE)
    for name, field in _ABUSE_VOLUME.items():
        cap = 0.02 if field.endswith("_share") else 0.9
        values[field] = _round(min(getattr(ref, field) * scale[name], cap))
    values["opportunist_share"] = _round(ref.opportunist_share * d.log_uniform(0.5, 2.0))
    values["serial_refund_rate"] = d.uniform(0.4, 0.9)
    values["ring_refund_rate"] = d.uniform(0.5, 0.95)
    values["fake_order_refund_rate"] = d.uniform(0.4, 0.9)
    ring_low = d.integer(3, 6)
    values["ring_size"] = (ring_low, ring_low + d.integer(4, 12))

    regime = REGIME_BY_RESIDUE[number % len(REGIME_BY_RESIDUE)]
    values.update(_labels(d, regime))
    if regime == "chargebacks_only":
        # A card-heavy market: chargebacks are a card-network remedy.
        mix = list(values["payment_method_mix"])
        mix[2] *= 3
        values["payment_method_mix"] = _normalised(mix)

    guaranteed = SWITCHES[number % len(SWITCHES)]
    drawn_on = {name: d.chance(_SWITCH_CHANCE) for name in SWITCHES}
    on = tuple(name for name in SWITCHES if drawn_on[name] or name == guaranteed)
    values.update(_switches(d, on, values["price_level"]))
    outcomes = OUTCOMES_BY_RESIDUE[number % len(OUTCOMES_BY_RESIDUE)]
    credits = CREDITS_BY_RESIDUE[number % len(CREDITS_BY_RESIDUE)]
    # Drawn last, so that what was drawn before them is as it was before they existed.
    values.update(_lookalikes(d, "sold_used" in on, outcomes, credits))
    return World(
        number=number,
        config=SimulationConfig(**values),
        label_regime=regime,
        abuse_scale=scale,
        dominant=dominant,
        switched_on=on,
        outcomes=outcomes,
        credits=credits,
    )


def _normalised(weights: Sequence[float]) -> tuple[float, ...]:
    total = sum(weights)
    rounded = [round(w / total, 4) for w in weights]
    rounded[-1] = round(1.0 - sum(rounded[:-1]), 4)
    return tuple(rounded)


def _market(d: _Draws, ref: SimulationConfig) -> dict[str, Any]:
    """Population, sharing, sellers, prices, seasonality, fulfilment and honest refunds."""
    values: dict[str, Any] = {
        "existing_user_share": d.uniform(0.4, 0.9),
        "phone_verified_rate": d.uniform(0.6, 0.98),
        "young_phone_verified_rate": d.uniform(0.05, 0.6),
        "orders_per_user_month": d.log_uniform(0.6, 2.5),
        "activity_sigma": d.uniform(0.7, 1.5),
        "refund_propensity_shape": d.uniform(1.0, 4.0),
        "second_device_rate": d.uniform(0.1, 0.5),
        "household_share": d.uniform(0.0, 0.5),
        "household_shared_payment_rate": d.uniform(0.0, 0.6),
        "public_ip_share": d.uniform(0.05, 0.6),
        "public_ips_per_1000_users": d.log_uniform(0.1, 3.0),
        "second_payment_account_rate": d.uniform(0.1, 0.5),
        "payment_method_mix": d.mix(ref.payment_method_mix, 10.0),
        "users_per_seller": round(d.log_uniform(60, 2_000)),
        "products_per_seller": d.integer(3, 15),
        "product_mix": d.mix(ref.product_mix),
        "membership_days_mix": d.mix(ref.membership_days_mix),
        "price_level": d.log_uniform(0.3, 3.0),
        "price_sigma": d.uniform(0.2, 0.9) if d.chance(0.6) else 0.0,
        "weekly_amplitude": d.uniform(0.05, 0.5) if d.chance(0.7) else 0.0,
        "sales_peak_lift": d.uniform(0.5, 4.0) if d.chance(0.5) else 0.0,
        "sales_peak_at": d.uniform(0.1, 0.9),
        "sales_peak_length": d.integer(1, 7),
        "late_delivery_rate": d.log_uniform(0.005, 0.06),
        "undelivered_rate": d.log_uniform(0.001, 0.015),
        "bad_batch_seller_share": d.uniform(0.0, 0.25),
        "bad_batch_invalid_rate": d.uniform(0.2, 0.8),
        "invalid_code_base_rate": d.log_uniform(0.0001, 0.002),
        "never_redeemed_rate": d.uniform(0.01, 0.15),
        "membership_usage_rate": d.uniform(0.2, 0.7),
        "membership_churn_days": d.log_uniform(20.0, 120.0),
        "undelivered_refund_rate": d.uniform(0.6, 1.0),
        "late_delivery_refund_rate": d.uniform(0.1, 0.6),
        "invalid_code_refund_rate": d.uniform(0.6, 0.95),
    }
    for name in _HONEST_KINDS:
        values[name] = _round(min(getattr(ref, name) * d.log_uniform(*_HONEST_SCALE), 0.5))
    fee = d.pick((0.5, 1.0, 2.0)) * values["price_level"]
    values["prorated_fee"] = round(fee, 2) if d.chance(0.3) else 0.0
    return values


def _labels(d: _Draws, regime: str) -> dict[str, Any]:
    """Label coverage, sources, delays and noise for ``regime``."""
    review = d.uniform(0.2, 3.0)
    issuer = d.uniform(1.0, 5.0)
    dispute = d.uniform(3.0, 10.0)
    chargeback = d.uniform(10.0, 30.0)
    values: dict[str, Any] = {
        "abuse_label_rate": d.uniform(0.3, 0.9),
        "honest_label_rate": d.uniform(0.03, 0.3),
        "label_flip_rate": d.uniform(0.0, 0.05),
        "label_correction_rate": d.uniform(0.2, 0.8),
        "review_delay_days": (review, _round(review + d.uniform(1.0, 10.0))),
        "issuer_report_delay_days": (issuer, _round(issuer + d.uniform(2.0, 14.0))),
        "dispute_delay_days": (dispute, _round(dispute + d.uniform(5.0, 20.0))),
        "chargeback_delay_days": (chargeback, _round(chargeback + d.uniform(15.0, 60.0))),
        "abuse_dispute_share": d.uniform(0.0, 0.5),
        "honest_dispute_share": d.uniform(0.0, 0.3),
        "issuer_report_share": d.uniform(0.2, 0.9),
        "abuse_chargeback_rate": d.uniform(0.1, 0.5) if d.chance(0.4) else 0.0,
    }
    sparse_honest = d.log_uniform(0.001, 0.01)
    fixed = d.pick(_FIXED_DELAYS)
    only_chargebacks = d.uniform(0.4, 0.9)
    if regime == "sparse_honest":
        values["honest_label_rate"] = sparse_honest
    elif regime == "fixed_delay":
        values["fixed_label_delay_days"] = fixed
        values["abuse_chargeback_rate"] = 0.0
    elif regime == "chargebacks_only":
        values.update(
            abuse_label_rate=0.0,
            honest_label_rate=0.0,
            label_flip_rate=0.0,
            abuse_chargeback_rate=only_chargebacks,
        )
    return values


def _switches(d: _Draws, on: tuple[str, ...], price_level: float) -> dict[str, Any]:
    """Parameters of the patterns and oddities in ``on`` (every draw is made, so that
    what one switch draws does not depend on the others)."""
    turned_low = d.integer(7, 14)
    band_low = _round(d.pick(_BAND_LOWS) * price_level)
    burst_low = d.integer(10, 25)
    count = d.integer(1, 4)
    chosen = d.rng.choice(len(_CURRENCIES), size=count, replace=False)
    rates = tuple(
        (_CURRENCIES[i][0], float(f"{_CURRENCIES[i][1] * d.uniform(0.9, 1.1):.4g}"))
        for i in sorted(int(i) for i in chosen)
    )
    drawn: dict[str, dict[str, Any]] = {
        "colluding_seller": {"colluding_seller_share": d.uniform(0.01, 0.05)},
        "device_takeover": {"device_takeover_share": d.log_uniform(0.00005, 0.0003)},
        "payment_takeover": {"payment_takeover_share": d.log_uniform(0.00005, 0.0003)},
        "amount_band": {
            "band_abuser_share": d.uniform(0.005, 0.02),
            "band_refund_rate": d.uniform(0.3, 0.8),
            "abuse_band": (band_low, _round(band_low * d.uniform(1.5, 3.0))),
        },
        "account_burst": {
            "burst_account_share": d.log_uniform(0.001, 0.006),
            "burst_size": (burst_low, burst_low + d.integer(10, 40)),
            "burst_refund_rate": d.uniform(0.5, 0.9),
        },
        "late_exploit": {
            "late_exploiter_share": d.uniform(0.005, 0.02),
            "late_exploit_rate": d.uniform(0.2, 0.5),
            "late_exploit_start": d.uniform(0.7, 0.85),
        },
        "sold_used": {"sold_used_rate": d.log_uniform(0.003, 0.03)},
        "multi_currency": {
            "foreign_currency_share": d.uniform(0.05, 0.5),
            "foreign_rates": rates,
        },
    }
    values: dict[str, Any] = {
        "turned_days": (turned_low, turned_low + d.integer(7, 28)),
        "turned_refund_rate": d.uniform(0.6, 0.95),
    }
    for name in on:
        values.update(drawn[name])
    return values


def _lookalikes(d: _Draws, sold_used_on: bool, outcomes: str, credits: str) -> dict[str, Any]:
    """Honest look-alikes, the existing process's outcomes and what the export holds
    (every draw is made whatever the switches and coverages)."""
    values: dict[str, Any] = {
        "activation_failure_rate": d.log_uniform(0.0002, 0.005),
        "activation_failed_share": d.uniform(0.2, 0.9),
    }
    sold_used = d.log_uniform(0.0002, 0.002)
    if not sold_used_on:  # the switch draws a higher rate (``_switches``)
        values["sold_used_rate"] = sold_used
    values.update(
        honest_refusal_rate=d.uniform(0.02, 0.12),
        abuse_refusal_rate=d.uniform(0.05, 0.5),
        redeemed_claim_refusal_rate=d.uniform(0.0, 0.6),
        auto_decision_share=d.uniform(0.1, 0.8),
        elapsed_proration_rate=d.uniform(0.0, 0.3),
        partial_followup_rate=d.uniform(0.1, 0.7),
        resubmission_rate=d.uniform(0.05, 0.5),
        retry_rate=d.log_uniform(0.002, 0.03),
    )
    outcome_share = d.uniform(0.3, 0.95)
    credit_share = d.uniform(0.3, 0.95)
    coverage = {"absent": 0.0, "full": 1.0}
    values["outcome_report_rate"] = coverage.get(outcomes, outcome_share)
    values["credit_report_rate"] = coverage.get(credits, credit_share)
    return values


def write_world(world: World, out_dir: str | Path) -> Path:
    """Write ``world.json`` (the drawn parameters) into ``out_dir``; same world, same bytes.

    Example::

        >>> from riskmodel.simulator import draw_world, write_world
        >>> write_world(draw_world(5), "data/world-5").name     # doctest: +SKIP
        'world.json'
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / WORLD_FILE
    path.write_text(json.dumps(world.parameters(), indent=2) + "\n", encoding="utf-8")
    return path
