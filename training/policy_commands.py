"""``riskmodel backtest`` and ``riskmodel tune``: what a policy (and the model) would have
decided on past requests, and which thresholds to give it. Both print the money first
(abusive money paid, honest money held, honest requests blocked per cause) and write the
same figures to ``report.json`` and ``report.md`` (``training.policy_report``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features import History, load_history
from features.cluster import add_dask_option, feature_builder, tables_on_dask
from features.policy_fields import load_with_catalogue
from riskmodel.cli import add_database_option
from riskmodel.errors import DataError
from riskmodel.registry import Registry
from riskmodel.units import iso, to_micros
from training.backtest import Backtest, backtest
from training.commands import date_argument
from training.dataset import load_ground_truth
from training.policy_report import (
    BACKTEST_ROWS,
    TUNE_ROWS,
    backtest_columns,
    backtest_document,
    backtest_markdown,
    money_text,
    tuning_columns,
    tuning_document,
    tuning_markdown,
    write_report,
)
from training.signature import catalog_signature
from training.tune import Constraints, Tuning, grid, plot_tuning, tune, write_policy

if TYPE_CHECKING:
    import pandas as pd

    from riskmodel.bundle import ModelBundle
    from riskmodel.policy import Policy

__all__ = ["INFEASIBLE", "register"]

INFEASIBLE = 3
"""Exit status of ``riskmodel tune`` when no threshold pair meets the constraints."""


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is a share: between 0 and 1 (0.005 is 0.5 %)")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number (a number of honest requests)"
        ) from exc
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"{text} must be 0 or more (a number of honest requests; 0 blocks none)"
        )
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"{text} is a share of the honest requests: between 0 and 1 (0.001 is 1 in 1,000)"
        )
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def register(commands: Any) -> None:
    """Add ``backtest`` and ``tune`` to the ``riskmodel`` parser."""
    bt = commands.add_parser(
        "backtest",
        help="replay past requests through a policy and a model; what would change",
        description="Decide every past refund request with its point-in-time features, the "
        "model's scores and POLICY (and --against, the one in service). Money first: abusive "
        "money paid, honest money held, honest requests blocked (in all and per reason code "
        "that blocked them); then decision rates, abuse caught, honest refunds held, review "
        "load per day, and each request whose decision would change with the reason codes "
        "of both.",
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
    bt.add_argument("--since", type=date_argument, help="first request time (ISO 8601)")
    bt.add_argument("--until", type=date_argument, help="requests before this time (ISO 8601)")
    add_dask_option(bt)
    bt.add_argument("--changes", type=Path, help="write every changed request to this .csv")
    bt.add_argument("--show", type=int, default=10, help="changed requests to print (10)")
    bt.add_argument(
        "--out", type=Path, help="report directory: report.json, report.md (default: print only)"
    )
    bt.set_defaults(handler=_backtest)
    _register_tune(commands)


def _backtest(args: argparse.Namespace) -> int:
    if args.changes is not None and args.changes.suffix != ".csv":
        raise DataError(f"--changes {args.changes}: changes are written as .csv")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise DataError(f"--out {args.out}: a report directory, not a file")
    policy = load_with_catalogue(args.policy)
    against = load_with_catalogue(args.against) if args.against else None
    bundle = Registry(args.registry).load(args.model, expect=catalog_signature())
    truth = load_ground_truth(args.directory) if args.directory else None
    history: History | None = None
    # Unless the cluster reads the dataset itself, as part of the replay timed below.
    if not (args.dask and args.directory):
        history = load_history(args.directory if args.directory else args.database_url)
    started = time.perf_counter()
    if history is None:
        result = _backtest_on_dask(args, policy, bundle, against, truth)
    else:
        with feature_builder(args.dask) as build:
            result = backtest(
                history,
                policy,
                bundle,
                against=against,
                ground_truth=truth,
                since=args.since,
                until=args.until,
                build=build,
            )
    seconds = time.perf_counter() - started
    current = against.version if against else None
    _print(result, policy.version, current, seconds, args.show)
    if args.out is not None:
        files = {"new": str(args.policy)} | ({"current": str(args.against)} if against else {})
        write_report(
            backtest_document(result, policy.version, current, files),
            backtest_markdown(result, policy.version, current),
            args.out,
        )
        print(f"report: {args.out / 'report.json'}, {args.out / 'report.md'}")
    if args.changes is not None:
        table = result.changes.copy()
        for column in ("reason_codes", "current_reason_codes"):
            table[column] = [" ".join(codes) for codes in table[column]]
        table["requested_at"] = [iso(t) for t in table["requested_at"]]
        args.changes.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.changes, index_label="request_id", float_format="%.4f")
        print(f"changes: {len(table):,} requests -> {args.changes}")
    return 0


def _backtest_on_dask(
    args: argparse.Namespace,
    policy: Policy,
    bundle: ModelBundle,
    against: Policy | None,
    truth: pd.DataFrame | None,
) -> Backtest:
    """The workers read the dataset directory: the client never holds the history."""
    with tables_on_dask(args.dask, args.directory) as (client, tables, checks):
        from training.cluster_reads import backtest_on_dask

        return backtest_on_dask(
            client,
            tables,
            policy,
            bundle,
            against=against,
            ground_truth=truth,
            since=args.since,
            until=args.until,
            checks=checks,
        )


def _print(result: Backtest, new: str, current: str | None, seconds: float, show: int) -> None:
    summary = result.summary["new"]
    print(
        f"{summary['requests']:,.0f} requests replayed with model "
        f"{result.model_version} in {seconds:.1f} s; outcomes from {result.judged_against}: "
        f"{summary['abusive_requests']:,.0f} abusive asking {summary['abusive_amount']:,.2f}, "
        f"{summary['honest_requests']:,.0f} honest asking {summary['honest_amount']:,.2f}"
    )
    for line in money_text(backtest_columns(result, new, current)):
        print(line)
    columns = [("new", new)] + ([("current", current)] if current else [])
    print("rates and counts")
    print(f"  {'':<24}" + "".join(f"{label:>24}" for _, label in columns))
    for key, fmt in BACKTEST_ROWS:
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


def _register_tune(commands: Any) -> None:
    tu = commands.add_parser(
        "tune",
        help="trade-off table of review / block thresholds and a proposed pair",
        description="On the latest evaluation period (by default from the end of the "
        "model's training window), decide every request with every candidate pair of the "
        "default thresholds (or --segment's), rules and lists included: review and block "
        "rates, abuse caught, honest refunds held and blocked, reviews per day; the money "
        "(abusive money paid, honest money held, honest requests blocked per cause) first. "
        "Propose the pair that holds the most abusive money within the constraints, never "
        "above a ceiling on honest blocks. Exit status 3 when no pair meets them (the "
        "closest is shown).",
    )
    source = tu.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="directory", type=Path, help="dataset directory")
    add_database_option(source)
    tu.add_argument("--policy", type=Path, required=True, help="the policy to tune (YAML)")
    tu.add_argument("--segment", help="tune this segment's pair (default: the default pair)")
    tu.add_argument("--model", default="champion", help="version or alias (champion)")
    tu.add_argument(
        "--registry",
        type=Path,
        help="registry directory (default: $RISKMODEL_REGISTRY, else data/registry)",
    )
    tu.add_argument("--since", type=date_argument, help="period start (default: the model's until)")
    tu.add_argument("--until", type=date_argument, help="period end (default: the data's end)")
    limits = tu.add_argument_group(
        "constraints (shares are of money asked back; rates and counts are of requests)"
    )
    limits.add_argument(
        "--max-reviews-per-day", type=_non_negative, help="review capacity, requests a day"
    )
    limits.add_argument(
        "--reviews-per-day",
        choices=["mean", "max"],
        default="mean",
        help="what --max-reviews-per-day limits: the mean day (default) or the busiest",
    )
    limits.add_argument(
        "--max-honest-blocked-share",
        type=_share,
        default=0.005,
        help="honest amount blocked, share of all honest amount (0.005; 1 lifts it)",
    )
    limits.add_argument(
        "--max-honest-held-share", type=_share, help="honest amount reviewed or blocked, share"
    )
    limits.add_argument(
        "--min-abuse-caught-share", type=_share, help="abusive amount reviewed or blocked, share"
    )
    limits.add_argument(
        "--max-honest-blocks",
        type=_count,
        metavar="N",
        help="hard ceiling: honest requests blocked outright, at most N (0: none)",
    )
    limits.add_argument(
        "--max-honest-block-rate",
        type=_rate,
        metavar="R",
        help="hard ceiling: honest requests blocked outright, at most this share of the "
        "honest requests (0.001: 1 in 1,000)",
    )
    tu.add_argument(
        "--honest-weight",
        type=_non_negative,
        default=0.1,
        help="what holding 1.00 of honest refunds costs against 1.00 of abuse caught (0.1)",
    )
    tu.add_argument("--step", type=float, default=0.01, help="threshold grid step (0.01)")
    tu.add_argument(
        "--out",
        type=Path,
        default=Path("data/tune"),
        help="directory for tradeoff.csv, tradeoff.png, report.json and report.md (data/tune)",
    )
    tu.add_argument("--write-policy", type=Path, help="write the policy with the proposed pair")
    tu.add_argument("--new-version", help="version of the written policy (default: kept)")
    tu.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    if args.write_policy is None and args.new_version is not None:
        raise DataError("--new-version names the version of --write-policy's file; give both")
    if args.max_reviews_per_day is None and args.max_honest_held_share is None:
        raise DataError(
            "state --max-reviews-per-day (or --max-honest-held-share): without a limit on "
            "what is held, reviewing everything would catch the most abuse"
        )
    constraints = Constraints(
        max_reviews_per_day=args.max_reviews_per_day,
        reviews_per_day=args.reviews_per_day,
        max_honest_blocked_share=args.max_honest_blocked_share,
        max_honest_held_share=args.max_honest_held_share,
        min_abuse_caught_share=args.min_abuse_caught_share,
        max_honest_blocks=args.max_honest_blocks,
        max_honest_block_rate=args.max_honest_block_rate,
    )
    policy = load_with_catalogue(args.policy)
    bundle = Registry(args.registry).load(args.model, expect=catalog_signature())
    history: History = load_history(args.directory if args.directory else args.database_url)
    truth = load_ground_truth(args.directory) if args.directory else None
    since = args.since if args.since is not None else to_micros(bundle.training_window.until)
    started = time.perf_counter()
    try:
        result = tune(
            history,
            policy,
            bundle,
            constraints,
            since=since,
            until=args.until,
            ground_truth=truth,
            maturity_days=bundle.training_window.maturity_days,
            segment=args.segment,
            levels=grid(args.step),
            honest_weight=args.honest_weight,
        )
    except DataError as exc:
        if args.since is not None:
            raise
        raise DataError(
            f"{exc} (the period starts where model {bundle.version}'s training window "
            "ends; give --since for another)"
        ) from exc
    seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    result.table.to_csv(args.out / "tradeoff.csv", index=False, float_format="%.6g")
    plot_tuning(result, args.out / "tradeoff.png")
    _print_tuning(result, seconds)
    files = {
        "policy": str(args.policy),
        "tradeoff": str(args.out / "tradeoff.csv"),
        "plot": str(args.out / "tradeoff.png"),
    }
    proposal = result.proposal
    if proposal.feasible and args.write_policy is not None:
        files["written_policy"] = str(args.write_policy)
    write_report(tuning_document(result, files), tuning_markdown(result), args.out)
    print(
        f"table: {len(result.table):,} pairs -> {args.out / 'tradeoff.csv'}; plot -> "
        f"{args.out / 'tradeoff.png'}; report -> {args.out / 'report.json'}, "
        f"{args.out / 'report.md'}"
    )
    if not proposal.feasible:
        if args.write_policy is not None:
            print(f"{args.write_policy} not written: no pair meets the constraints")
        return INFEASIBLE
    if args.write_policy is not None:
        written = write_policy(
            args.policy,
            args.write_policy,
            proposal.review,
            proposal.block,
            segment=args.segment,
            version=args.new_version,
        )
        print(
            f"policy {written.version} with review {proposal.review:g}, block "
            f"{proposal.block:g} for {result.tuned} -> {args.write_policy} (comments and "
            "layout kept; only those values changed)"
        )
    return 0


def _print_tuning(result: Tuning, seconds: float) -> None:
    table, proposal, current = result.table, result.proposal, result.current
    print(
        f"tuning {result.tuned} of policy {result.policy_version} with model "
        f"{result.model_version}: {int(current['requests']):,} requests from "
        f"{result.start} to {result.end} ({result.days} days), outcomes from "
        f"{result.judged_against}: {result.abusive:,} abusive, "
        f"{result.abusive_amount:,.2f} abusive and {result.honest_amount:,.2f} honest "
        f"amount asked ({len(table):,} pairs in {seconds:.1f} s)"
    )
    print(f"constraints: {result.constraints.describe()}")
    print(
        f"preferred: the most abusive amount held minus {result.honest_weight:g} x the honest "
        "amount held; then the least honest amount blocked; then the fewest reviews"
    )
    pair = f"{proposal.review:g} / {proposal.block:g}"
    if proposal.feasible:
        print(
            f"PROPOSED review {proposal.review:g}, block {proposal.block:g} "
            f"({proposal.candidates:,} pairs meet every constraint)"
        )
    else:
        print(
            "NO threshold pair meets every constraint; the closest is "
            f"review {proposal.review:g}, block {proposal.block:g}"
        )
    for line in money_text(tuning_columns(result)):
        print(line)
    if not proposal.feasible:
        print(f"the closest pair, {pair}, misses:")
        for violation in proposal.violations:
            print(f"  {violation}")
        print("the best any pair reaches, one constraint at a time:")
        for name, value in proposal.best.items():
            print(f"  {name}: {value:.4g}")
        _print_fixed_blocks(result)
        print(
            "  (rules, lists and money checks decide some requests whatever the thresholds: "
            "loosen a constraint, or change the rules and backtest them)"
        )
    now = f"{current['review']:g} / {current['block']:g}"
    label = "proposed" if proposal.feasible else "closest"
    print("rates and counts")
    print(f"  {'':<28}{'current ' + now:>22}{label + ' ' + pair:>22}")
    for key, fmt in TUNE_ROWS:
        print(f"  {key:<28}{fmt.format(current[key]):>22}{fmt.format(proposal.row[key]):>22}")
    _print_slice(
        f"moving the review threshold (block {proposal.block:g})",
        table[table["block"] == proposal.block].sort_values("review"),
        "review",
        proposal.review,
        current["review"],
    )
    _print_slice(
        f"moving the block threshold (review {proposal.review:g})",
        table[table["review"] == proposal.review].sort_values("block"),
        "block",
        proposal.block,
        current["block"],
    )


def _print_fixed_blocks(result: Tuning) -> None:
    """When a ceiling on honest blocks cannot be met: the honest requests that lists, block
    rules and the other segments block whatever the pair."""
    ceilings = {"max_honest_blocks", "max_honest_block_rate"}
    if not any(v.constraint in ceilings for v in result.proposal.violations):
        return
    fixed = result.fixed_blocks[result.fixed_blocks["honest_blocked"] > 0]
    if len(fixed) == 0:
        return
    causes = ", ".join(
        f"{cause} {int(row['honest_blocked']):,}"
        for cause, row in fixed.sort_values("honest_blocked", ascending=False).iterrows()
    )
    print(
        f"  {int(fixed['honest_blocked'].sum()):,} honest requests are blocked whatever the "
        f"pair: {causes}"
    )


def _print_slice(title: str, rows: Any, moving: str, chosen: float, current: float) -> None:
    """Every 0.05 of the moving threshold, plus the proposed and the current value."""
    values = rows[moving].to_numpy(dtype=float)
    keep = (np.isclose(np.round(values / 0.05) * 0.05, values)) | np.isin(values, [chosen, current])
    print(title)
    print(
        f"  {'review':>7} {'block':>6} {'rev/day':>8} {'review%':>8} {'block%':>7} "
        f"{'abuse':>6} {'abuse amount':>13} {'share':>7} {'honest':>7} {'honest held':>12} "
        f"{'share':>7} {'hon.blk':>7} {'honest blocked':>15} {'share':>7}"
    )
    for _, row in rows[keep].iterrows():
        mark = " <- proposed" if row[moving] == chosen else ""
        mark += " <- current" if row[moving] == current and row["current"] else ""
        print(
            f"  {row['review']:>7g} {row['block']:>6g} {row['reviews_per_day_mean']:>8.1f} "
            f"{row['review_rate']:>8.2%} {row['block_rate']:>7.2%} {row['abuse_caught']:>6,} "
            f"{row['abuse_caught_amount']:>13,.2f} {row['abuse_caught_amount_share']:>7.1%} "
            f"{row['honest_held']:>7,} {row['honest_held_amount']:>12,.2f} "
            f"{row['honest_held_amount_share']:>7.1%} {row['honest_blocked']:>7,} "
            f"{row['honest_blocked_amount']:>15,.2f} "
            f"{row['honest_blocked_amount_share']:>7.2%}{mark}"
        )
