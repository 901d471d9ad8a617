"""``riskmodel monitor``: drift of the live traffic from the champion's training window.

Plain argument handling over ``training.monitor``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import pandas as pd

from features import History, load_history
from riskmodel.cli import add_database_option, positive_int
from riskmodel.errors import DataError
from riskmodel.registry import Registry
from riskmodel.store import resolve_database_url
from riskmodel.units import HOUR, to_micros
from training.monitor import REFERENCE_DAYS, compare, reference_for, reference_path
from training.signature import catalog_signature

__all__ = ["register", "since_argument"]

_SPAN = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNIT = {"m": HOUR // 60, "h": HOUR, "d": 24 * HOUR}


def since_argument(text: str) -> str | int:
    """An argument type: a span back from the latest decision (``24h``, ``7d``, ``90m``),
    kept as text, or an ISO 8601 time as store microseconds."""
    if _SPAN.match(text):
        return text
    try:
        micros = to_micros(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: not a span such as 24h: {exc}") from exc
    assert micros is not None
    return micros


def register(commands: Any) -> None:
    """Add ``monitor`` to the ``riskmodel`` parser."""
    parser = commands.add_parser(
        "monitor",
        help="drift of live traffic from the champion's training window (PSI)",
        description="Compare the requests decided in a recent window with the champion's "
        "training window: the population stability index (PSI) of every model input and of "
        "the score, the change of each input's missing share, and the approve / review / "
        "block shares. The training window's description is computed once from the store "
        "and kept beside the bundle in the registry.",
    )
    parser.add_argument(
        "--since",
        type=since_argument,
        default="24h",
        help="start of the live window: a span back from the latest decision in the store "
        "(24h, 7d, 90m; default 24h) or an ISO 8601 time",
    )
    parser.add_argument(
        "--until", type=since_argument, help="end of the live window (default: the latest)"
    )
    add_database_option(parser)
    parser.add_argument(
        "--registry",
        type=Path,
        help="registry directory (default: $RISKMODEL_REGISTRY, else data/registry)",
    )
    parser.add_argument("--model", default="champion", help="version or alias (champion)")
    parser.add_argument("--html", type=Path, metavar="OUT.html", help="write a page with plots")
    parser.add_argument(
        "--prometheus",
        type=Path,
        metavar="FILE",
        help="write the drift as a node_exporter textfile-collector file (FILE.prom)",
    )
    parser.add_argument(
        "--top", type=positive_int, default=15, help="inputs listed, highest PSI first (15)"
    )
    parser.add_argument(
        "--reference-days",
        type=float,
        default=REFERENCE_DAYS,
        help=f"the reference is the last DAYS of the training window ({REFERENCE_DAYS:g}; "
        "0: all of it)",
    )
    parser.add_argument(
        "--rebuild-reference",
        action="store_true",
        help="compute the training window's description again (after loading more history)",
    )
    parser.set_defaults(handler=_monitor)


def _latest(history: History) -> int:
    """The latest decision's time, else the latest request's: spans count back from the
    data, so a store copied or replayed elsewhere reads the same."""
    for table, column in (
        (history.decisions, "decided_at"),
        (history.refund_requests, "requested_at"),
    ):
        if len(table):
            return int(pd.to_numeric(table[column]).max()) + 1
    raise DataError("the store holds no refund request")


def _moment(value: str | int, latest: int) -> int:
    if isinstance(value, int):
        return value
    match = _SPAN.match(value)
    assert match is not None
    return latest - round(float(match.group(1)) * _UNIT[match.group(2)])


def _monitor(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    bundle = registry.load(args.model, expect=catalog_signature())
    history = load_history(resolve_database_url(args.database_url))
    days = args.reference_days or None
    reference, built = reference_for(
        registry, bundle, history, days=days, rebuild=args.rebuild_reference
    )
    if built:
        path = reference_path(registry, bundle.version)
        print(f"reference of {bundle.version} computed once -> {path}")
    latest = _latest(history)
    until = None if args.until is None else _moment(args.until, latest)
    report = compare(reference, bundle, history, _moment(args.since, latest), until)
    print("\n".join(report.lines(top=args.top)))
    if args.html:
        print(f"page: {report.write_html(args.html)}")
    if args.prometheus:
        print(f"metrics: {report.write_prometheus(args.prometheus)}")
    return 0
