"""``riskmodel train | score | evaluate | prequential | models``: the analyst's command line."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features import FeatureBuilder, History, build_features, load_history
from features.cluster import add_dask_option, feature_builder, on_dask, tables_on_dask
from features.policy_fields import load_with_catalogue
from riskmodel.cli import add_database_option
from riskmodel.errors import DataError
from riskmodel.registry import ALIASES, Registry
from riskmodel.units import iso, to_micros
from training.dataset import (
    Examples,
    LabelPolicy,
    latest_time,
    load_ground_truth,
    training_examples,
)
from training.evaluation import compare, evaluation_period, score_requests
from training.model import Boost, TrainConfig, boost_here
from training.prequential import prequential
from training.report import SUMMARY_KEYS, write_report
from training.search import search
from training.signature import catalog_signature
from training.train import train_on

if TYPE_CHECKING:
    from riskmodel.bundle import ModelBundle
    from riskmodel.policy import Policy

__all__ = ["date_argument", "register"]


def date_argument(text: str) -> int:
    """An argument type: an ISO 8601 date or time, as store microseconds."""
    try:
        micros = to_micros(text)
    except DataError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    assert micros is not None
    return micros


def _source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--from", dest="directory", type=Path, help="dataset directory")
    add_database_option(group)


def _registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        type=Path,
        help="registry directory (default: $RISKMODEL_REGISTRY, else data/registry)",
    )


def _maturity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--maturity-days",
        type=float,
        help="days after which a request without a verdict counts as honest "
        "(default: estimated from the delays of the abuse verdicts known)",
    )
    parser.add_argument(
        "--maturity-quantile",
        type=float,
        default=0.9,
        help="share of abuse verdicts the estimated maturity waits for (0.9)",
    )


def register(commands: Any) -> None:
    """Add ``train``, ``score``, ``evaluate``, ``prequential`` and ``models`` to the
    ``riskmodel`` parser."""
    tr = commands.add_parser(
        "train",
        help="train, calibrate and register a model; write its report",
        description="Train a LightGBM model on mature refund requests, as if today were "
        "--until: only requests, events and labels known before it are read.",
    )
    _source(tr)
    tr.add_argument(
        "--until", type=date_argument, help="train as of this date (default: data's end)"
    )
    _maturity_options(tr)
    tr.add_argument(
        "--unlabelled",
        choices=["honest", "drop"],
        default="honest",
        help="requests without a verdict, once mature: count as honest (default) or leave out",
    )
    tr.add_argument("--test-share", type=float, default=0.15, help="share kept for the report")
    tr.add_argument("--max-rounds", type=int, default=2000, help="boosting rounds at most")
    tr.add_argument(
        "--search",
        type=int,
        default=0,
        metavar="TRIALS",
        help="first try this many hyper-parameter settings on the validation period",
    )
    tr.add_argument("--promote", choices=ALIASES, help="point this alias at the new model")
    add_dask_option(tr)
    _registry_option(tr)
    tr.set_defaults(handler=_train)

    sc = commands.add_parser(
        "score",
        help="score refund requests with a registered model (batch)",
        description="Score every refund request from --since on, each on its point-in-time "
        "features, and write request_id,score as CSV.",
    )
    _source(sc)
    sc.add_argument("--since", type=date_argument, help="first request time to score")
    sc.add_argument("--out", type=Path, required=True, help="CSV file to write")
    sc.add_argument("--model", default="champion", help="version or alias (champion)")
    sc.add_argument("--policy", type=Path, help="policy file (YAML): add each request's decision")
    add_dask_option(sc)
    _registry_option(sc)
    sc.set_defaults(handler=_score)

    ev = commands.add_parser(
        "evaluate",
        help="evaluate a model on a later period; compare it with another",
        description="Evaluate VERSION on requests in [--since, --until) (default: from the "
        "end of its training window), against the ground truth if the dataset directory "
        "has one, else the labels of mature requests.",
    )
    ev.add_argument("version", help="version or alias")
    _source(ev)
    ev.add_argument(
        "--since", type=date_argument, help="start of the period (default: model's until)"
    )
    ev.add_argument("--until", type=date_argument, help="end of the period (default: data's end)")
    ev.add_argument("--against", help="compare with this version or alias (e.g. champion)")
    ev.add_argument("--out", type=Path, help="report directory (default: print only)")
    _registry_option(ev)
    ev.set_defaults(handler=_evaluate)

    pq = commands.add_parser(
        "prequential",
        help="retrain as of successive dates, test each on the period after it",
        description="Train WINDOWS models as of successive dates (labels as known then) and "
        "test each on the TEST_DAYS after it; prints every window and the mean and spread.",
    )
    _source(pq)
    pq.add_argument("--windows", type=int, default=3, help="number of windows (3)")
    pq.add_argument("--test-days", type=float, default=14, help="days tested per window (14)")
    pq.add_argument("--gap-days", type=float, default=0, help="days between cutoff and test")
    _maturity_options(pq)
    pq.set_defaults(handler=_prequential)

    models = commands.add_parser("models", help="the model registry: list, show, promote")
    actions = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = actions.add_parser("list", help="every version with its aliases")
    _registry_option(ls)
    ls.set_defaults(handler=_list)
    show = actions.add_parser("show", help="a version's signature, window, metrics")
    show.add_argument("version", help="version or alias")
    _registry_option(show)
    show.set_defaults(handler=_show)
    promote = actions.add_parser("promote", help="point an alias at a version")
    promote.add_argument("version", help="version (or the alias whose version to promote)")
    promote.add_argument("--alias", choices=ALIASES, default="champion")
    _registry_option(promote)
    promote.set_defaults(handler=_promote)
    rollback = actions.add_parser("rollback", help="point an alias back at its previous version")
    rollback.add_argument("--alias", choices=ALIASES, default="champion")
    _registry_option(rollback)
    rollback.set_defaults(handler=_rollback)


def _history(args: argparse.Namespace) -> History:
    return load_history(args.directory if args.directory else args.database_url)


def _truth(args: argparse.Namespace) -> Any:
    return load_ground_truth(args.directory) if args.directory else None


def _print_summary(summary: dict[str, Any]) -> None:
    for key in SUMMARY_KEYS:
        value = summary.get(key)
        print(f"  {key:<30} {'-' if value is None else f'{value:.4f}'}")


def _labels(args: argparse.Namespace) -> LabelPolicy:
    return LabelPolicy(
        maturity_days=args.maturity_days,
        unlabelled=getattr(args, "unlabelled", "honest"),
        maturity_quantile=args.maturity_quantile,
    )


def _train(args: argparse.Namespace) -> int:
    if args.dask is None:
        return _train_with(args, build_features, boost_here)
    dask = on_dask(args.dask)
    # Imports Dask: only here, so that training without it never needs the extra.
    from training.on_dask import BoostOnCluster

    with dask.connect(args.dask) as client:
        return _train_with(args, dask.OnCluster(client), BoostOnCluster(client))


def _train_with(args: argparse.Namespace, build: FeatureBuilder, boost: Boost) -> int:
    """``train`` with the features computed by ``build`` and the trees grown by ``boost``
    (here, or on a Dask cluster); the hyper-parameter search's trials stay here."""
    config = TrainConfig(
        labels=_labels(args), test_share=args.test_share, max_rounds=args.max_rounds
    )
    history = _history(args)
    until = args.until if args.until is not None else latest_time(history) + 1
    examples = training_examples(history, until, config.labels, build)
    print(_maturity_line(examples))
    truth = _truth(args)
    if truth is not None:
        examples = examples.with_ground_truth(truth)
    if args.search:
        found = search(examples, config, trials=args.search)
        for trial in found.trials:
            print("  tried " + ", ".join(f"{k}={v}" for k, v in trial.items()))
        config = found.best
    result = train_on(examples, until, config, boost)
    bundle = result.bundle
    registry = Registry(args.registry)
    with tempfile.TemporaryDirectory() as scratch:
        report = None
        if result.evaluation is not None:
            report = Path(scratch) / "report"
            write_report([result.evaluation], report, f"Model {bundle.version}: test period")
        registry.register(bundle, report=report)
    details = bundle.details
    fresh = details["examples"] - details["settled"]
    print(f"registered {bundle.version} in {registry.path}")
    print(
        f"  {details['examples']:,} examples known at {bundle.training_window.until}: "
        f"{details['settled']:,} settled ({details['settled_labelled']:,} labelled), "
        f"{fresh:,} younger than the maturity with a verdict (trees only); "
        f"{details['best_iteration']} trees; {bundle.calibrator.kind} calibration"
    )
    kept = details["calibration"]
    print(f"  raw margin -> calibrated score ({kept['method']}):")
    for period in ("calibration", "test"):
        if period in kept:
            row = kept[period]
            print(
                f"    {period} period, {row['requests']:,} requests: average precision "
                f"{_fmt(row['average_precision_before'])} -> "
                f"{_fmt(row['average_precision_after'])}, distinct scores "
                f"{row['distinct_before']:,} -> {row['distinct_after']:,}"
            )
    if result.evaluation is not None:
        print(f"  test period, judged against {result.evaluation.figures['judged_against']}:")
        _print_summary(result.evaluation.summary)
        print(f"  report: {registry.report_dir(bundle.version) / 'report.md'}")
    if args.promote:
        registry.promote(bundle.version, args.promote)
        print(f"  {args.promote}: {bundle.version}")
    return 0


