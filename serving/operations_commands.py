"""``riskmodel deploy policy FILE`` / ``deploy model VERSION``, ``riskmodel switch MODE``
and ``riskmodel live``: change what every worker of every replica runs, and see it;
``riskmodel replay REQUEST_ID``: decide a stored request again with what it was decided
with (``serving.replay``).

Each change is validated first (the policy against the feature catalogue, the model
loaded from the registry and checked against the catalogue) and refused whole with the
reason; the live one stays. Written to the store (``riskmodel.store.operations``), where
every running worker reads it within about a second (``serving.live``), archived and
audited under ``--by`` (default: the login name).
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from riskmodel.cli import add_database_option
from riskmodel.units import iso

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["register"]

_MODES = ("off", "review", "rules")


def register(commands: Any) -> None:
    """Add ``deploy``, ``switch``, ``live`` and ``replay`` to the ``riskmodel`` parser."""
    deploy = commands.add_parser(
        "deploy",
        help="make a policy or a model live on every worker",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    kinds = deploy.add_subparsers(dest="deploy_what", metavar="WHAT", required=True)
    policy = kinds.add_parser("policy", help="validate a policy file and make it live")
    policy.add_argument("file", help="policy file (YAML); its list files beside it")
    model = kinds.add_parser("model", help="check a registered model and make it live")
    model.add_argument("version", help="a version of the registry (riskmodel models list)")
    model.add_argument("--registry", default="data/registry", help="(data/registry)")
    for parser in (policy, model):
        _common(parser)
    policy.set_defaults(handler=_deploy_policy)
    model.set_defaults(handler=_deploy_model)

    switch = commands.add_parser(
        "switch",
        help="the kill switch: every decision to review, or rules without the model",
        description="review: every new decision goes to review (KILL_SWITCH); rules: the "
        "policy's rules and lists decide without the model (RULES_ONLY); off: normal.",
    )
    switch.add_argument("mode", choices=_MODES)
    _common(switch, reason_required=True)
    switch.set_defaults(handler=_switch)

    live = commands.add_parser(
        "live", help="what is live (policy, model, switch) and the latest changes"
    )
    add_database_option(live)
    live.add_argument("--last", type=int, default=20, help="changes to show (20)")
    live.set_defaults(handler=_show)

    replay = commands.add_parser(
        "replay",
        help="decide a stored request again with what it was decided with; show differences",
        description="Decides REQUEST_ID again with the policy text of its stored hash (from "
        "the archive), the model of its stored version and its features as of its time, "
        "and prints every difference from the stored decision (exit status 1 if any).",
    )
    replay.add_argument("request_id")
    add_database_option(replay)
    replay.add_argument("--registry", default="data/registry", help="(data/registry)")
    replay.set_defaults(handler=_replay)


def _common(parser: argparse.ArgumentParser, *, reason_required: bool = False) -> None:
    add_database_option(parser)
    parser.add_argument("--by", default=None, help="who makes the change (the login name)")
    parser.add_argument("--reason", required=reason_required, help="why, for the audit trail")


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[Engine]:
    from riskmodel.store import open_store

    engine = open_store(args.database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _who(args: argparse.Namespace) -> str:
    return str(args.by or getpass.getuser())


def _deploy_policy(args: argparse.Namespace) -> int:
    from features.policy_fields import load_with_catalogue
    from serving.live import deploy_policy

    policy = load_with_catalogue(args.file)  # refused here, with every problem placed
    with _store(args) as engine:
        deploy_policy(engine, policy, who=_who(args), reason=args.reason)
    print(f"policy {policy.version} ({policy.sha256[:12]}) is live; workers follow within 2 s")
    return 0


def _deploy_model(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serving.live import deploy_model
    from serving.runtime import load_models

    models = load_models(Path(args.registry), args.version)
    if models.champion is None:
        print(f"error: {models.problem}; the live model stays")
        return 1
    with _store(args) as engine:
        deploy_model(engine, models.champion.version, who=_who(args), reason=args.reason)
    print(f"model {models.champion.version} is live; workers follow within 2 s")
    return 0


def _switch(args: argparse.Namespace) -> int:
    from serving.live import set_switch

    with _store(args) as engine:
        set_switch(engine, args.mode, who=_who(args), reason=args.reason)
    print(f"kill switch {args.mode}; workers follow within 2 s")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from serving.replay import replay

    with _store(args) as engine:
        found = replay(engine, Path(args.registry), args.request_id)
    stored = found.stored
    print(
        f"{stored.request_id}: stored {stored.decision}, policy {stored.policy_version} "
        f"({str(stored.policy_hash)[:12]}), model {stored.model_version}, decided "
        f"{iso(stored.decided_at)}"
    )
    if not found.differences:
        print("decided again: the same decision, amount, score and reasons")
        return 0
    print("decided again, with differences:")
    for difference in found.differences:
        print(f"  {difference}")
    return 1


def _show(args: argparse.Namespace) -> int:
    from riskmodel.store import reading
    from riskmodel.store.operations import audit_trail, live_now

    with _store(args) as engine, reading(engine) as conn:
        settings = live_now(conn)
        trail = audit_trail(conn, args.last)
    for what in ("policy", "model", "switch"):
        found = settings.get(what)
        if found is None:
            default = "off" if what == "switch" else "the file / the registry's champion"
            print(f"{what:<7} {default} (never deployed)")
        else:
            print(f"{what:<7} {found.value}  since {iso(found.changed_at)} by {found.changed_by}")
    print(f"\nlatest changes ({len(trail)}):")
    for line in trail:
        why = f"  ({line.reason})" if line.reason else ""
        print(f"  {iso(line.at)}  {line.who:<16} {line.action:<12} {line.value}{why}")
    return 0
