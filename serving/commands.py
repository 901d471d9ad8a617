"""``riskmodel serve`` and ``riskmodel keys``: run the API, manage its callers' keys.

``serve`` checks, before anything listens, that what the service needs is there: a valid
policy file and a champion model. A refund pipeline pointed at a service that can only
answer "review, degraded" is worse than one that cannot connect, so a missing piece stops
the start with the command that provides it. (Once running, the service degrades instead:
see ``docs/api.md``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from riskmodel.cli import add_database_option
from riskmodel.errors import RiskModelError
from serving.auth import Role, create_key, list_keys, revoke_keys
from serving.settings import DEFAULT_HOST, DEFAULT_PORT, Settings

# What ``serve`` needs (SQLAlchemy, the policy loader, the registry) is imported where it is
# used: importing it here would cost every ``riskmodel`` start, ``keys`` included, seconds.

__all__ = ["ServeError", "default_workers", "register", "settings_from"]

APP_FACTORY = "serving.app:create_app"
_ENV = {
    "registry": "RISKMODEL_REGISTRY",
    "policy": "RISKMODEL_POLICY",
    "api_keys": "RISKMODEL_API_KEYS",
}


class ServeError(RiskModelError):
    """The service cannot start: something it needs is missing; the message says what to run."""


def default_workers(database_url: str) -> int:
    """``$WEB_CONCURRENCY`` if set; else one worker on SQLite, one per CPU on a server database.

    The request path is CPU-bound (features, trees, policy) and each worker is one event
    loop on one core, so one per core uses the machine without oversubscribing it. SQLite
    stays at one: the file has one writer, and one worker sees every decision still being
    written, so each velocity count includes the requests of the same moment (two workers
    do not see each other's). Measured on the serve benchmark (two cores, group commit):
    one worker held 500 decisions/s with p99 under 50 ms, two held 600/s for twice the
    memory; ``--workers 2`` is there when that trade is the right one.
    """
    from sqlalchemy.engine import make_url

    configured = os.environ.get("WEB_CONCURRENCY")
    if configured:
        return max(1, int(configured))
    if make_url(database_url).get_backend_name() == "sqlite":
        return 1
    return max(1, len(os.sched_getaffinity(0)))


def register(commands: Any) -> None:
    """Add ``serve`` and ``keys`` to the ``riskmodel`` parser."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API (uvicorn)",
        description="Run the decision API. Refuses to start without a valid policy file or a "
        "champion model, and says which command provides it. Docs at /docs once running.",
    )
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to listen on ({DEFAULT_HOST})"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on ({DEFAULT_PORT})"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: $WEB_CONCURRENCY, else 1 on SQLite, one per CPU "
        "on PostgreSQL)",
    )
    add_database_option(serve)
    serve.add_argument(
        "--registry",
        type=Path,
        help="model registry (default: $RISKMODEL_REGISTRY, else data/registry)",
    )
    serve.add_argument(
        "--policy",
        type=Path,
        help="policy file (default: $RISKMODEL_POLICY, else data/policy.yaml)",
    )
    _keys_option(serve)
    serve.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        default="info",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: it costs latency; use /metrics)",
    )
    serve.set_defaults(handler=_serve)

    keys = commands.add_parser("keys", help="API keys of the service's callers")
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="create a key for a caller; prints it once",
        description="Create a random key for CALLER with the given roles. The key is printed "
        "once and never stored: the keys file keeps only its SHA-256. The running service "
        "picks the new key up without a restart.",
    )
    create.add_argument(
        "--caller", required=True, help="who will use the key, e.g. refund-pipeline"
    )
    create.add_argument(
        "--role",
        dest="roles",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help="a role the key grants (repeat for several)",
    )
    _keys_option(create)
    create.add_argument(
        "--json", action="store_true", help="print caller, roles, key and file as JSON"
    )
    _audit_options(create)
    create.set_defaults(handler=_keys_create)
    listing = actions.add_parser(
        "list", help="key ids, callers, roles and creation times (never the keys)"
    )
    _keys_option(listing)
    listing.set_defaults(handler=_keys_list)
    revoke = actions.add_parser(
        "revoke",
        help="remove a caller's keys, or one key by its id",
        description="Remove keys from the keys file. The running service refuses them from "
        "its next request. To rotate a key: create the new one, hand it over, then revoke "
        "the old one by its id (keys list).",
    )
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--caller", help="remove every key of this caller")
    which.add_argument("--id", dest="key_id", help="remove the key with this id (keys list)")
    _keys_option(revoke)
    _audit_options(revoke)
    revoke.set_defaults(handler=_keys_revoke)


def _audit_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="the store whose audit trail notes the change (default: "
        "$RISKMODEL_DATABASE_URL; neither: not noted)",
    )
    parser.add_argument(
        "--by", help="who makes the change, for the store's audit trail (the login name)"
    )
    parser.add_argument("--reason", help="why, for the store's audit trail")