def _maturity_line(examples: Examples) -> str:
    if examples.maturity is not None:
        return examples.maturity.describe()
    return f"label maturity {examples.maturity_days:g} days (given)"


def _score(args: argparse.Namespace) -> int:
    if args.out.suffix != ".csv":
        raise DataError(f"--out {args.out}: scores are written as .csv")
    bundle = Registry(args.registry).load(args.model, expect=catalog_signature())
    policy = load_with_catalogue(args.policy) if args.policy else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    if args.dask and args.directory:
        rows = _score_on_dask(args, bundle, policy, partial)
    else:
        with feature_builder(args.dask) as build:
            scores = score_requests(bundle, _history(args), args.since, policy, build)
        scores.to_csv(partial, index=False, float_format="%.6f")
        rows = len(scores)
    partial.replace(args.out)
    with_policy = f" and decided by policy {policy.version}" if policy else ""
    print(f"{rows:,} requests scored by {bundle.version}{with_policy} -> {args.out}")
    return 0


def _score_on_dask(
    args: argparse.Namespace, bundle: ModelBundle, policy: Policy | None, partial: Path
) -> int:
    """The workers read the dataset directory: the client never holds the history."""
    with tables_on_dask(args.dask, args.directory) as (client, tables, checks):
        from training.cluster_reads import write_scores

        return write_scores(
            client, tables, bundle, partial, since=args.since, policy=policy, checks=checks
        )


