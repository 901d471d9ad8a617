"""``riskmodel data check DIR``: is a dataset directory fit for modelling?

Plain argument handling over ``training.datacheck``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from riskmodel.cli import positive_int
from riskmodel.dataset import read_dataset
from training.commands import date_argument
from training.datacheck import FEATURE_SAMPLE, check_dataset, render

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add ``data check`` to the ``riskmodel`` parser."""
    parser = commands.add_parser("data", help="check a dataset directory before training")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="profile a dataset directory: labels, weeks, entities, odd rows, leaks; warnings",
        description="Read DIRECTORY as ingest would and report what matters before training: "
        "rows and time span of each table, label coverage and delays by source, abuse per "
        "week, the busiest users, devices, IPs, payment accounts, sellers and products, odd "
        "rows, features that look like leaks or carry nothing, and warnings in plain words.",
    )
    check.add_argument("directory", type=Path, help="dataset directory (Parquet or CSV files)")
    check.add_argument(
        "--until",
        type=date_argument,
        metavar="DATE",
        help="profile the data as known before this date (ISO 8601)",
    )
    check.add_argument(
        "--json", dest="json_file", type=Path, metavar="FILE", help="also write the figures here"
    )
    check.add_argument(
        "--sample",
        type=positive_int,
        default=FEATURE_SAMPLE,
        metavar="N",
        help=f"most recent labelled requests whose features are scored ({FEATURE_SAMPLE:,})",
    )
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    tables = read_dataset(args.directory)
    result = check_dataset(tables, args.until, sample=args.sample)
    print(f"{args.directory}: ", end="")
    print(render(result), end="")
    if args.json_file:
        args.json_file.parent.mkdir(parents=True, exist_ok=True)
        partial = args.json_file.with_name(args.json_file.name + ".partial")
        partial.write_text(json.dumps(result.as_dict(), indent=2, allow_nan=False) + "\n")
        partial.replace(args.json_file)  # never a half-written file under the real name
        print(f"figures: {args.json_file}")
    print(f"checked in {time.perf_counter() - started:.1f} s")
    return 0
