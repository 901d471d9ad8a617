"""``riskmodel quickstart``: from a fresh checkout to a running API in one command.

Simulate a marketplace, load it into SQLite, train and promote a model, install the
starter policy, create an API key, start the API and print a ready ``curl`` call.

Every step runs the public sub-command (``riskmodel simulate``, ``ingest``, ``train``,
``policy check``, ``keys create``, ``serve``) through :func:`riskmodel.cli.main`, the way a
person would type it. It joins every layer up to the service, so it lives beside the
service and reaches the command line like the other commands (the ``riskmodel.commands``
entry points); where it puts the policy and the API keys is the service's own default
(``serving.settings``).

What a step finds already done (the simulation, a loaded store, a champion, a policy file)
is reused, and the step says so; only the API key is new on every run, because a key is
shown once and never kept, and so is the request to try: one the store has never seen.

Steps 1 to 5 run in a child process, their output relayed as it comes. They hold the
simulation and the training data: a process that had run them would keep about 900 MB
while it then waits on the API; this one never imports the libraries they need and stays
near 35 MB (measured at the default size, ``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from riskmodel.cli import main
from riskmodel.errors import RiskModelError
from serving.settings import DEFAULT_HOST, DEFAULT_PORT, Settings

if TYPE_CHECKING:
    import pandas as pd

# The steps' libraries (pandas, the store, the registry) are imported inside the steps, which
# run in the child process: the parent, which then waits on the API, never loads them.

__all__ = [
    "QuickstartError",
    "pending_request",
    "register",
    "run",
]

DEFAULT_SIMULATION = Path("data/sim")
CALLER = "quickstart"
# Sized so the whole run stays well under two minutes on two cores (20 s measured when
# quiet, 52 s with both cores busy) while the model learns from thousands of labels.
DEFAULT_USERS = 50_000
DEFAULT_DAYS = 180
DEFAULT_SEED = 1
READY_TIMEOUT_S = 60.0


class QuickstartError(RiskModelError):
    """A quickstart step could not run; the message says which and what to do."""


def register(commands: Any) -> None:
    """Add ``quickstart`` to the ``riskmodel`` parser."""
    qs = commands.add_parser(
        "quickstart",
        help="simulate, load, train, install the starter policy, create a key, serve",
        description="From a fresh checkout to a running API: simulate a marketplace, "
        "ingest it into the store, train and promote a model, install the starter policy, "
        "create an API key, start the API and print a ready curl call. What already exists "
        "(simulation, loaded store, champion, policy file) is reused.",
    )
    qs.add_argument("--users", type=int, default=DEFAULT_USERS, help="simulated users")
    qs.add_argument("--days", type=int, default=DEFAULT_DAYS, help="simulated days")
    qs.add_argument("--seed", type=int, default=DEFAULT_SEED, help="simulation seed")
    qs.add_argument(
        "--sim", type=Path, default=DEFAULT_SIMULATION, help="simulation directory (data/sim)"
    )
    qs.add_argument(
        "--database-url",
        help="store URL (default: $RISKMODEL_DATABASE_URL, else sqlite:///data/riskmodel.db)",
    )
    qs.add_argument(
        "--registry",
        type=Path,
        help="model registry (default: $RISKMODEL_REGISTRY, else data/registry)",
    )
    qs.add_argument(
        "--policy",
        type=Path,
        help="policy file (default: $RISKMODEL_POLICY, else data/policy.yaml)",
    )
    qs.add_argument(
        "--api-keys",
        type=Path,
        help="API key file (default: $RISKMODEL_API_KEYS, else data/api_keys.json)",
    )
    qs.add_argument("--host", default=DEFAULT_HOST, help=f"address to serve on ({DEFAULT_HOST})")
    qs.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to serve on ({DEFAULT_PORT})"
    )
    qs.add_argument(
        "--no-serve",
        action="store_true",
        help="prepare everything but do not start the API (print how to start it)",
    )
    qs.set_defaults(handler=run)


@dataclass
class _Plan:
    sim: Path
    database_url: str
    registry: Path
    policy: Path
    api_keys: Path
    timings: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class _Prepared:
    """What the set-up hands back to the process that serves."""

    serve_options: list[str]
    key: str
    request: dict[str, Any]
    timings: list[tuple[str, float]]
    reviewer: tuple[str, str]  # the console account to sign in with: name, password


def _plan(args: argparse.Namespace) -> _Plan:
    from riskmodel.registry import resolve_registry_path
    from riskmodel.store import resolve_database_url

    service = Settings.from_env()
    return _Plan(
        sim=args.sim,
        database_url=resolve_database_url(args.database_url),
        registry=resolve_registry_path(args.registry),
        policy=Path(args.policy) if args.policy else service.policy,
        api_keys=Path(args.api_keys) if args.api_keys else service.api_keys,
    )


def run(args: argparse.Namespace) -> int:
    if not args.no_serve:
        _check_port_free(args.host, args.port)  # before the minute of work, not after
    started = time.perf_counter()
    # Stopped by SIGTERM (a supervisor, `timeout`), still stop the set-up or the server, not
    # orphan it.
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        prepared = _set_up_in_child(args)
        base = f"http://{args.host}:{args.port}"
        if args.no_serve:
            _summary(prepared.timings, started)
            print("\nthe API is not started (--no-serve); start it with:")
            serve = ["serve", *prepared.serve_options, "--port", str(args.port)]
            print(f"  {_command(serve)}")
            print("then decide a refund request:")
            print(_curl(base, prepared.key, prepared.request))
            print(_console(base, prepared.reviewer))
            return 0
        return _serve(prepared, args, base, started)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _set_up_in_child(args: argparse.Namespace) -> _Prepared:
    """Steps 1 to 5 and the request to try, in a child process; its output is relayed here
    as it comes, its errors raised here."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, nothing inherited
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_set_up, args=(args, sending), name="quickstart set-up")
    child.start()
    sending.close()  # the child holds the only sending end: once it is gone, recv() ends
    done = False
    try:
        while True:
            try:
                kind, value = receiving.recv()
            except EOFError:
                child.join()
                raise QuickstartError(
                    f"the set-up stopped (exit status {child.exitcode}); its error is above"
                ) from None
            if kind == "done":
                done = True
                prepared: _Prepared = value
                return prepared
            if kind == "failed":
                raise QuickstartError(value)
            stream = sys.stdout if kind == "stdout" else sys.stderr
            stream.write(value)
            stream.flush()
    except KeyboardInterrupt:
        raise QuickstartError(
            "interrupted; run riskmodel quickstart again (finished steps are reused)"
        ) from None
    finally:
        receiving.close()
        if not done and child.is_alive():
            child.terminate()
        child.join()


