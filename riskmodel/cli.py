"""The ``riskmodel`` command.

Each sub-command is a thin layer over a public function; errors of the project's
hierarchy become one line on stderr and exit status 1 (2 for bad arguments).

The packages above this one (``features``, ``training``, ``serving``) add their own
sub-commands through the ``riskmodel.commands`` entry-point group, one entry per command,
so this module never imports them and the layers keep pointing one way. Only the module of
the command being run is imported: importing them all costs seconds (pandas, LightGBM,
scikit-learn, FastAPI), which ``riskmodel --help`` or ``riskmodel keys list`` should not
pay. The others are listed by name and one-line help (``LISTED``) alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from importlib.metadata import entry_points
from pathlib import Path

from riskmodel.errors import RiskModelError

__all__ = ["LISTED", "add_database_option", "build_parser", "main", "positive_int"]

Handler = Callable[[argparse.Namespace], int]

_PLUGINS = "riskmodel.commands"

LISTED = {
    "backtest": "replay past requests through a policy and a model; what would change",
    "tune": "trade-off table of review / block thresholds and a proposed pair",
    "data": "check a dataset directory before training",
    "features": "build feature tables; list the catalogue",
    "policy": "check a decision policy file",
    "quickstart": "simulate, load, train, install the starter policy, create a key, serve",
    "serve": "run the HTTP API (uvicorn)",
    "keys": "API keys of the service's callers",
    "deploy": "make a policy or a model live on every worker",
    "switch": "the kill switch: every decision to review, or rules without the model",
    "live": "what is live (policy, model, switch) and the latest changes",
    "replay": "decide a stored request again with what it was decided with; show differences",
    "train": "train, calibrate and register a model; write its report",
    "score": "score refund requests with a registered model (batch)",
    "evaluate": "evaluate a model on a later period; compare it with another",
    "prequential": "retrain as of successive dates, test each on the period after it",
    "models": "the model registry: list, show, promote",
    "shadow": "the shadow challenger against the champion on live decisions",
    "monitor": "drift of live traffic from the champion's training window (PSI)",
    "accounts": "accounts of the review console (reviewers, support staff)",
}
"""The commands of the ``riskmodel.commands`` entry points, in the order ``riskmodel --help``
lists them after the built-in ones, each with the help its module gives it. Written here
because reading it from the modules would import them; a test keeps the two the same."""


def _utc_date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 date") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def positive_int(text: str) -> int:
    """An argument type: a whole number above zero."""
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def add_database_option(
    parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
) -> None:
    """The ``--database-url`` option, the same on every command that reads the store."""
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the store (default: $RISKMODEL_DATABASE_URL, "
        "else sqlite:///data/riskmodel.db)",
    )


def _simulate(args: argparse.Namespace) -> int:
    from riskmodel.simulator import (
        SimulationConfig,
        draw_world,
        simulate,
        write_simulation,
        write_world,
    )
    from riskmodel.simulator.worlds import WORLD_FILE

    world = None
    if args.world is None:
        seed = 0 if args.seed is None else args.seed
        config = SimulationConfig(users=args.users, days=args.days, seed=seed, start=args.start)
        # A world's parameters left by an earlier run would describe data no longer there.
        (Path(args.out) / WORLD_FILE).unlink(missing_ok=True)
    else:
        world = draw_world(
            args.world, users=args.users, days=args.days, seed=args.seed, start=args.start
        )
        config = world.config
    sim = simulate(config)
    paths = write_simulation(sim, args.out, fmt=args.format)
    for name, path in paths.items():
        rows = len(getattr(sim, name))
        print(f"{name:>16}: {rows:>10,} rows -> {path}")
    if world is not None:
        print(f"{'world':>16}: {'':>10}      -> {write_world(world, args.out)}")
        for line in world.summary():
            print(line)
    abusive = int(sim.ground_truth["is_abuse"].sum())
    share = abusive / max(len(sim.ground_truth), 1)
    print(f"abusive refund requests: {abusive:,} ({share:.1%}); ground truth kept apart")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from riskmodel.ingest import ingest
    from riskmodel.store import resolve_database_url

    url = resolve_database_url(args.database_url)
    report = ingest(args.directory, url)
    for name, rows in report.rows_read.items():
        print(f"{name:>16}: {rows:>10,} rows read, {report.rows_written[name]:>10,} written")
    for name in report.ignored_files:
        print(f"{'':>16}  not a table, ignored: {name}")
    print(
        f"loaded {report.total_read:,} rows in {report.seconds:.1f} s "
        f"({report.rows_per_second:,.0f} rows/s) into {_safe(url)}"
    )
    return 0


def _db_info(args: argparse.Namespace) -> int:
    from riskmodel.store import SCHEMA_VERSION, open_store, resolve_database_url, table_counts

    url = resolve_database_url(args.database_url)
    engine = open_store(url)
    try:
        print(f"store: {_safe(url)} (schema version {SCHEMA_VERSION})")
        for name, rows in table_counts(engine).items():
            print(f"{name:>16}: {rows:>10,} rows")
    finally:
        engine.dispose()
    return 0


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def build_parser(only: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``riskmodel`` parser; with ``only``, the commands of the entry points that are not
    named in it are listed but not built, and their modules not imported."""
    parser = argparse.ArgumentParser(
        prog="riskmodel",
        description="Refund risk service: fraud and abuse detection for refund requests.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = commands.add_parser(
        "simulate",
        help="write a simulated marketplace as a dataset directory",
        description="Write a simulated marketplace (users, orders, usage, refund requests, "
        "labels) plus a separate ground-truth file. Deterministic for a seed.",
    )
    sim.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    sim.add_argument("--users", type=positive_int, default=10_000, help="number of users")
    sim.add_argument("--days", type=positive_int, default=180, help="days of history")
    sim.add_argument(
        "--world",
        type=positive_int,
        help="draw a whole randomised world from this number (1 or more); its parameters "
        "go to world.json beside the tables (default: the standard marketplace)",
    )
    sim.add_argument(
        "--seed",
        type=int,
        help="random seed (default 0; with --world, the world's number)",
    )
    sim.add_argument(
        "--start",
        type=_utc_date,
        default=datetime(2026, 1, 1, tzinfo=UTC),
        help="first day, ISO 8601 (default 2026-01-01)",
    )
    sim.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    sim.set_defaults(handler=_simulate)

    ing = commands.add_parser(
        "ingest",
        help="validate a dataset directory and load it into the store",
        description="Validate every table of DIRECTORY, then load it all in one transaction. "
        "A bad row is reported with table, row, column and problem, and nothing is written.",
    )
    ing.add_argument("directory", type=Path, help="dataset directory (Parquet or CSV files)")
    add_database_option(ing)
    ing.set_defaults(handler=_ingest)

    db = commands.add_parser("db", help="inspect the event store")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    info = db_commands.add_parser("info", help="schema version and rows per table")
    add_database_option(info)
    info.set_defaults(handler=_db_info)

    plugins = {plugin.name: plugin for plugin in entry_points(group=_PLUGINS)}
    order = list(LISTED)
    # An entry may add its sibling commands too (``serve`` and ``keys``): loaded once, in
    # its first command's place, so that the listing keeps its order.
    wanted = {plugins[name].value for name in plugins if only is None or name in only}
    for name in sorted(plugins, key=lambda n: (order.index(n) if n in order else len(order), n)):
        if name in commands.choices:
            continue
        if plugins[name].value in wanted:
            plugins[name].load()(commands)
        else:
            commands.add_parser(name, help=LISTED.get(name))
    return parser


def _command_named(argv: Sequence[str]) -> list[str]:
    # The top-level parser takes no option with a value: the first word that is not an
    # option is the command.
    return [word for word in argv if not word.startswith("-")][:1]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=_command_named(words)).parse_args(words)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RiskModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
