"""``riskmodel backtest``: what a policy (and the model) would have decided on past requests."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from features import History, load_history
from features.policy_commands import load_with_catalogue
from riskmodel.cli import add_database_option
from riskmodel.errors import DataError
from riskmodel.registry import Registry
from training.backtest import Backtest, backtest
from training.dataset import iso, load_ground_truth, to_micros
from training.signature import catalog_signature

__all__ = ["register"]

_ROWS = (
    ("requests", "{:,.0f}"),
    ("approve_rate", "{:.2%}"),
    ("review_rate", "{:.2%}"),
    ("block_rate", "{:.2%}"),
    ("abuse_caught", "{:,.0f}"),
    ("abuse_caught_share", "{:.2%}"),
    ("abuse_caught_amount", "{:,.2f}"),
    ("abuse_blocked", "{:,.0f}"),
    ("paid_to_abuse", "{:,.2f}"),
    ("honest_held", "{:,.0f}"),
    ("honest_held_share", "{:.2%}"),
    ("honest_held_amount", "{:,.2f}"),
    ("honest_blocked_amount", "{:,.2f}"),
    ("paid_total", "{:,.2f}"),
    ("reviews_per_day_mean", "{:,.1f}"),
    ("reviews_per_day_max", "{:,.0f}"),
)


def _date(text: str) -> int:
    try:
        micros = to_micros(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    assert micros is not None
    return micros


def register(commands: Any) -> None:
    """Add ``backtest`` to the ``riskmodel`` parser."""
    bt = commands.add_parser(
        "backtest",
        help="replay past requests through a policy and a model; what would change",
        description="Decide every past refund request with its point-in-time features, the "
        "model's scores and POLICY (and --against, the one in service): decision rates, "
        "abuse caught, honest refunds held, review load per day, and each request whose "
        "decision would change with the reason codes of both.",
    )
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="directory", type=Path, help="dataset directory")
    add_database_option(source)
    bt.add_argument("--policy", type=Path, required=True, help="the policy to try (YAML)")
    bt.add_argument("--against", type=Path, help="the policy to compare with (YAML)")
    bt.add_argument("--model", default="champion", help="version or alias (champion)")
    bt.add_argument(
        "--registry",
        type=Path,
        help="registry directory (default: $RISKMODEL_REGISTRY, else data/registry)",
    )
    bt.add_argument("--since", type=_date, help="first request time (ISO 8601)")
    bt.add_argument("--until", type=_date, help="requests before this time (ISO 8601)")
    bt.add_argument("--changes", type=Path, help="write every changed request to this .csv")
    bt.add_argument("--show", type=int, default=10, help="changed requests to print (10)")
    bt.set_defaults(handler=_backtest)


def _backtest(args: argparse.Namespace) -> int:
    if args.changes is not None and args.changes.suffix != ".csv":
        raise DataError(f"--changes {args.changes}: changes are written as .csv")
    policy = load_with_catalogue(args.policy)
    against = load_with_catalogue(args.against) if args.against else None
    bundle = Registry(args.registry).load(args.model, expect=catalog_signature())
    history: History = load_history(args.directory if args.directory else args.database_url)
    truth = load_ground_truth(args.directory) if args.directory else None
    started = time.perf_counter()
    result = backtest(
        history,
        policy,
        bundle,
        against=against,
        ground_truth=truth,
        since=args.since,
        until=args.until,
    )
    seconds = time.perf_counter() - started
    _print(result, policy.version, against.version if against else None, seconds, args.show)
    if args.changes is not None:
        table = result.changes.copy()
        for column in ("reason_codes", "current_reason_codes"):
            table[column] = [" ".join(codes) for codes in table[column]]
        table["requested_at"] = [iso(t) for t in table["requested_at"]]
        args.changes.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.changes, index_label="request_id", float_format="%.4f")
        print(f"changes: {len(table):,} requests -> {args.changes}")
    return 0


def _print(result: Backtest, new: str, current: str | None, seconds: float, show: int) -> None:
    print(
        f"{result.summary['new']['requests']:,.0f} requests replayed with model "
        f"{result.model_version} in {seconds:.1f} s; outcomes from {result.judged_against}"
    )
    columns = [("new", new)] + ([("current", current)] if current else [])
    print(f"  {'':<24}" + "".join(f"{label:>24}" for _, label in columns))
    for key, fmt in _ROWS:
        cells = "".join(f"{fmt.format(result.summary[name][key]):>24}" for name, _ in columns)
        print(f"  {key:<24}{cells}")
    if current is None:
        return
    changes = result.changes
    print(f"decisions that change: {len(changes):,}")
    moves = changes.groupby(["current_decision", "decision"]).size()
    for move, count in moves.items():
        before, after = str(move[0]), str(move[1])  # type: ignore[index]
        print(f"  {before:>7} -> {after:<7} {int(count):>10,}")
    for request_id, row in changes.head(show).iterrows():
        print(
            f"  {request_id}: {row['current_decision']} -> {row['decision']} "
            f"(score {row['score']:.3f}); now {' '.join(row['reason_codes']) or '-'}; "
            f"was {' '.join(row['current_reason_codes']) or '-'}"
        )
