"""The feature catalogue: every model input, declared once (see ``features.spec``).

Most of it is generated from a few family declarations (``FAMILIES``): for each entity of
a request (its user, device, IP, payment account, seller, product, and its order) and a
set of windows, the orders and refund requests counted and added up, the refund share,
verdicts and confirmed abuse as a count and a rate, new users, and the time since the
latest event. The rest is the request and its order as they are (with the issuer's word
on whether its value reached the buyer), what earlier requests on the order came to in
money (paid, refused, unanswered, approved, and what is left to refund), and a few
features of one entity (a user's reasons, product mix, decisions...).

Missing data has a defined value, stated in each feature's ``doc``: counts and sums are 0
when there is no event; "hours since", maxima, ages and ratios with nothing to divide are
null (NaN); every feature of a device, IP, payment account, seller or product is null
when the request has none. The model reads null as "unknown", which is not the same as
zero. Amounts that are added up or compared across orders are in the reporting currency
(``riskmodel.store.BASE_AMOUNT``); the request's and its order's own amounts are in the
order's currency.

    >>> from features.catalog import CATALOG
    >>> CATALOG["user_orders_7d"].window_days
    7.0
    >>> CATALOG["order_refunds_refused_all"].where
    ('outcome', 'refused')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from features.spec import (
    Agg,
    Aggregate,
    Columns,
    Context,
    Derived,
    Entity,
    Feature,
    Ratio,
    divide,
)
from features.spec import Source as S
from features.spec import Type as T
from riskmodel.domain import ProductType, RefundReason
from riskmodel.units import CENTS, DAY, HOUR, MINUTE

__all__ = ["CATALOG", "FAMILIES", "FEATURE_VERSION", "Family", "feature_names", "model_features"]

FEATURE_VERSION = "3"
"""Raised whenever a definition changes meaning, so stored data can say what made it."""

WINDOWS = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
ALL = "all"
_LINKED = {
    Entity.DEVICE: "device",
    Entity.IP: "ip",
    Entity.PAYMENT_ACCOUNT: "payment account",
}
# How each entity is named in feature names and in words.
_PREFIX = {
    Entity.USER: "user",
    Entity.ORDER: "order",
    Entity.DEVICE: "device",
    Entity.IP: "ip",
    Entity.PAYMENT_ACCOUNT: "payment_account",
    Entity.SELLER: "seller",
    Entity.PRODUCT: "product",
}
_WORDS = {
    Entity.USER: "the user",
    Entity.ORDER: "the order",
    Entity.DEVICE: "the request's device",
    Entity.IP: "the request's IP",
    Entity.PAYMENT_ACCOUNT: "the order's payment account",
    Entity.SELLER: "the order's seller",
    Entity.PRODUCT: "the order's product",
}


def _ratio(numerator: str, denominator: str) -> Ratio:
    return Ratio(
        f"{numerator}__per__{denominator}",
        numerator,
        denominator,
        doc=f"{numerator} / {denominator}; null when {denominator} is 0",
    )


def _span(label: str) -> str:
    """A window's words: 'the day' / 'the 7 days' before the request's own day."""
    days = int(label[:-1])
    return "the day" if days == 1 else f"the {days} days"


def _when(label: str) -> str:
    """When a window's events happened, in words."""
    if label == ALL:
        return "before the request"
    return f"in {_span(label)} before the request's day, and on that day before the request"


def _window(label: str) -> int | None:
    return None if label == ALL else WINDOWS[label]


@dataclass(frozen=True)
class Family:
    """Features of one kind generated for several entities and windows (window labels:
    ``1d``, ``7d``, ``30d``, ``90d``, ``all``). ``kind`` names the generator:

    - ``volume``: orders and refund requests counted and their amounts added up, and the
      refund share (requests per order);
    - ``verdicts``: requests judged, requests confirmed abusive (net of verdicts that
      cleared one), and the abuse rate, all by the verdicts' time;
    - ``new_users``: users first seen on the entity;
    - ``latest``: hours since the latest order and refund request (whole history).
    """

    kind: str
    entities: tuple[Entity, ...]
    windows: tuple[str, ...] = (ALL,)

    def features(self) -> Iterator[Feature]:
        make = _KINDS[self.kind]
        for entity in self.entities:
            for label in self.windows:
                yield from make(entity, label)