def _set_up(args: argparse.Namespace, sending: Connection) -> None:
    """The child's side: run the set-up, print through the parent, send back the outcome."""
    sys.stdout = _Relay(sending, "stdout")
    sys.stderr = _Relay(sending, "stderr")
    try:
        sending.send(("done", _prepare(args)))
    except RiskModelError as exc:
        sending.send(("failed", str(exc)))
    except KeyboardInterrupt:
        pass  # the parent had the same Ctrl-C and says so


class _Relay(io.TextIOBase):
    """A child's stdout or stderr: what is written goes to the parent, which prints it."""

    def __init__(self, sending: Connection, stream: str) -> None:
        super().__init__()
        self._sending = sending
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str, /) -> int:
        self._sending.send((self._stream, text))
        return len(text)


def _prepare(args: argparse.Namespace) -> _Prepared:
    plan = _plan(args)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("simulate a marketplace", lambda: _simulate(plan, args)),
        ("load it into the store", lambda: _ingest(plan)),
        ("train and promote a model", lambda: _train(plan)),
        ("install the starter policy", lambda: _policy(plan)),
    ]
    for number, (title, step) in enumerate(steps, 1):
        with _timed(plan, f"{number}. {title}"):
            step()
    with _timed(plan, f"{len(steps) + 1}. create an API key"):
        key = _key(plan)
    with _timed(plan, f"{len(steps) + 2}. create a reviewer account for the console"):
        reviewer = _reviewer(plan)
    request = pending_request(plan.sim, plan.database_url)
    return _Prepared(_serve_options(plan), key, request, plan.timings, reviewer)


