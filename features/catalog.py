"""The feature catalogue: every model input, declared once (see ``features.spec``).

Missing data has a defined value, stated in each feature's ``doc``: counts and sums are 0
when there is no event; "hours since", maxima, ages and ratios with nothing to divide are
null (NaN); every feature of a device, IP or payment account is null when the request has
none. The model reads null as "unknown", which is not the same as zero.

    >>> from features.catalog import CATALOG
    >>> CATALOG["user_orders_7d"].doc
    'orders the user paid in the 7 days before the request'
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from features.spec import DAY, HOUR, Agg, Aggregate, Columns, Context, Derived, Entity, Feature
from features.spec import Source as S
from features.spec import Type as T
from riskmodel.domain import ProductType, RefundReason

__all__ = ["CATALOG", "FEATURE_VERSION", "feature_names", "model_features"]

FEATURE_VERSION = "1"
"""Raised whenever a definition changes meaning, so stored data can say what made it."""

MINUTE = HOUR // 60
WINDOWS = {"1d": DAY, "7d": 7 * DAY, "30d": 30 * DAY, "90d": 90 * DAY}
_LINKED = {
    Entity.DEVICE: "device",
    Entity.IP: "ip",
    Entity.PAYMENT_ACCOUNT: "payment account",
}


def _span(label: str) -> str:
    days = int(label[:-1])
    return "the day" if days == 1 else f"the {days} days"


def _divide(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom, null where bottom is 0 or null."""
    top, bottom = np.asarray(top, dtype=float), np.asarray(bottom, dtype=float)
    out = np.full(np.broadcast(top, bottom).shape, np.nan)
    np.divide(top, bottom, out=out, where=bottom > 0)
    return out


def _ratio(numerator: str, denominator: str) -> Derived:
    def compute(c: Columns) -> np.ndarray:
        return _divide(c[numerator], c[denominator])

    return Derived(
        f"{numerator}__per__{denominator}",
        compute,
        (numerator, denominator),
        doc=f"{numerator} / {denominator}; null when {denominator} is 0",
    )


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
    for label, window in WINDOWS.items():
        yield Aggregate(
            f"user_orders_{label}",
            S.ORDERS,
            Entity.USER,
            Agg.COUNT,
            window,
            doc=f"orders the user paid in {_span(label)} before the request",
        )
        yield Aggregate(
            f"user_order_amount_{label}",
            S.ORDERS,
            Entity.USER,
            Agg.SUM,
            window,
            doc=f"amount the user paid in {_span(label)} before the request",
        )
    yield Aggregate(
        "user_orders_all",
        S.ORDERS,
        Entity.USER,
        Agg.COUNT,
        doc="orders the user paid before the request",
    )
    yield Aggregate(
        "user_order_amount_all",
        S.ORDERS,
        Entity.USER,
        Agg.SUM,
        doc="amount the user paid before the request",
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
            doc=f"distinct {word}s on the user's orders in the 30 days before the request",
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
        yield Derived(
            f"user_share_{product.value}",
            _share(count),
            (count, "user_orders_all"),
            doc=f"share of the user's orders that were {product.value}; null before any",
        )
    yield Aggregate(
        "user_hours_since_last_order",
        S.ORDERS,
        Entity.USER,
        Agg.HOURS_SINCE_LAST,
        doc="hours since the user's latest order before the request; null if none",
    )


Formula = Callable[[Columns], np.ndarray]


def _share(count: str) -> Formula:
    def compute(c: Columns) -> np.ndarray:
        return _divide(c[count], c["user_orders_all"])

    return compute


def _refund_history() -> Iterator[Feature]:
    for label, window in [*WINDOWS.items(), ("all", None)]:
        words = "before the request" if window is None else f"in {_span(label)} before it"
        yield Aggregate(
            f"user_refunds_{label}",
            S.REFUNDS,
            Entity.USER,
            Agg.COUNT,
            window,
            doc=f"refund requests the user made {words}",
        )
        yield Aggregate(
            f"user_refund_amount_{label}",
            S.REFUNDS,
            Entity.USER,
            Agg.SUM,
            window,
            doc=f"amount the user asked back {words}",
        )
    for label in ("90d", "all"):
        yield _ratio(f"user_refunds_{label}", f"user_orders_{label}")
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
    yield Aggregate(
        "user_confirmed_abuse_all",
        S.ABUSE,
        Entity.USER,
        Agg.SUM,
        doc="earlier requests of the user whose latest label known before the request says abuse",
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
    yield Aggregate(
        "user_hours_since_last_refund",
        S.REFUNDS,
        Entity.USER,
        Agg.HOURS_SINCE_LAST,
        doc="hours since the user's latest refund request; null if none",
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


def _redeemed_before_request(c: Columns) -> np.ndarray:
    return np.where(np.isnan(_known(c, "order_redeemed_at")), 0.0, 1.0)


def _membership(c: Columns, values: np.ndarray) -> np.ndarray:
    return np.where(c["order_product_type"] == ProductType.MEMBERSHIP.value, values, np.nan)


def _entitlement(c: Columns) -> np.ndarray:
    days = c["order_service_days"].astype(float)
    left = _divide(np.clip(days - c["order_days_used_seen"], 0, None), days)
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
    yield _copy("request_amount", "amount", "amount asked back")
    yield _copy("order_amount", "order_amount", "amount paid for the order")
    yield Context(
        "requested_share_of_paid",
        lambda c: _divide(c["amount"], c["order_amount"]),
        ("amount", "order_amount"),
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
        _redeemed_before_request,
        ("order_redeemed_at", "requested_at"),
        doc="1 if the issuer reported the code redeemed (or the currency credited) before "
        "the request, else 0",
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
        lambda c: c["amount"] - _entitlement(c),
        ("amount", *_ENTITLEMENT_NEEDS),
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
        doc="amount already asked back on the same order",
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
        yield Aggregate(
            f"{short}_refunds_all",
            S.REFUNDS,
            Entity(entity),
            Agg.COUNT,
            doc=f"refund requests made from the {word} before the request (any user)",
        )
        yield Aggregate(
            f"{short}_confirmed_abuse_all",
            S.ABUSE,
            Entity(entity),
            Agg.SUM,
            doc=f"requests from the {word} whose latest label known before the request says abuse",
        )


def _age_from(newest: str) -> Formula:
    def compute(c: Columns) -> np.ndarray:
        age: np.ndarray = (c["requested_at"] - c[newest].astype(float)) / DAY
        return age

    return compute


def _seller() -> Iterator[Feature]:
    yield Aggregate(
        "seller_orders_30d",
        S.ORDERS,
        Entity.SELLER,
        Agg.COUNT,
        30 * DAY,
        doc="orders of the seller in the 30 days before the request; null without a seller",
    )
    yield Aggregate(
        "seller_refunds_30d",
        S.REFUNDS,
        Entity.SELLER,
        Agg.COUNT,
        30 * DAY,
        doc="refund requests on the seller's orders in the 30 days before the request",
    )
    yield Aggregate(
        "seller_invalid_code_refunds_30d",
        S.REFUNDS,
        Entity.SELLER,
        Agg.COUNT,
        30 * DAY,
        where=("reason", RefundReason.INVALID_CODE.value),
        doc="invalid_code refund requests on the seller's orders in the 30 days before",
    )
    yield _ratio("seller_refunds_30d", "seller_orders_30d")
    yield _ratio("seller_invalid_code_refunds_30d", "seller_refunds_30d")


def _build() -> dict[str, Feature]:
    catalog: dict[str, Feature] = {}
    for group in (_user_behaviour, _refund_history, _order_context, _linked_entities, _seller):
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