def _volume(entity: Entity, label: str) -> Iterator[Feature]:
    p, who, when, window = _PREFIX[entity], _WORDS[entity], _when(label), _window(label)
    yield Aggregate(
        f"{p}_orders_{label}", S.ORDERS, entity, Agg.COUNT, window,
        doc=f"orders of {who} paid {when}",
    )  # fmt: skip
    yield Aggregate(
        f"{p}_order_amount_{label}", S.ORDERS, entity, Agg.SUM, window,
        doc=f"amount paid for orders of {who} {when}",
    )  # fmt: skip
    yield Aggregate(
        f"{p}_refunds_{label}", S.REFUNDS, entity, Agg.COUNT, window,
        doc=f"refund requests of {who} {when}",
    )  # fmt: skip
    yield Aggregate(
        f"{p}_refund_amount_{label}", S.REFUNDS, entity, Agg.SUM, window,
        doc=f"amount asked back by refund requests of {who} {when}",
    )  # fmt: skip
    yield _ratio(f"{p}_refunds_{label}", f"{p}_orders_{label}")


def _verdicts(entity: Entity, label: str) -> Iterator[Feature]:
    p, who, window = _PREFIX[entity], _WORDS[entity], _window(label)
    when = "before the request" if label == ALL else f"by verdicts of {_span(label)} before it"
    abuse, judged = f"{p}_confirmed_abuse_{label}", f"{p}_verdicts_{label}"
    yield Aggregate(
        abuse, S.ABUSE, entity, Agg.SUM, window,
        doc=f"earlier requests of {who} whose latest verdict known says abuse, {when} "
        "(net of verdicts clearing one)",
    )  # fmt: skip
    yield Aggregate(
        judged, S.VERDICTS, entity, Agg.COUNT, window,
        doc=f"earlier requests of {who} judged {when} (their first verdict)",
    )  # fmt: skip
    yield Ratio(
        f"{p}_abuse_rate_{label}",
        abuse,
        judged,
        doc=f"{abuse} / {judged}, between 0 and 1; null when nothing was judged",
        clip=True,
    )


def _new_users(entity: Entity, label: str) -> Iterator[Feature]:
    p, who = _PREFIX[entity], _WORDS[entity]
    yield Aggregate(
        f"{p}_new_users_{label}", S.SIGHTINGS, entity, Agg.COUNT, _window(label),
        doc=f"users first seen on {who} {_when(label)} (ordering or asking a refund from it)",
    )  # fmt: skip


def _latest(entity: Entity, label: str) -> Iterator[Feature]:
    p, who = _PREFIX[entity], _WORDS[entity]
    for source, what, noun in ((S.ORDERS, "order", "order"), (S.REFUNDS, "refund", "request")):
        yield Aggregate(
            f"{p}_hours_since_last_{what}", source, entity, Agg.HOURS_SINCE_LAST,
            doc=f"hours since the latest {noun} of {who} before the request; null if none",
        )  # fmt: skip


_KINDS: dict[str, Callable[[Entity, str], Iterator[Feature]]] = {
    "volume": _volume,
    "verdicts": _verdicts,
    "new_users": _new_users,
    "latest": _latest,
}

_LINKS = (Entity.DEVICE, Entity.IP, Entity.PAYMENT_ACCOUNT)
_LARGE = (Entity.SELLER, Entity.PRODUCT)
_EVERY = (Entity.USER, *_LINKS, *_LARGE)

FAMILIES: tuple[Family, ...] = (
    Family("volume", (Entity.USER,), ("1d", "7d", "30d", "90d", ALL)),
    Family("volume", (*_LINKS, *_LARGE), ("1d", "7d", "30d", "90d")),
    Family("verdicts", _EVERY, ("7d", "30d", "90d", ALL)),
    Family("verdicts", (Entity.ORDER,), (ALL,)),
    Family("new_users", _LINKS, ("1d", "7d", "30d")),
    Family("latest", _EVERY),
)
"""The generated part of the catalogue. Large entities (a public IP, a big seller, a popular
product) are read from day tiles online, whose cost grows with the window: their volume
windows stop at 90 days."""