# -- steps ---------------------------------------------------------------------------------


def _simulate(plan: _Plan, args: argparse.Namespace) -> None:
    from riskmodel.dataset import find_table_file

    if find_table_file(plan.sim, "refund_requests") is not None:
        print(f"  {plan.sim} already holds a simulation: reused (delete it to simulate anew)")
        return
    _cli(
        "simulate",
        "--out",
        str(plan.sim),
        "--users",
        str(args.users),
        "--days",
        str(args.days),
        "--seed",
        str(args.seed),
    )


def _ingest(plan: _Plan) -> None:
    from riskmodel.store import open_store, table_counts

    engine = open_store(plan.database_url)
    try:
        requests = table_counts(engine).get("refund_requests", 0)
    finally:
        engine.dispose()
    if requests:
        print(
            f"  the store already holds {requests:,} refund requests: reused "
            f"(load more with: {_command(['ingest', 'DIR', '--database-url', plan.database_url])})"
        )
        return
    _cli("ingest", str(plan.sim), "--database-url", plan.database_url)


def _train(plan: _Plan) -> None:
    from riskmodel.registry import Registry

    registry = Registry(plan.registry)
    champion = registry.aliases().get("champion")
    if champion is not None:
        print(
            f"  {champion} is already champion in {plan.registry}: reused "
            f"(retrain with: {_command(['train', *_train_options(plan)])})"
        )
        return
    _cli("train", *_train_options(plan))


def _train_options(plan: _Plan) -> list[str]:
    return [
        "--database-url",
        plan.database_url,
        "--registry",
        str(plan.registry),
        "--promote",
        "champion",
    ]


def _policy(plan: _Plan) -> None:
    from riskmodel.policy import STARTER_POLICY

    if plan.policy.exists():
        print(f"  {plan.policy} exists: kept as it is (the starter policy was not copied over it)")
    else:
        plan.policy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(STARTER_POLICY, plan.policy)
        print(f"  copied the starter policy to {plan.policy} (its thresholds are placeholders)")
    checked = _cli("policy", "check", str(plan.policy), echo=False)
    print(f"    {checked.splitlines()[0] if checked else ''}")


