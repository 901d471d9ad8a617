"""The fields a policy's conditions may read, and loading a policy against them.

This lives in ``features`` rather than ``riskmodel.policy`` because checking a policy needs
the feature catalogue, and ``riskmodel`` sits below ``features``: the loader takes the
known fields as an argument, and this module, which may know the catalogue, supplies them.
Serving, training and the ``riskmodel policy`` command load policies through it.
"""

from __future__ import annotations

from pathlib import Path

from features.catalog import CATALOG
from features.spec import Type
from riskmodel.engine import REQUEST_FIELDS
from riskmodel.policy import Kind, KnownField, Policy, load_policy

__all__ = ["load_with_catalogue", "policy_fields"]

_REQUEST_DOCS = {
    "request_id": "the refund request",
    "order_id": "the order",
    "user_id": "the user",
    "device_id": "the device the request came from",
    "ip": "the IP the request came from",
    "channel": "the channel of the request (app, web, support)",
    "reason": "reason given for the refund",
    "amount": "amount asked back",
    "days_used_claimed": "days of use the user admits",
    "product_type": "product type of the order",
    "order_amount": "amount paid for the order",
    "service_days": "days of service the membership covers",
    "payment_account": "the payment account of the order",
}


def policy_fields() -> dict[str, KnownField]:
    """Every name a condition may read: the catalogue's features and the request fields,
    with their kinds and descriptions."""
    fields = {
        name: KnownField(Kind.STRING if feature.type is Type.CATEGORY else Kind.NUMBER, feature.doc)
        for name, feature in CATALOG.items()
    }
    for name, kind in REQUEST_FIELDS.items():
        fields.setdefault(name, KnownField(kind, _REQUEST_DOCS.get(name, "")))
    return fields


def load_with_catalogue(path: str | Path) -> Policy:
    """``riskmodel.policy.load_policy`` against the feature catalogue."""
    return load_policy(path, policy_fields())