def _keys_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-keys",
        type=Path,
        help="API keys file (default: $RISKMODEL_API_KEYS, else data/api_keys.json)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """The environment's settings with the command line's options on top."""
    settings = Settings.from_env()
    overrides = {
        name: getattr(args, name)
        for name in ("database_url", "registry", "policy", "api_keys")
        if getattr(args, name, None) is not None
    }
    return dataclasses.replace(settings, **overrides)


# -- serve ------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from riskmodel.store import resolve_database_url

    settings = settings_from(args)
    database_url = resolve_database_url(settings.database_url)
    workers = args.workers if args.workers is not None else default_workers(database_url)
    if workers < 1:
        raise ServeError(f"--workers {workers}: at least one")
    policy_version = _check_policy(settings)
    champion = _check_champion(settings)
    _export(settings, database_url)
    base = f"http://{_url_host(args.host)}:{args.port}"
    print(
        f"serving {base} with {workers} worker(s): champion {champion}, policy "
        f"{policy_version} ({settings.policy}), store {_safe(database_url)}",
        flush=True,
    )
    if not settings.api_keys.is_file():
        print(
            f"warning: no API keys in {settings.api_keys}: every call will be refused (401); "
            "create one with: riskmodel keys create --caller NAME --role decide",
            file=sys.stderr,
        )
    print(f"docs: {base}/docs", flush=True)
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level=args.log_level,
        access_log=args.access_log,
        server_header=False,
        # Lets a rolling restart finish the decisions in flight, which are durable writes.
        timeout_graceful_shutdown=30,
    )
    return 0


def _check_policy(settings: Settings) -> str:
    from features.policy_fields import load_with_catalogue
    from riskmodel.policy import STARTER_POLICY

    path = settings.policy
    if not path.is_file():
        raise ServeError(
            f"no policy file at {path} (set by --policy or ${_ENV['policy']}). Start from "
            f"the starter policy: cp {shlex.quote(str(STARTER_POLICY))} {shlex.quote(str(path))}"
            " (its thresholds are placeholders), or run riskmodel quickstart --no-serve"
        )
    policy = load_with_catalogue(path)  # a bad file is refused here with line and rule
    return policy.version


def _check_champion(settings: Settings) -> str:
    from riskmodel.registry import Registry, RegistryError

    registry = Registry(settings.registry)
    try:
        version = registry.resolve("champion")
    except RegistryError as exc:
        raise ServeError(
            f"{exc} (set by --registry or ${_ENV['registry']}). Train and promote one: "
            "riskmodel train --database-url URL --promote champion, or promote a version "
            "listed by riskmodel models list: riskmodel models promote VERSION"
        ) from exc
    if not registry.bundle_path(version).is_file():
        raise ServeError(
            f"champion {version}: its bundle {registry.bundle_path(version)} is missing; "
            "promote another version (riskmodel models list, riskmodel models promote VERSION) "
            "or roll back (riskmodel models rollback)"
        )
    return version


def _export(settings: Settings, database_url: str) -> None:
    from riskmodel.store import DATABASE_URL_ENV

    # Workers are separate processes that build their settings from the environment
    # (the factory takes no arguments), so the command line's choices travel that way.
    os.environ[DATABASE_URL_ENV] = database_url
    for name, variable in _ENV.items():
        os.environ[variable] = str(getattr(settings, name))
    # One thread per worker for LightGBM and BLAS: a single-row predict with a thread
    # pool is many times slower as soon as the other core is busy.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# -- keys -------------------------------------------------------------------------------------


def _keys_path(args: argparse.Namespace) -> Path:
    path: Path = args.api_keys or Settings.from_env().api_keys
    return path


def _keys_create(args: argparse.Namespace) -> int:
    path = _keys_path(args)
    roles = [Role(r) for r in dict.fromkeys(args.roles)]
    try:
        key = create_key(path, args.caller, roles)
    except ValueError as exc:
        raise ServeError(f"keys create: {exc}") from exc
    except OSError as exc:
        raise ServeError(f"cannot write the API keys file {path}: {exc}") from exc
    names = [r.value for r in roles]
    if args.json:
        print(json.dumps({"caller": args.caller, "roles": names, "key": key, "file": str(path)}))
        _audit(args, "key created", f"{args.caller} ({', '.join(names)})")
        return 0
    print(f"a new key for caller {args.caller!r}, roles {', '.join(names)}:")
    print(f"\n    {key}\n")
    print(
        "It is shown only now: hand it to the caller's secret store. Only its SHA-256 is "
        f"kept, in {path}."
    )
    print("The caller sends it as the header  Authorization: Bearer <key>")
    _audit(args, "key created", f"{args.caller} ({', '.join(names)})")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    path = _keys_path(args)
    try:
        entries = list_keys(path)
    except (OSError, ValueError, AttributeError, KeyError) as exc:
        raise ServeError(f"cannot read the API keys file {path}: {exc}") from exc
    print(f"{len(entries)} key(s) in {path}")
    for entry in entries:
        roles = ",".join(entry.roles) or "-"
        print(f"  {entry.key_id}  {entry.caller:<24} {roles:<28} created {entry.created_at}")
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    path = _keys_path(args)
    if not path.is_file():
        raise ServeError(f"no API keys file {path}")
    try:
        removed = revoke_keys(path, caller=args.caller, key_id=args.key_id)
    except ValueError as exc:
        raise ServeError(f"keys revoke: {exc}") from exc
    except OSError as exc:
        raise ServeError(f"cannot write the API keys file {path}: {exc}") from exc
    which = f"caller {args.caller!r}" if args.caller else f"id {args.key_id}"
    if removed == 0:
        raise ServeError(f"keys revoke: no key of {which} in {path}")
    print(f"revoked {removed} key(s) of {which}; the service refuses them from its next request")
    _audit(args, "key revoked", args.caller or args.key_id)
    return 0


def _audit(args: argparse.Namespace, action: str, value: str) -> None:
    """A line of the store's audit trail for a key change, when a store is named
    (``--database-url`` or ``$RISKMODEL_DATABASE_URL``): the keys file is the service's own,
    the trail is where risk managers look. The change stands if the store cannot be written."""
    import getpass

    from riskmodel.store import DATABASE_URL_ENV, open_store
    from riskmodel.store.operations import note

    url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if not url:
        return
    try:
        engine = open_store(url)
        try:
            with engine.begin() as conn:
                note(conn, action, value, who=args.by or getpass.getuser(), reason=args.reason)
        finally:
            engine.dispose()
    except RiskModelError as exc:
        print(f"warning: not written to the audit trail: {exc}", file=sys.stderr)