def _key(plan: _Plan) -> str:
    out = _cli(
        "keys",
        "create",
        "--caller",
        CALLER,
        "--role",
        "decide",
        "--role",
        "review",
        "--api-keys",
        str(plan.api_keys),
        "--json",
        echo=False,
    )
    try:
        created = json.loads(out)
        key = str(created["key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise QuickstartError(f"riskmodel keys create --json printed no key: {out!r}") from exc
    print(
        f"  a new key for caller {CALLER!r} (roles decide, review); only its hash is kept, "
        f"in {plan.api_keys}"
    )
    return key


def _reviewer(plan: _Plan) -> tuple[str, str]:
    """A new reviewer account (``reviewer``, else the first free ``reviewer-N``) with a
    random password, shown once, as an API key is."""
    import secrets

    from riskmodel.store import open_store
    from serving.console.accounts import create_account, find_account

    engine = open_store(plan.database_url)
    try:
        name = next(
            n
            for n in ("reviewer", *(f"reviewer-{i}" for i in range(2, 10_000)))
            if find_account(engine, n) is None
        )
        password = secrets.token_urlsafe(12)
        create_account(engine, name, "reviewer", password)
    finally:
        engine.dispose()
    print(f"  a new console account {name!r} (role reviewer); only its password's hash is kept")
    return name, password


def _console(base: str, reviewer: tuple[str, str]) -> str:
    name, password = reviewer
    return (
        f"the review console: {base}/console (sign in as {name!r}, password {password!r}; "
        "more accounts: riskmodel accounts create NAME --role reviewer|support)"
    )


# -- the request to try ---------------------------------------------------------------------


def pending_request(sim: Path, database_url: str) -> dict[str, Any]:
    """A refund request the store has not seen, built from the simulation's own records.

    The latest membership the platform saw used and that was never asked back (neither in
    the simulation nor since, through the API, in the store at ``database_url``), asked back
    in full a few minutes after the latest record of either, its days of use stated
    honestly: the kind of request that gets a graduated answer (approved up to the unused
    days). Failing that, the latest order never asked back, reason ``other``. Its
    ``request_id`` is new to the store too, so the call tried after a second run is a
    first request again, not the first run's answered once more.
    """
    import pandas as pd

    from riskmodel import units

    orders = _table(sim, "orders")
    stored = _stored_requests(database_url)
    asked = pd.concat([_table(sim, "refund_requests")[list(stored.columns)], stored])
    usage = _table(sim, "usage")
    latest = max(orders["paid_at"].max(), asked["requested_at"].max(), usage["used_at"].max())
    at = (int(latest) // units.SECOND + 300) * units.SECOND  # five minutes on, whole seconds
    fresh = orders[~orders["order_id"].isin(asked["order_id"])].sort_values(
        "paid_at", ascending=False
    )
    if fresh.empty:
        raise QuickstartError(f"{sim}: every order was already asked back; nothing to try")
    used = usage[usage["used_at"] < at].groupby("order_id").size()
    memberships = fresh[
        (fresh["product_type"] == "membership")
        & fresh["order_id"].isin(used.index)
        & (fresh["paid_at"] + fresh["service_days"].fillna(0) * units.DAY > at)
    ]
    order = (memberships if not memberships.empty else fresh).iloc[0]
    is_membership = not memberships.empty
    days_used = int(used.get(order["order_id"], 0)) if is_membership else None
    taken = set(asked["request_id"])
    request_id = f"qs-{os.urandom(4).hex()}"
    while request_id in taken:
        request_id = f"qs-{os.urandom(4).hex()}"
    return {
        "request_id": request_id,
        "order_id": str(order["order_id"]),
        "user_id": str(order["user_id"]),
        "requested_at": units.moment(at).isoformat().replace("+00:00", "Z"),
        "amount": units.money(int(order["amount"])),
        "reason": "partial_use" if is_membership else "other",
        "days_used_claimed": days_used,
        "device_id": _text(order["device_id"]),
        "ip": _text(order["ip"]),
        "channel": "app",
    }


def _stored_requests(database_url: str) -> pd.DataFrame:
    import pandas as pd
    from sqlalchemy import select

    from riskmodel.store import metadata, open_store

    table = metadata.tables["refund_requests"]
    columns = ["request_id", "order_id", "requested_at"]
    engine = open_store(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(*[table.c[c] for c in columns])).all()
    finally:
        engine.dispose()
    return pd.DataFrame(rows, columns=columns)


def _table(sim: Path, name: str) -> pd.DataFrame:
    from riskmodel.dataset import find_table_file, read_table

    path = find_table_file(sim, name)
    if path is None:
        raise QuickstartError(f"{sim}: no {name}.parquet or {name}.csv; delete {sim} and rerun")
    return read_table(path, name)


def _text(value: Any) -> str | None:
    import pandas as pd

    return None if pd.isna(value) else str(value)


def _curl(base: str, key: str, request: dict[str, Any]) -> str:
    body = json.dumps(request, separators=(",", ":"))
    return (
        f"  curl -s {base}/v1/decisions \\\n"
        f"    -H {shlex.quote('Authorization: Bearer ' + key)} \\\n"
        f"    -H 'Content-Type: application/json' \\\n"
        f"    -d {shlex.quote(body)}"
    )


# -- serving ----------------------------------------------------------------------------------


def _serve_options(plan: _Plan) -> list[str]:
    return [
        "--database-url",
        plan.database_url,
        "--registry",
        str(plan.registry),
        "--policy",
        str(plan.policy),
        "--api-keys",
        str(plan.api_keys),
    ]


def _serve(prepared: _Prepared, args: argparse.Namespace, base: str, started: float) -> int:
    argv = ["serve", *prepared.serve_options, "--host", args.host, "--port", str(args.port)]
    argv += ["--workers", "1"]
    print(f"\n==> 7. start the API: {_command(argv)}")
    step_started = time.perf_counter()
    # A child process, so that this one can wait for readiness and then print the call.
    server = subprocess.Popen([sys.executable, "-m", "riskmodel.cli", *argv])
    try:
        _wait_ready(server, base)
        started_api = ("7. start the API", time.perf_counter() - step_started)
        _summary([*prepared.timings, started_api], started)
        print(f"\nthe API is ready at {base}; docs at {base}/docs; Ctrl-C stops it")
        print("decide a refund request (send it again: the same stored decision comes back):")
        print(_curl(base, prepared.key, prepared.request))
        print(_console(base, prepared.reviewer), flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _check_port_free(host: str, port: int) -> None:
    """Refuse the port if the server could not bind it, before any step runs.

    Bound as uvicorn binds it: IPv6 for an address with a colon, and SO_REUSEADDR on POSIX.
    Without it, the connections of a server stopped less than a minute ago (in TIME_WAIT)
    would make a free port look taken; with it, only a socket listening there refuses it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if os.name == "posix":
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise QuickstartError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc} (another API still "
                "listening there?); stop it, or pick another port with --port"
            ) from exc


def _wait_ready(server: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise QuickstartError(
                f"riskmodel serve stopped (exit status {server.returncode}) before the API "
                "was ready; its error is above"
            )
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"{exc.code}: {exc.read().decode(errors='replace')[:300]}"
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise QuickstartError(f"{base}/readyz not ready after {READY_TIMEOUT_S:.0f} s ({last})")


# -- plumbing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _timed(plan: _Plan, title: str) -> Iterator[None]:
    print(f"\n==> {title}", flush=True)
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    plan.timings.append((title, seconds))
    print(f"  ({seconds:.1f} s)", flush=True)


def _summary(timings: list[tuple[str, float]], started: float) -> None:
    print("\ntimings:")
    for title, seconds in timings:
        print(f"  {title:<32} {seconds:>6.1f} s")
    print(f"  {'total':<32} {time.perf_counter() - started:>6.1f} s")


def _command(argv: Sequence[str]) -> str:
    return "riskmodel " + " ".join(shlex.quote(a) for a in argv)


class _Indented(io.StringIO):
    """Keeps what a sub-command prints and, as it comes, echoes it indented."""

    def __init__(self, echo: TextIO | None) -> None:
        super().__init__()
        self._echo = echo
        self._at_line_start = True

    def write(self, text: str) -> int:
        if self._echo is not None:
            for piece in text.splitlines(keepends=True):
                if self._at_line_start:
                    self._echo.write("    ")
                self._echo.write(piece)
                self._at_line_start = piece.endswith("\n")
            self._echo.flush()
        return super().write(text)


def _cli(*argv: str, echo: bool = True) -> str:
    """Run ``riskmodel ARGV`` in this process; its output, indented when echoed."""

    print(f"  $ {_command(argv)}", flush=True)
    out = _Indented(sys.stdout if echo else None)
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    text = out.getvalue()
    if status != 0:
        raise QuickstartError(
            f"quickstart stopped: {_command(argv)} failed (exit status {status}); "
            "fix the cause above and run riskmodel quickstart again (finished steps are reused)"
        )
    return text