def _evaluate(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    signature = catalog_signature()
    bundles = [registry.load(args.version, expect=signature)]
    if args.against:
        bundles.append(registry.load(args.against, expect=signature))
    since: int = args.since
    if since is None:
        since = date_argument(bundles[0].training_window.until)
    truth = _truth(args)
    period = evaluation_period(
        _history(args), since, args.until, truth, bundles[0].training_window.maturity_days
    )
    evaluations = compare(bundles, period)
    first = evaluations[0].figures
    print(
        f"{len(period):,} requests from {first['period']['start']} to "
        f"{first['period']['end']}, judged against {first['judged_against']}"
    )
    header = "  " + " " * 30 + " ".join(f"{e.model_version:>24}" for e in evaluations)
    print(header)
    for key in SUMMARY_KEYS:
        cells = []
        for e in evaluations:
            value = e.summary.get(key)
            cells.append(f"{'-' if value is None else f'{value:.4f}':>24}")
        print(f"  {key:<30}" + " ".join(cells))
    if args.out:
        path = write_report(evaluations, args.out, f"Model {bundles[0].version} from {iso(since)}")
        print(f"report: {path}")
    return 0


def _prequential(args: argparse.Namespace) -> int:
    truth = _truth(args)
    config = TrainConfig(labels=_labels(args))
    result = prequential(
        _history(args), args.windows, args.test_days, args.gap_days, config, ground_truth=truth
    )
    if truth is not None:
        judged = "ground truth"
    else:
        judged = f"labels of requests older than {result.judged_maturity_days:.1f} days"
    print(f"{args.windows} windows of {args.test_days:g} days, judged against {judged}")
    for row in result.windows:
        print(
            f"  as of {row['until']}: label maturity {row['maturity_days']:.1f} d, "
            f"{row['requests']:,} requests ({row['abusive']} abusive), "
            f"ROC AUC {_fmt(row['roc_auc'])}, average precision {_fmt(row['average_precision'])}"
        )
    print(f"  {'':<30} {'mean':>8} {'spread':>8}")
    for key in SUMMARY_KEYS:
        print(f"  {key:<30} {_fmt(result.mean[key]):>8} {_fmt(result.spread[key]):>8}")
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _list(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    entries = registry.list()
    if not entries:
        print(f"no model in {registry.path}")
    for entry in entries:
        window = entry.summary["training_window"]
        ap = entry.summary.get("metrics", {}).get("test", {}).get("average_precision")
        aliases = ",".join(entry.aliases) or "-"
        print(
            f"{entry.version:<26} {aliases:<20} registered {entry.registered_at}  "
            f"until {window['until']}  test AP {'-' if ap is None else f'{ap:.3f}'}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    bundle = registry.load(args.version)
    entry = registry.entry(bundle.version)
    summary = {
        "registered_at": entry.registered_at,
        "sha256": entry.sha256,
        "aliases": list(entry.aliases),
        **bundle.summary(),
    }
    print(json.dumps(summary, indent=2))
    return 0


def _promote(args: argparse.Namespace) -> int:
    registry = Registry(args.registry)
    version = registry.resolve(args.version)
    registry.load(version)  # refuse to promote a damaged bundle
    before = registry.promote(version, args.alias)
    print(f"{args.alias}: {before or '(none)'} -> {version}")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    back = Registry(args.registry).rollback(args.alias)
    print(f"{args.alias}: back to {back}")
    return 0
