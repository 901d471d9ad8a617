"""``riskmodel shadow report``: champion against the shadow challenger on live decisions.

Plain argument handling over ``training.shadow``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from features.policy_fields import load_with_catalogue
from riskmodel.cli import add_database_option
from riskmodel.store import open_store, resolve_database_url
from training.commands import date_argument
from training.shadow import render, shadow_report

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add ``shadow report`` to the ``riskmodel`` parser."""
    parser = commands.add_parser(
        "shadow", help="the shadow challenger against the champion on live decisions"
    )
    actions = parser.add_subparsers(dest="shadow_command", metavar="ACTION", required=True)
    report = actions.add_parser(
        "report",
        help="where champion and challenger decide differently, the money, precision, recall",
        description="Read the decisions made in [--since, --until) that carry a challenger "
        "score and decide each again with the challenger's score under POLICY (the thresholds "
        "of the request's segment; lists, rules, money checks and holds as the stored "
        "decision's reasons say). Prints how often the two differ, the money involved, and "
        "each model's precision, recall and average precision on the labels known now.",
    )
    report.add_argument(
        "--policy",
        type=Path,
        required=True,
        help="the live policy file (YAML); only decisions made with it are compared",
    )
    report.add_argument("--since", type=date_argument, help="first decision time (ISO 8601)")
    report.add_argument("--until", type=date_argument, help="decision time to stop before")
    report.add_argument(
        "--challenger",
        metavar="VERSION",
        help="challenger version to report (default: the one that scored the latest decision)",
    )
    report.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_database_option(report)
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    policy = load_with_catalogue(args.policy)
    engine = open_store(resolve_database_url(args.database_url))
    try:
        result = shadow_report(
            engine, policy, since=args.since, until=args.until, challenger=args.challenger
        )
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, allow_nan=False))
    else:
        print(render(result), end="")
    return 0
