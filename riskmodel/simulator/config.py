"""The parameters of a simulated marketplace.

Every field has a default that gives a plausible market: refund requests on about 5-10 %
of orders, a few percent of them abusive. Rates are probabilities per eligible order
unless the docstring says otherwise; shares are fractions of a population.

The fields marked *world* (seasonality, price spread, several currencies, entities that
turn bad, amount-band abuse, account bursts, a late exploit, chargeback-only and
fixed-delay labels) are off in the default configuration, which therefore draws no random
number for them; randomised worlds (``riskmodel.simulator.worlds``) switch them on. The
fields marked *export* say how much of the outcome and crediting records an export
holds (all of them by default; some worlds hold part or none).

    >>> from riskmodel.simulator.config import SimulationConfig
    >>> SimulationConfig(users=500, days=30, seed=7).end.isoformat()
    '2026-01-31T00:00:00+00:00'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

__all__ = ["SimulationConfig"]


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that shapes one simulated marketplace; same config, same data.

    Example::

        >>> cfg = SimulationConfig(users=2_000, days=60, seed=1, serial_refunder_share=0.01)
        >>> cfg.days
        60
    """

    # --- scale and clock -------------------------------------------------------------------
    users: int = 10_000
    """Accounts in the users table, abusive accounts included."""
    days: int = 90
    """Length of the simulated window in days; nothing happens at or after its end."""
    seed: int = 0
    """Seed of the random streams; the only source of randomness."""
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """First instant of the window (timezone-aware; read as UTC)."""

    # --- population --------------------------------------------------------------------------
    existing_user_share: float = 0.7
    """Share of ordinary accounts registered before the window (the rest register during it)."""
    existing_user_max_age_days: int = 1_095
    """Oldest registration of an existing account, in days before ``start``."""
    phone_verified_rate: float = 0.92
    """Probability that an ordinary account has a verified phone."""
    young_phone_verified_rate: float = 0.3
    """Probability that a ring or fake-order account has a verified phone."""
    orders_per_user_month: float = 1.2
    """Mean orders per active account per 30 days (before the heavy tail is applied)."""
    activity_sigma: float = 1.1
    """Spread of the log-normal buyer activity: larger gives more trusted, frequent buyers."""
    refund_propensity_shape: float = 2.0
    """Gamma shape of each account's multiplier on discretionary honest refunds (mean 1)."""
    second_device_rate: float = 0.3
    """Share of ordinary accounts with a second device (a phone and a laptop)."""
    household_share: float = 0.25
    """Share of ordinary accounts living in a household of 2-5 accounts (family, roommates)
    that shares a device and a home IP."""
    household_shared_payment_rate: float = 0.3
    """Share of households whose members also pay with one shared payment account."""
    public_ip_share: float = 0.3
    """Mean share of an ordinary account's activity from a shared public IP (campus, cafe,
    carrier NAT), each used by many honest accounts."""
    public_ips_per_1000_users: float = 0.5
    """Size of the shared public IP pool per thousand accounts (at least 5)."""
    second_payment_account_rate: float = 0.35
    """Share of ordinary accounts with a second payment account of another method."""
    payment_method_mix: tuple[float, float, float, float] = (0.42, 0.36, 0.14, 0.08)
    """Weights of alipay, wechat_pay, bank_card and balance among payment accounts."""
    foreign_currency_share: float = 0.0
    """*World.* Share of accounts that pay in a foreign currency (0: one currency)."""
    foreign_rates: tuple[tuple[str, float], ...] = ()
    """*World.* ``(currency, rate)`` of each foreign currency, ``rate`` being the value of
    one unit in ``currency`` (the reporting currency); an account paying in a foreign
    currency uses one of them, each as likely."""

    # --- seasonality (world) -------------------------------------------------------------------
    weekly_amplitude: float = 0.0
    """*World.* Weekly cycle of ordinary purchases: a day's activity is
    ``1 + weekly_amplitude * cos(2 pi (weekday - 5.5) / 7)``, busiest at the weekend."""
    sales_peak_lift: float = 0.0
    """*World.* Ordinary purchases on the days of a sales event are ``1 + sales_peak_lift``
    times as likely (0: no event)."""
    sales_peak_at: float = 0.5
    """*World.* When the sales event starts, as a fraction of the window."""
    sales_peak_length: int = 3
    """*World.* Days of the sales event."""

    # --- sellers and catalogue ---------------------------------------------------------------
    users_per_seller: int = 500
    """One seller per this many accounts (at least 10 sellers)."""
    products_per_seller: int = 6
    """Mean catalogue size of a seller."""
    product_mix: tuple[float, float, float, float] = (0.45, 0.2, 0.25, 0.1)
    """Weights of card_code, membership, game_currency and service among orders."""
    membership_days_mix: tuple[float, float, float] = (0.5, 0.3, 0.2)
    """Weights of 30, 90 and 365 day memberships."""
    currency: str = "CNY"
    """The reporting currency: of every order unless ``foreign_currency_share`` is set."""
    price_level: float = 1.0
    """*World.* Multiplier on every list price (a marketplace's price level)."""
    price_sigma: float = 0.0
    """*World.* Spread of a log-normal multiplier (median 1) on each product's price:
    larger gives heavier tails (0: list prices)."""

    # --- fulfilment --------------------------------------------------------------------------
    late_delivery_rate: float = 0.02
    """Probability that an order is delivered hours to days late."""
    undelivered_rate: float = 0.004
    """Probability that an order is never delivered (delivered_at null)."""
    bad_batch_seller_share: float = 0.1
    """Share of sellers that receive a bad batch of codes during the window."""
    bad_batch_days: tuple[int, int] = (2, 7)
    """Range of the length in days of a bad batch window."""
    bad_batch_invalid_rate: float = 0.5
    """Probability that a code sold by a seller inside its bad batch window is invalid."""
    invalid_code_base_rate: float = 0.0005
    """Probability that any other code is invalid (an isolated supplier error)."""
    never_redeemed_rate: float = 0.05
    """Probability that a valid code is never redeemed at the issuer."""
    sold_used_rate: float = 0.0005
    """Probability that a card code was sold already used (redeemed before the buyer paid:
    a used or double-sold code); its buyer's invalid_code claim is honest."""
    activation_failure_rate: float = 0.001
    """Probability that a code redeemed at the issuer never credits its value to the
    buyer's account (activation failed, or never credited); its buyer's invalid_code
    claim is honest."""
    activation_failed_share: float = 0.6
    """Share of the codes that never credit whose failure the issuer reports
    (``activation_failed_at``); the others are simply never credited."""
    membership_usage_rate: float = 0.45
    """Mean probability that a member uses an active membership on a given day."""
    membership_churn_days: float = 60.0
    """Mean days until a member stops using a membership (exponential)."""

    # --- honest refunds ----------------------------------------------------------------------
    undelivered_refund_rate: float = 0.9
    """Probability that an undelivered order gets a not_delivered refund request."""
    late_delivery_refund_rate: float = 0.3
    """Probability that a late order gets a not_delivered refund request."""
    invalid_code_refund_rate: float = 0.85
    """Probability that a buyer of an invalid code asks for an invalid_code refund."""
    unused_refund_rate: float = 0.018
    """Probability that a code, membership or service is returned unused soon after purchase."""
    partial_use_refund_rate: float = 0.07
    """Probability that a membership is cancelled part way with a prorated refund."""
    not_as_described_rate: float = 0.012
    """Probability of a not_as_described request on a delivered order."""
    other_refund_rate: float = 0.008
    """Probability of a request with reason other."""
    duplicate_charge_rate: float = 0.003
    """Probability that a purchase is charged twice minutes apart (the second is refunded)."""
    prorated_fee: float = 0.0
    """Fee subtracted from a prorated membership refund."""

    # --- abuse -------------------------------------------------------------------------------
    serial_refunder_share: float = 0.0008
    """Share of accounts that refund most of what they buy."""
    serial_refund_rate: float = 0.7
    """Probability that a serial refunder asks for a refund on an order."""
    opportunist_share: float = 0.015
    """Share of established accounts that sometimes abuse a refund (the patterns below)."""
    redeemed_then_invalid_rate: float = 0.04
    """Probability that an opportunist claims a code they redeemed is invalid."""
    credited_then_not_delivered_rate: float = 0.05
    """Probability that an opportunist claims credited game currency never arrived."""
    prorated_overclaim_rate: float = 0.08
    """Probability that an opportunist cancels a membership claiming fewer days than used."""
    double_dip_rate: float = 0.05
    """Probability that an opportunist's bank_card order is refunded and then charged back
    (a tenth of this rate on other payment methods)."""
    duplicate_refund_rate: float = 0.1
    """Probability that an opportunist or serial refunder files a second request on an order
    already refunded."""
    ring_account_share: float = 0.0012
    """Share of accounts in refund rings."""
    ring_size: tuple[int, int] = (4, 15)
    """Range of accounts per refund ring."""
    ring_orders_per_account: float = 3.0
    """Mean orders per ring account."""
    ring_refund_rate: float = 0.8
    """Probability that a ring order is refunded."""
    fake_order_account_share: float = 0.0012
    """Share of accounts that are buyers in fake-order schemes."""
    fake_order_ring_size: tuple[int, int] = (4, 12)
    """Range of buyers per fake-order scheme (each scheme has its own colluding seller)."""
    fake_orders_per_account: float = 3.0
    """Mean orders per fake-order buyer."""
    fake_order_refund_rate: float = 0.6
    """Probability that a fake order is refunded."""
    colluding_seller_share: float = 0.0
    """*World.* Share of ordinary sellers that turn bad for a few weeks: accomplices buy
    its codes and ask them back (at least one seller when positive)."""
    device_takeover_share: float = 0.0
    """*World.* Share of accounts whose own device is taken over for a few weeks and used
    to buy and refund through several accounts (at least one when positive)."""
    payment_takeover_share: float = 0.0
    """*World.* Share of accounts whose payment account is taken over for a few weeks and
    used by other accounts to buy and refund (at least one when positive)."""
    turned_days: tuple[int, int] = (10, 35)
    """*World.* Range of the days a seller, device or payment account stays bad."""
    turned_refund_rate: float = 0.8
    """*World.* Probability that an order placed through an entity while it is bad is
    refunded."""
    band_abuser_share: float = 0.0
    """*World.* Share of established, ordinary-looking accounts that abuse refunds only on
    orders whose amount lies in ``abuse_band``."""
    abuse_band: tuple[float, float] = (100.0, 300.0)
    """*World.* Amounts ``[low, high)`` (reporting currency) that band abusers ask back."""
    band_refund_rate: float = 0.5
    """*World.* Probability that a band abuser asks back an order inside the band."""
    burst_account_share: float = 0.0
    """*World.* Share of accounts opened in bursts: many accounts registered within a few
    days that buy and refund, sharing devices far less than rings."""
    burst_size: tuple[int, int] = (15, 60)
    """*World.* Range of accounts per burst."""
    burst_refund_rate: float = 0.7
    """*World.* Probability that an order of a burst account is refunded."""
    late_exploiter_share: float = 0.0
    """*World.* Share of ordinary accounts that learn a late exploit: from
    ``late_exploit_start`` on they claim a duplicate charge on orders charged once."""
    late_exploit_rate: float = 0.5
    """*World.* Probability that an exploiter's order paid after the start is claimed."""
    late_exploit_start: float = 0.75
    """*World.* When the exploit starts, as a fraction of the window."""

    # --- outcomes of requests and honest look-alikes -------------------------------------------
    honest_refusal_rate: float = 0.05
    """Probability that the marketplace's existing process refuses an honest request."""
    abuse_refusal_rate: float = 0.2
    """Probability that the existing process catches and refuses an abusive request."""
    redeemed_claim_refusal_rate: float = 0.3
    """Probability that the existing process refuses an invalid_code claim on a code its
    records show redeemed (honest or not), unless it refuses it anyway."""
    auto_decision_share: float = 0.4
    """Share of requests the existing process answers automatically, within two minutes;
    the others are answered by a person, within 1 h - 4 days."""
    elapsed_proration_rate: float = 0.1
    """Probability that the existing process prorates a membership refund by the days
    elapsed since delivery rather than the days used, so it pays less than asked."""
    partial_followup_rate: float = 0.4
    """Probability that an honest buyer paid part of a membership refund asks again for
    (part of) the unpaid remainder."""
    resubmission_rate: float = 0.2
    """Probability that an honest buyer whose request was refused asks again days later."""
    retry_rate: float = 0.006
    """Probability that the refund pipeline, getting no answer, sends a request again
    under a new request_id seconds to minutes later (the first is never answered)."""
    outcome_report_rate: float = 1.0
    """*Export.* Share of answered requests whose outcome (``paid_amount``, ``resolved_at``)
    the export holds; 0 leaves both columns out."""
    credit_report_rate: float = 1.0
    """*Export.* Share of codes and currency whose crediting (``credited_at``) or failure
    (``activation_failed_at``) the export holds; 0 leaves both columns out."""

    # --- labels ------------------------------------------------------------------------------
    abuse_label_rate: float = 0.7
    """Probability that an abusive request receives a verdict (chargebacks always arrive)."""
    honest_label_rate: float = 0.15
    """Probability that an honest request receives a verdict."""
    label_flip_rate: float = 0.02
    """Probability that a verdict is wrong."""
    label_correction_rate: float = 0.5
    """Probability that a wrong verdict is corrected later by a dispute."""
    review_delay_days: tuple[float, float] = (1.0, 5.0)
    """Range of the delay of an analyst's review verdict."""
    issuer_report_delay_days: tuple[float, float] = (3.0, 14.0)
    """Range of the delay of a game issuer's redemption report."""
    chargeback_delay_days: tuple[float, float] = (20.0, 60.0)
    """Range of the delay of a chargeback."""
    dispute_delay_days: tuple[float, float] = (5.0, 20.0)
    """Range of the delay of a dispute outcome."""
    abuse_dispute_share: float = 0.3
    """Share of verdicts on abusive requests that come from a dispute."""
    honest_dispute_share: float = 0.15
    """Share of verdicts on honest requests that come from a dispute."""
    issuer_report_share: float = 0.6
    """Share of verdicts on honest invalid-code requests that come from an issuer report."""
    abuse_chargeback_rate: float = 0.0
    """*World.* Probability that an abusive request other than a double dip is also charged
    back by the payer (on bank cards; a tenth of this on other methods)."""
    fixed_label_delay_days: float = 0.0
    """*World.* When positive, every request gets exactly one verdict, the truth, this many
    days after it (like a card-fraud benchmark); the other label parameters are ignored."""

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            object.__setattr__(self, "start", self.start.replace(tzinfo=UTC))
        else:
            object.__setattr__(self, "start", self.start.astimezone(UTC))
        if self.start.microsecond:
            raise ValueError("start must be a whole second")
        if self.users < 10:
            raise ValueError(f"users must be at least 10, got {self.users}")
        if self.days < 1:
            raise ValueError(f"days must be at least 1, got {self.days}")
        if self.seed < 0:
            raise ValueError(f"seed must be non-negative, got {self.seed}")
        for f in fields(self):
            problem = _problem(f.name, getattr(self, f.name))
            if problem:
                raise ValueError(f"{f.name} {problem}, got {getattr(self, f.name)!r}")
        positive = (
            "orders_per_user_month",
            "activity_sigma",
            "refund_propensity_shape",
            "public_ips_per_1000_users",
            "users_per_seller",
            "products_per_seller",
            "membership_churn_days",
            "ring_orders_per_account",
            "fake_orders_per_account",
            "existing_user_max_age_days",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.prorated_fee < 0:
            raise ValueError(f"prorated_fee must be non-negative, got {self.prorated_fee!r}")
        if self.ring_size[0] < 2 or self.fake_order_ring_size[0] < 2 or self.burst_size[0] < 2:
            raise ValueError("a ring has at least 2 accounts")
        special = (
            self.serial_refunder_share
            + self.ring_account_share
            + self.fake_order_account_share
            + self.opportunist_share
            + self.band_abuser_share
            + self.burst_account_share
            + self.late_exploiter_share
        )
        if special > 0.5:
            raise ValueError("abusive and opportunist accounts cannot exceed half of the users")
        self._check_world_fields()

    def _check_world_fields(self) -> None:
        for name in ("sales_peak_at", "late_exploit_start", "weekly_amplitude"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("sales_peak_lift", "price_sigma", "fixed_label_delay_days"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        if self.price_level <= 0:
            raise ValueError(f"price_level must be positive, got {self.price_level!r}")
        if self.sales_peak_length < 1:
            raise ValueError(f"sales_peak_length must be at least 1, got {self.sales_peak_length}")
        low, high = self.abuse_band
        if not 0 <= low < high:
            raise ValueError(
                f"abuse_band must be a range (low, high), 0 <= low < high, got {self.abuse_band!r}"
            )
        codes = [code for code, _ in self.foreign_rates]
        if len(set(codes)) != len(codes) or self.currency in codes or not all(codes):
            raise ValueError(
                f"foreign_rates must name distinct currencies other than {self.currency!r}, "
                f"got {self.foreign_rates!r}"
            )
        if any(not 0 < rate < 1e6 for _, rate in self.foreign_rates):
            raise ValueError(f"foreign_rates must be positive, got {self.foreign_rates!r}")
        if self.foreign_currency_share > 0 and not self.foreign_rates:
            raise ValueError("foreign_currency_share needs at least one foreign_rates entry")

    @property
    def end(self) -> datetime:
        """The first instant after the window (exclusive)."""
        return self.start + timedelta(days=self.days)


def _problem(name: str, value: object) -> str | None:
    """What is wrong with a rate, share, mix or range field (by naming convention)."""
    if name.endswith(("_rate", "_share")):
        ok = isinstance(value, float | int) and 0.0 <= value <= 1.0
        return None if ok else "must be between 0 and 1"
    if name.endswith("_mix") and isinstance(value, tuple):
        ok = all(w >= 0 for w in value) and math.isclose(sum(value), 1.0)
        return None if ok else "must be non-negative weights summing to 1"
    if name.endswith(("_days", "_size")) and isinstance(value, tuple):
        return None if 0 < value[0] <= value[1] else "must be a range (low, high), 0 < low <= high"
    return None