def _user_behaviour() -> Iterator[Feature]:
    yield Context(
        "account_age_days",
        lambda c: (c["requested_at"] - c["user_registered_at"]) / DAY,
        ("requested_at", "user_registered_at"),
        doc="days from registration to the request; null for an unknown user",
    )
    yield _copy(
        "phone_verified",
        "user_phone_verified",
        "1 if the user's phone is verified, 0 if not, null if unknown",
    )
    for entity, word in _LINKED.items():
        short = word.replace(" ", "_")
        yield Aggregate(
            f"user_distinct_{short}s_30d",
            S.ORDERS,
            Entity.USER,
            Agg.DISTINCT,
            30 * DAY,
            of=entity.value,
            doc=f"distinct {word}s on the user's orders {_when('30d')}",
        )
    for product in ProductType:
        count = f"user_orders_{product.value}_all"
        yield Aggregate(
            count,
            S.ORDERS,
            Entity.USER,
            Agg.COUNT,
            where=("product_type", product.value),
            doc=f"{product.value} orders the user paid before the request",
        )
        yield Ratio(
            f"user_share_{product.value}",
            count,
            "user_orders_all",
            doc=f"share of the user's orders that were {product.value}; null before any",
        )


Formula = Callable[[Columns], np.ndarray]


def _refund_history() -> Iterator[Feature]:
    for label in ("90d", ALL):
        yield _ratio(f"user_refund_amount_{label}", f"user_order_amount_{label}")
    for decision in ("review", "block"):
        yield Aggregate(
            f"user_{decision}_decisions_all",
            S.DECISIONS,
            Entity.USER,
            Agg.COUNT,
            where=("decision", decision),
            doc=f"earlier requests of the user this service decided {decision}",
        )
    for reason in RefundReason:
        yield Aggregate(
            f"user_refunds_{reason.value}_all",
            S.REFUNDS,
            Entity.USER,
            Agg.COUNT,
            where=("reason", reason.value),
            doc=f"earlier refund requests of the user with reason {reason.value}",
        )


def _known(c: Columns, column: str) -> np.ndarray:
    """Time ``column`` of the order if it happened before the request, else NaN."""
    at = c[column].astype(float)
    return np.where(at < c["requested_at"], at, np.nan)


def _minutes_paid_to_delivered(c: Columns) -> np.ndarray:
    minutes: np.ndarray = (_known(c, "order_delivered_at") - c["order_paid_at"]) / MINUTE
    return minutes


def _minutes_delivered_to_request(c: Columns) -> np.ndarray:
    minutes: np.ndarray = (c["requested_at"] - _known(c, "order_delivered_at")) / MINUTE
    return minutes


def _reported_before(column: str) -> Formula:
    """1 if the order's ``column`` is a time before the request, else 0 (never null)."""

    def compute(c: Columns) -> np.ndarray:
        return np.where(np.isnan(_known(c, column)), 0.0, 1.0)

    return compute


def _membership(c: Columns, values: np.ndarray) -> np.ndarray:
    return np.where(c["order_product_type"] == ProductType.MEMBERSHIP.value, values, np.nan)


def _entitlement(c: Columns) -> np.ndarray:
    days = c["order_service_days"].astype(float)
    left = divide(np.clip(days - c["order_days_used_seen"], 0, None), days)
    return _membership(c, np.round(c["order_amount"] * left, 2))


_ENTITLEMENT_NEEDS = (
    "order_amount",
    "order_service_days",
    "order_days_used_seen",
    "order_product_type",
)


def _copy(name: str, column: str, doc: str, levels: tuple[str, ...] = ()) -> Context:
    """A request or order column as it is: a category when ``levels`` are given."""
    if levels:
        return Context(name, lambda c: c[column], (column,), doc, T.CATEGORY, levels)
    return Context(name, lambda c: c[column].astype(float), (column,), doc)


