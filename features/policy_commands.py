"""``riskmodel policy check FILE``: validate a policy file as the service would;
``riskmodel policy history``: every policy the service ran, from the store's archive."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from features.policy_fields import load_with_catalogue
from riskmodel.cli import add_database_option

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
    history = actions.add_parser(
        "history",
        help="every policy the service ran, from the store's archive",
        description="Every policy deployed (riskmodel deploy policy, or a reload) or run "
        "from its file by a worker, oldest first, with its hash; --show HASH prints one's "
        "file and list files as archived.",
    )
    add_database_option(history)
    history.add_argument("--show", metavar="HASH", help="print this archived policy (a prefix)")
    history.set_defaults(handler=_history)


def _history(args: argparse.Namespace) -> int:
    from riskmodel.store import open_store, reading
    from riskmodel.store.operations import live_now, policy_history
    from riskmodel.units import iso

    engine = open_store(args.database_url)
    try:
        with reading(engine) as conn:
            found = policy_history(conn)
            live = live_now(conn).get("policy")
    finally:
        engine.dispose()
    if args.show:
        chosen = [p for p in found if p.sha256.startswith(args.show)]
        if len(chosen) != 1:
            print(f"error: {len(chosen)} archived policies start with {args.show!r}")
            return 1
        print(chosen[0].text, end="" if chosen[0].text.endswith("\n") else "\n")
        for name, text in sorted(chosen[0].list_files.items()):
            print(f"--- list file {name}\n{text}", end="" if text.endswith("\n") else "\n")
        return 0
    if not found:
        print("no policy was ever deployed: the service runs its policy file")
    for policy in found:
        mark = "  (live)" if live is not None and live.value == policy.sha256 else ""
        print(f"{iso(policy.archived_at)}  {policy.sha256}  {policy.version}{mark}")
    return 0


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
