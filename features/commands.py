"""``riskmodel features ...``: build feature tables and print the catalogue."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from features.catalog import CATALOG
from features.cluster import add_dask_option, on_dask, tables_on_dask
from features.history import load_history
from features.offline import build_features
from features.spec import Aggregate, Context, Feature, Ratio
from riskmodel.cli import add_database_option
from riskmodel.errors import DataError

__all__ = ["catalogue_markdown", "register"]


def register(commands: Any) -> None:
    """Add the ``features`` sub-command to the ``riskmodel`` parser."""
    parser = commands.add_parser("features", help="build feature tables; list the catalogue")
    actions = parser.add_subparsers(dest="features_command", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="features of every refund request, each as of its own time",
        description="Point-in-time features of every refund request of a dataset directory "
        "or a store, written as Parquet (one row per request_id).",
    )
    source = build.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="directory", type=Path, help="dataset directory")
    add_database_option(source)
    build.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    add_dask_option(build)
    build.set_defaults(handler=_build)

    listing = actions.add_parser("list", help="the catalogue: name, meaning, entity, window")
    listing.add_argument("--markdown", action="store_true", help="as a Markdown table")
    listing.set_defaults(handler=_list)


def _build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if args.out.suffix != ".parquet":
        raise DataError(f"--out {args.out}: the feature table is written as .parquet")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".parquet.partial")
    if args.dask:
        rows, width = _build_on_dask(args, partial)
    else:
        history = load_history(args.directory if args.directory else args.database_url)
        table = build_features(history)
        table.to_parquet(partial)
        rows, width = table.shape
    partial.replace(args.out)  # never a half-written file under the real name
    seconds = time.perf_counter() - started
    print(f"{rows:,} requests x {width} features -> {args.out} ({seconds:.1f} s)")
    return 0


def _build_on_dask(args: argparse.Namespace, partial: Path) -> tuple[int, int]:
    dask = on_dask(args.dask)
    with tables_on_dask(args.dask, args.directory, args.database_url) as (client, tables, checks):
        # Written a partition at a time: the client never holds the whole table.
        table = dask.build_on_dask(tables)
        rows, width = dask.write_parquet(client, table, partial, checks)
        return rows, width


def _describe(feature: Feature) -> tuple[str, str, str]:
    if isinstance(feature, Aggregate):
        days = feature.window_days
        window = "all history" if days is None else f"{days:g} day{'s' if days != 1 else ''}"
        return feature.entity.value, f"{feature.source.value}: {feature.agg.value}", window
    if isinstance(feature, Context):
        return "request", "context", "at request"
    if isinstance(feature, Ratio):
        return "-", "ratio", "-"
    return "-", "derived", "-"


def catalogue_markdown() -> str:
    """The catalogue as a Markdown table (what ``docs/features.md`` holds)."""
    lines = [
        "| feature | meaning (and value when data is missing) | entity | how | window | type |",
        "|---|---|---|---|---|---|",
    ]
    for name, feature in CATALOG.items():
        entity, how, window = _describe(feature)
        kind = "internal" if feature.internal else feature.type.value
        lines.append(f"| `{name}` | {feature.doc} | {entity} | {how} | {window} | {kind} |")
    return "\n".join(lines) + "\n"


def _list(args: argparse.Namespace) -> int:
    if args.markdown:
        print(catalogue_markdown(), end="")
        return 0
    for name, feature in CATALOG.items():
        entity, how, window = _describe(feature)
        print(f"{name:<52} {entity:<16} {how:<26} {window:<12} {feature.doc}")
    return 0