def _order_context() -> Iterator[Feature]:
    yield _copy(
        "product_type",
        "order_product_type",
        "product type of the order",
        tuple(p.value for p in ProductType),
    )
    yield _copy(
        "reason", "reason", "reason given for the refund", tuple(r.value for r in RefundReason)
    )
    yield _copy(
        "payment_method",
        "order_payment_method",
        "how the order was paid; null if unknown",
        ("alipay", "wechat_pay", "bank_card", "balance"),
    )
    yield _copy("request_amount", "amount", "amount asked back, in the order's currency")
    yield _copy("order_amount", "order_amount", "amount paid for the order, in its currency")
    yield _copy(
        "request_amount_base", "amount_base", "amount asked back, in the reporting currency"
    )
    yield _copy(
        "order_amount_base",
        "order_amount_base",
        "amount paid for the order, in the reporting currency",
    )
    for entity, label in _TYPICAL:
        p = _PREFIX[entity]
        mean = f"{p}_mean_order_amount_{label}"
        yield Ratio(
            mean,
            f"{p}_order_amount_{label}",
            f"{p}_orders_{label}",
            doc=f"mean amount of an order of {_WORDS[entity]} {_when(label)}; null before any",
        )
        yield Ratio(
            f"order_amount_vs_{p}_mean_{label}",
            "order_amount_base",
            mean,
            doc=f"amount paid for the order / {mean}; null before any",
        )
    yield Ratio(
        "requested_share_of_paid",
        "amount",
        "order_amount",
        doc="amount asked back / amount paid; null for a free order",
    )
    yield Context(
        "minutes_paid_to_delivered",
        _minutes_paid_to_delivered,
        ("order_delivered_at", "order_paid_at", "requested_at"),
        doc="minutes from payment to delivery; null if not delivered before the request",
    )
    yield Context(
        "minutes_delivered_to_request",
        _minutes_delivered_to_request,
        ("order_delivered_at", "requested_at"),
        doc="minutes from delivery to the request; null if not delivered before it",
    )
    yield Context(
        "hours_paid_to_request",
        lambda c: (c["requested_at"] - c["order_paid_at"]) / HOUR,
        ("requested_at", "order_paid_at"),
        doc="hours from payment to the request",
    )
    yield Context(
        "redeemed_before_request",
        _reported_before("order_redeemed_at"),
        ("order_redeemed_at", "requested_at"),
        doc="1 if the issuer reported the code redeemed (or the currency credited) before "
        "the request, else 0",
    )
    yield Context(
        "order_value_credited",
        _reported_before("order_credited_at"),
        ("order_credited_at", "requested_at"),
        doc="1 if the issuer reported, before the request, that the value reached the "
        "buyer's own account; else 0 (also when the issuer does not report it)",
    )
    yield Context(
        "order_activation_failed",
        _reported_before("order_activation_failed_at"),
        ("order_activation_failed_at", "requested_at"),
        doc="1 if the issuer reported, before the request, that the value never reached the "
        "buyer; else 0",
    )
    yield Aggregate(
        "order_days_used_seen",
        S.USAGE,
        Entity.ORDER,
        Agg.COUNT,
        doc="days the platform saw the membership used before the request (0 for others)",
    )
    yield _copy(
        "days_used_claimed", "days_used_claimed", "days of use the user admits; null if not stated"
    )
    yield Context(
        "days_used_underclaimed",
        lambda c: _membership(c, c["order_days_used_seen"] - c["days_used_claimed"]),
        ("order_days_used_seen", "days_used_claimed", "order_product_type"),
        doc="days seen used minus days claimed (memberships); null if no claim or not a membership",
    )
    yield Context(
        "prorated_entitlement",
        _entitlement,
        _ENTITLEMENT_NEEDS,
        doc="price x unused days / service days, by the days the platform saw used, before "
        "any fee (memberships; null otherwise)",
    )
    yield Context(
        "excess_over_entitlement",
        lambda c: c["amount"] - c["prorated_entitlement"],
        ("amount", "prorated_entitlement"),
        doc="amount asked back minus the prorated entitlement (memberships; null otherwise)",
    )
    yield Aggregate(
        "order_earlier_refunds",
        S.REFUNDS,
        Entity.ORDER,
        Agg.COUNT,
        doc="refund requests on the same order before this one",
    )
    yield Aggregate(
        "order_earlier_refund_amount",
        S.REFUNDS,
        Entity.ORDER,
        Agg.SUM,
        doc="amount already asked back on the same order, in its currency",
    )


