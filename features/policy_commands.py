"""``riskmodel policy check FILE``: validate a policy file as the service would."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from features.policy_fields import load_with_catalogue

__all__ = ["register"]


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
