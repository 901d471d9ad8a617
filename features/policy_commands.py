"""``riskmodel policy check FILE``, and the fields a policy's conditions may read.

This lives in ``features`` rather than ``riskmodel.policy`` because checking a policy needs
the feature catalogue, and ``riskmodel`` sits below ``features``: the loader takes the
known fields as an argument, and this module, which may know the catalogue, supplies them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from features.catalog import CATALOG
from features.spec import Type
from riskmodel.engine import REQUEST_FIELDS
from riskmodel.policy import Kind, KnownField, Policy, load_policy

__all__ = ["load_with_catalogue", "policy_fields", "register"]

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


def register(commands: Any) -> None:
    """Add the ``policy`` sub-command to the ``riskmodel`` parser."""
    parser = commands.add_parser("policy", help="check a decision policy file")
    actions = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a policy file as the service would before putting it live",
        description="Validate FILE as a whole: YAML, schema, every condition against the "
        "feature catalogue, lists and queues. Prints a summary, or every problem with its "
        "line, column and rule (exit status 1).",
    )
    check.add_argument("file", type=Path, help="policy file (YAML)")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    policy = load_with_catalogue(args.file)
    spec = policy.spec
    enabled = [r for r in spec.rules if r.enabled]
    print(f"{args.file}: policy {policy.version} is valid")
    print(f"  sha256     {policy.sha256}")
    print(
        f"  thresholds review {spec.thresholds.review:g}, block {spec.thresholds.block:g}; "
        f"{len(spec.thresholds.segments)} segment(s)"
    )
    for segment in spec.thresholds.segments:
        print(f"    {segment.name:<24} review {segment.review:g}, block {segment.block:g}")
    print(f"  rules      {len(enabled)} enabled of {len(spec.rules)}")
    for rule in spec.rules:
        state = "" if rule.enabled else " (disabled)"
        print(f"    {rule.action.value:<7} {rule.code:<36} {rule.name}{state}")
    sizes = ", ".join(
        f"{side} {kind} {len(entries[kind])}"
        for side, entries in (("block", policy.blocked), ("allow", policy.allowed))
        for kind in entries
        if entries[kind]
    )
    print(f"  lists      {sizes or 'empty'}")
    queues = ", ".join(f"{q.name} {q.deadline_hours:g} h" for q in spec.review.queues)
    print(f"  queues     {queues} (default {spec.review.default_queue})")
    green = spec.green_channel
    if green is not None and green.enabled:
        print(
            f"  green      up to {green.max_amount}, review threshold "
            f"{green.review_threshold:g}, exempt: {', '.join(green.exempt_rules) or 'none'}"
        )
    return 0