def _order_refund_money() -> Iterator[Feature]:
    """What earlier requests on the order came to, in money: paid back, refused, not yet
    answered, approved by this service; and what is left to refund."""
    yield Aggregate(
        "order_refund_paid_all",
        S.OUTCOMES,
        Entity.ORDER,
        Agg.SUM,
        doc="money already paid back on the order, in its currency, by earlier requests "
        "whose outcome was known before the request; 0 if none",
    )
    yield Aggregate(
        "order_refunds_refused_all",
        S.OUTCOMES,
        Entity.ORDER,
        Agg.COUNT,
        where=("outcome", "refused"),
        doc="earlier requests on the order refused (nothing paid back), known before the request",
    )
    yield Aggregate(
        "order_refunds_answered_all",
        S.OUTCOMES,
        Entity.ORDER,
        Agg.COUNT,
        doc="earlier requests on the order paid or refused, known before the request",
        internal=True,
    )
    yield Derived(
        "order_refunds_unanswered",
        lambda c: c["order_earlier_refunds"] - c["order_refunds_answered_all"],
        ("order_earlier_refunds", "order_refunds_answered_all"),
        doc="earlier requests on the order with no outcome known before the request (not "
        "answered yet, or never); 0 if none",
    )
    yield Aggregate(
        "order_refund_approved_all",
        S.DECISIONS,
        Entity.ORDER,
        Agg.SUM,
        where=("decision", "approve"),
        doc="amount this service approved on earlier requests of the order, decided before "
        "the request, in its currency; 0 if none",
    )
    yield Derived(
        "order_refund_out_all",
        lambda c: np.maximum(c["order_refund_paid_all"], c["order_refund_approved_all"]),
        ("order_refund_paid_all", "order_refund_approved_all"),
        doc="money paid or approved for payment on the order before the request: the larger "
        "of order_refund_paid_all and order_refund_approved_all, not their sum (both may "
        "describe the same request), so it under-counts when some earlier requests were "
        "only paid and others only approved",
    )
    yield Derived(
        "order_refund_left",
        _refund_left,
        ("order_amount", "order_refund_out_all"),
        doc="amount paid for the order minus order_refund_out_all: what is still refundable, "
        "in its currency (negative when more went out); null for an unknown order",
    )
    yield Derived(
        "request_amount_over_left",
        _over_left,
        ("amount", "order_refund_left"),
        doc="1 if the amount asked back is more than order_refund_left (it would pay more "
        "than is left of the order), else 0; null for an unknown order",
    )


def _refund_left(c: Columns) -> np.ndarray:
    # In whole cents: 0.3 - 0.1 is not 0.2 in floating point.
    left: np.ndarray = np.round(c["order_amount"] - c["order_refund_out_all"], 2)
    return left


def _over_left(c: Columns) -> np.ndarray:
    asked, left = np.rint(c["amount"] * CENTS), np.rint(c["order_refund_left"] * CENTS)
    return np.where(np.isnan(asked) | np.isnan(left), np.nan, (asked > left).astype(float))


# The typical amounts an order's is set against: the user's own, the seller's, the product's.
_TYPICAL = (
    (Entity.USER, "30d"),
    (Entity.USER, ALL),
    (Entity.SELLER, "30d"),
    (Entity.PRODUCT, "90d"),
)


def _linked_entities() -> Iterator[Feature]:
    for entity, word in _LINKED.items():
        short = word.replace(" ", "_")
        yield Aggregate(
            f"{short}_users_seen",
            S.SIGHTINGS,
            Entity(entity),
            Agg.COUNT,
            doc=f"distinct users seen on the request's {word} before it (the requester "
            f"included if seen); null without a {word}",
        )
        yield Aggregate(
            f"{short}_newest_registration",
            S.SIGHTINGS,
            Entity(entity),
            Agg.MAX,
            doc=f"registration time (store microseconds) of the youngest account seen on "
            f"the {word}; null if none",
            internal=True,
        )
        yield Derived(
            f"{short}_youngest_account_days",
            _age_from(f"{short}_newest_registration"),
            (f"{short}_newest_registration", "requested_at"),
            doc=f"age in days of the youngest account seen on the {word}; null if none",
        )


def _age_from(newest: str) -> Formula:
    def compute(c: Columns) -> np.ndarray:
        age: np.ndarray = (c["requested_at"] - c[newest].astype(float)) / DAY
        return age

    return compute


def _seller() -> Iterator[Feature]:
    yield Aggregate(
        "seller_invalid_code_refunds_30d",
        S.REFUNDS,
        Entity.SELLER,
        Agg.COUNT,
        30 * DAY,
        where=("reason", RefundReason.INVALID_CODE.value),
        doc=f"invalid_code refund requests on the seller's orders {_when('30d')}",
    )
    yield _ratio("seller_invalid_code_refunds_30d", "seller_refunds_30d")


def _families() -> Iterator[Feature]:
    for family in FAMILIES:
        yield from family.features()


def _build() -> dict[str, Feature]:
    catalog: dict[str, Feature] = {}
    groups = (
        _user_behaviour,
        _families,
        _refund_history,
        _order_context,
        _order_refund_money,
        _linked_entities,
        _seller,
    )
    for group in groups:
        for feature in group():
            if feature.name in catalog:
                raise ValueError(f"feature {feature.name!r} is declared twice")
            catalog[feature.name] = feature
    return catalog


CATALOG: dict[str, Feature] = _build()


def feature_names() -> list[str]:
    """Every feature, in catalogue order (the model's column order)."""
    return list(CATALOG)


def model_features() -> list[str]:
    """The features a model reads: the catalogue without its internal steps."""
    return [n for n, f in CATALOG.items() if not f.internal]
