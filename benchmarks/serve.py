"""End-to-end latency and throughput of ``POST /v1/decisions`` over real HTTP on loopback.

    python benchmarks/serve.py                        # the full run (about 5 minutes after set-up)
    python benchmarks/serve.py --rate-seconds 10 --step-seconds 5 --repeat-seconds 5   # quick
    python benchmarks/serve.py --backends sqlite,postgresql   # each section on both stores
    python benchmarks/serve.py --sections memory      # 200/s for 10 minutes: RSS every minute

Set-up, once, under ``data/bench-serve/`` (reused afterwards): ``riskmodel simulate
--users 100000 --days 180 --seed 7``; the last ``--holdout-days`` of refund requests are
kept apart, the rest is ingested into SQLite; a model is trained on it and promoted; the
starter policy; an API key. With ``postgresql`` among ``--backends``, the same
history is also ingested once into the database ``riskmodel_bench_base`` on
``--postgresql-url`` (a PostgreSQL server that lets us create databases). Each section then
starts from a fresh copy of that store (a file copy for SQLite, ``CREATE DATABASE ...
TEMPLATE`` for PostgreSQL) and a new ``riskmodel serve`` process, so sections do not see
each other's decisions. ``--workers`` defaults to serve's own default for each store.

The client is open-loop: request ``i`` is due at ``start + i / rate`` whatever happened to
the ones before, and its latency is measured from when it was *due*, so a server that falls
behind shows its queue instead of slowing the client down (which a closed loop would hide).
Every request is a new decision (features from the store, the model, the policy, and a
durable write) on an order never asked back before (``fresh_traffic``): each takes a
held-out request of the same product type as its template and the order's own user,
device, IP and amount. Sending the held-out requests again under new ids would ask for the
same orders again and again, which the repeat-refund rule rightly sends to review, and
would grow those users' histories without end.
``lag`` is how late the client itself sent (its own CPU share on a busy machine); when it is
high, the figures measure the client as much as the server. The client is a few lines of
HTTP/1.1 over asyncio (uvloop when installed) with keep-alive connections, at most
``--connections`` of them, so that it costs little CPU per request (printed as ``client
cpu``): on a small machine an HTTP library's own cost would take the server's CPU.

Sections: a fixed rate (200/s for 60 s); a rate ramp, reporting the highest step held with
p99 under 50 ms and no error; the same ``request_id`` sent again (the idempotent path), plus
a burst of simultaneous duplicates of one new request that must all get one decision. Only
when asked for: ``memory``, the fixed rate for ``--memory-seconds`` with the server's
resident memory and the latency of every minute, to see whether memory levels off; and
``floor``, run once: ``benchmarks/floor_app.py`` (FastAPI with the same request body and
nothing behind it) at the fixed rate and at 2,000/s, to read the decision's cost against.
Each line prints the server's CPU time per request (all its processes, from ``/proc``)
beside the client's. A table at the end has one row per store and section.

The server runs from this script's own checkout (``python -m riskmodel.cli`` in its root),
whatever ``PYTHONPATH`` says: to set two builds side by side, run each checkout's own
``benchmarks/serve.py`` with the same ``--dir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parents[1]
RISKMODEL = [sys.executable, "-m", "riskmodel.cli"]
P99_BUDGET_MS = 50.0
LABEL = 20  # width of the first column: the store and what was measured
DRAIN_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 10.0
POSTGRESQL_BASE = "riskmodel_bench_base"
POSTGRESQL_RUN = "riskmodel_bench_run"


# -- set-up -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    root: Path

    @property
    def sim(self) -> Path:
        return self.root / "sim"

    @property
    def history(self) -> Path:
        return self.root / "history"

    @property
    def traffic(self) -> Path:
        return self.root / "traffic.parquet"

    @property
    def base_db(self) -> Path:
        return self.root / "base.db"

    @property
    def run_db(self) -> Path:
        return self.root / "run.db"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def policy(self) -> Path:
        return self.root / "policy.yaml"

    @property
    def api_keys(self) -> Path:
        return self.root / "api_keys.json"


def _riskmodel(*argv: str, capture: bool = False) -> str:
    done = subprocess.run(
        [*RISKMODEL, *argv], cwd=ROOT, check=True, text=True, capture_output=capture
    )
    return done.stdout if capture else ""


@contextmanager
def _step(title: str) -> Iterator[None]:
    print(f"set-up: {title} ...", flush=True)
    started = time.perf_counter()
    yield
    print(f"set-up: {title}: {time.perf_counter() - started:.1f} s", flush=True)


def prepare(bench: Bench, users: int, days: int, seed: int, holdout_days: float) -> str:
    """Build what is missing; returns an API key with the decide role."""
    bench.root.mkdir(parents=True, exist_ok=True)
    if not (bench.sim / "refund_requests.parquet").is_file():
        with _step(f"simulate {users:,} users x {days} days, seed {seed}"):
            _riskmodel("simulate", "--out", str(bench.sim), "--users", str(users),
                       "--days", str(days), "--seed", str(seed))  # fmt: skip
    if not bench.traffic.is_file():
        with _step(f"hold out the last {holdout_days:g} days of refund requests"):
            _hold_out(bench, holdout_days)
    if not bench.base_db.is_file():
        with _step("ingest the rest into SQLite"):
            partial = bench.base_db.with_name("base.partial.db")
            partial.unlink(missing_ok=True)
            _riskmodel("ingest", str(bench.history), "--database-url", f"sqlite:///{partial}")
            _sqlite_checkpoint(partial)
            partial.replace(bench.base_db)
    if "champion" not in _aliases(bench.registry):
        with _step("train and promote a model"):
            _riskmodel("train", "--database-url", f"sqlite:///{bench.base_db}",
                       "--registry", str(bench.registry), "--promote", "champion")  # fmt: skip
    if not bench.policy.is_file():
        from riskmodel.policy import STARTER_POLICY

        shutil.copyfile(STARTER_POLICY, bench.policy)
    # The key is kept beside the store (a benchmark's own), so that runs reuse one key
    # rather than add one to the keys file each time.
    saved = bench.root / "benchmark.key"
    if saved.is_file() and bench.api_keys.is_file():
        return saved.read_text().strip()
    created = _riskmodel("keys", "create", "--caller", "benchmark", "--role", "decide",
                         "--api-keys", str(bench.api_keys), "--json", capture=True)  # fmt: skip
    key = str(json.loads(created)["key"])
    saved.write_text(key + "\n")
    saved.chmod(0o600)
    return key


def _hold_out(bench: Bench, days: float) -> None:
    requests = pd.read_parquet(bench.sim / "refund_requests.parquet")
    cut = requests["requested_at"].max() - pd.Timedelta(days=days)
    late = requests["requested_at"] > cut
    bench.history.mkdir(parents=True, exist_ok=True)
    for path in bench.sim.glob("*.parquet"):
        if path.stem == "ground_truth":
            continue  # not a table of the contract
        table = pd.read_parquet(path)
        if path.stem == "refund_requests":
            table = table[~late]
        elif path.stem == "labels":
            table = table[~table["request_id"].isin(requests.loc[late, "request_id"])]
        table.to_parquet(bench.history / path.name, index=False)
    requests[late].sort_values("requested_at").to_parquet(bench.traffic, index=False)


def _sqlite_checkpoint(path: Path) -> None:
    import sqlite3

    # Fold the write-ahead log into the file, so that copying the one file copies the store.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _aliases(registry: Path) -> dict[str, Any]:
    path = registry / "aliases.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def fresh_traffic(bench: Bench, count: int, seed: int) -> list[dict[str, Any]]:
    """At most ``count`` refund requests, one per order never refunded, like the held-out ones.

    Each takes a held-out request of the same product type as its template (reason,
    channel, days claimed, how long after payment it came) and the order's own user,
    device, IP and amount. A claim the order's records contradict (``_contradicted``) is
    kept only where its template's was contradicted too: otherwise an honest template's
    "not delivered" lands on a code credited before the request, which the hard rules
    block, and the traffic would hold ten times the held-out share of such claims.

    As live traffic arrives: orders paid in the held-out period (after every stored
    request), asked in time order. Orders from any time, asked in any order, would be
    requests dated before what the service already holds of their buyers, which it counts
    and reviews as such (``serving.decide.stored_view``, ``late_hold``): another workload.
    """
    rng = np.random.default_rng(seed)
    held_out = pd.read_parquet(bench.traffic)
    columns = ["order_id", "user_id", "product_type", "amount", "paid_at", "device_id", "ip",
               "redeemed_at"]  # fmt: skip
    every = pd.read_parquet(bench.history / "orders.parquet", columns=columns)
    refunded = pd.read_parquet(bench.history / "refund_requests.parquet", columns=["order_id"])
    asked = set(refunded["order_id"]) | set(held_out["order_id"])
    live = every["paid_at"] >= held_out["requested_at"].min()
    orders = every[~every["order_id"].isin(asked) & live]
    # Twice as many as asked: some are dropped below.
    chosen = orders.iloc[rng.choice(len(orders), size=min(len(orders), 2 * count), replace=False)]
    templates = held_out.merge(
        every[["order_id", "paid_at", "product_type", "redeemed_at"]], on="order_id"
    )
    templates["contradicted"] = _contradicted(templates, templates["requested_at"])
    parts = []
    for product, group in chosen.groupby("product_type"):
        pool = templates[templates["product_type"] == product]
        like = pool.iloc[rng.integers(len(pool), size=len(group))].reset_index(drop=True)
        group = group.reset_index(drop=True)
        requested_at = group["paid_at"] + (like["requested_at"] - like["paid_at"])
        fresh = group.assign(reason=like["reason"])
        keep = (_contradicted(fresh, requested_at) == like["contradicted"]).to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "request_id": "",
                    "order_id": group["order_id"],
                    "user_id": group["user_id"],
                    "requested_at": requested_at,
                    "amount": group["amount"],
                    "reason": like["reason"],
                    "days_used_claimed": like["days_used_claimed"],
                    "device_id": group["device_id"],
                    "ip": group["ip"],
                    "channel": like["channel"],
                }
            )[keep]
        )
    frame = pd.concat(parts, ignore_index=True)
    picked = frame.iloc[rng.permutation(len(frame))[:count]]
    return _rows(picked.sort_values("requested_at", kind="stable"))


def _contradicted(requests: pd.DataFrame, requested_at: pd.Series) -> pd.Series:
    """Claims the order's own records deny: a card code said invalid, or game currency said
    not delivered, after it was redeemed (credited)."""
    redeemed = requests["redeemed_at"].notna() & (requests["redeemed_at"] < requested_at)
    product, reason = requests["product_type"], requests["reason"]
    claims = ((product == "card_code") & (reason == "invalid_code")) | (
        (product == "game_currency") & (reason == "not_delivered")
    )
    return (claims & redeemed).fillna(False).astype(bool)


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for record in frame.to_dict("records"):
        row: dict[str, Any] = {}
        for column, value in record.items():
            name = str(column)
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                row[name] = None
            elif isinstance(value, pd.Timestamp):
                row[name] = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, np.integer):
                row[name] = int(value)
            elif isinstance(value, float | np.floating):
                row[name] = round(float(value), 2)
            else:
                row[name] = value
        rows.append(row)
    return rows


# -- the stores ---------------------------------------------------------------------------------


class Store(Protocol):
    name: str

    def prepare(self) -> None:
        """Build the base store if missing (the history ingested once)."""

    def fresh(self) -> str:
        """A new copy of the base store; returns its database URL."""


@dataclass(frozen=True)
class SqliteStore:
    bench: Bench
    name: str = "sqlite"

    def prepare(self) -> None:
        """Nothing: ``prepare`` builds the SQLite base, which training needs anyway."""

    def fresh(self) -> str:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.bench.run_db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.bench.base_db, self.bench.run_db)
        # On disk before the server starts: otherwise the first checkpoint's fsync of the
        # file writes out the whole fresh copy (a 100 ms stall a few requests in, which
        # no running service has).
        with self.bench.run_db.open("rb+") as copy:
            os.fsync(copy.fileno())
        return f"sqlite:///{self.bench.run_db}"


@dataclass(frozen=True)
class PostgresqlStore:
    bench: Bench
    server_url: str  # postgresql+psycopg://user@host:port, without a database
    name: str = "postgresql"

    def url(self, database: str) -> str:
        return make_url(self.server_url).set(database=database).render_as_string(False)

    def prepare(self) -> None:
        if self._exists(POSTGRESQL_BASE):
            return
        partial = f"{POSTGRESQL_BASE}_partial"
        with _step(f"ingest the history into PostgreSQL ({POSTGRESQL_BASE})"):
            from riskmodel.store import create_database

            create_database(self.url(partial), replace=True)
            _riskmodel("ingest", str(self.bench.history), "--database-url", self.url(partial))
            # Renamed only once complete, so an interrupted ingest is not taken for a base.
            self._admin(
                "ALTER DATABASE {old} RENAME TO {new}", partial, old=partial, new=POSTGRESQL_BASE
            )

    def fresh(self) -> str:
        self._admin("DROP DATABASE IF EXISTS {run}", POSTGRESQL_RUN, run=POSTGRESQL_RUN)
        self._admin(
            "CREATE DATABASE {run} TEMPLATE {base}", POSTGRESQL_BASE,
            run=POSTGRESQL_RUN, base=POSTGRESQL_BASE,
        )  # fmt: skip
        # On disk before the server starts, as the SQLite copy: the copy left about 0.9 GB
        # of dirty pages that the kernel wrote out in one burst some 30 s later, mid-run,
        # stalling commits and reads for 170 to 280 ms (and its WAL started a checkpoint).
        with self._connect() as conn:
            conn.execute("CHECKPOINT")
        os.sync()
        return self.url(POSTGRESQL_RUN)

    def _exists(self, database: str) -> bool:
        with self._connect() as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            return found.fetchone() is not None

    def _admin(self, statement: str, idle: str, **databases: str) -> None:
        """Run ``statement`` (``{name}`` for each database) once ``idle`` has no session.

        Dropping, renaming or copying a database needs it to have none, and a server
        stopped a moment ago may still hold some.
        """
        from psycopg import sql

        names = {key: sql.Identifier(name) for key, name in databases.items()}
        with self._connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (idle,),
            )
            conn.execute(sql.SQL(statement).format(**names))

    def _connect(self) -> Any:
        import psycopg

        admin = make_url(self.server_url).set(drivername="postgresql", database="postgres")
        return psycopg.connect(admin.render_as_string(False), autocommit=True)


# -- the server ---------------------------------------------------------------------------------


class Server:
    """``riskmodel serve`` on a fresh copy of the base store, as a child process."""

    def __init__(
        self, bench: Bench, store: Store, workers: int | None, key: str, floor: bool = False
    ) -> None:
        self.bench = bench
        self.store = store
        self.workers = workers
        self.key = key
        self.floor = floor  # serve benchmarks/floor_app.py instead: no store, no model
        self.port = _free_port()
        self.host = "127.0.0.1"
        self.base = f"http://{self.host}:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        argv = [
            *RISKMODEL, "serve", "--port", str(self.port),
            "--database-url", self.store.fresh(),
            "--registry", str(self.bench.registry), "--policy", str(self.bench.policy),
            "--api-keys", str(self.bench.api_keys), "--log-level", "warning",
        ]  # fmt: skip
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        if self.floor:
            argv = [sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir",
                    str(ROOT / "benchmarks"), "--port", str(self.port),
                    "--log-level", "warning", "--no-access-log"]  # fmt: skip
        self.process = subprocess.Popen(argv, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"riskmodel serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.base}/readyz not ready after 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def rss_mb(self) -> float:
        """Resident memory of the server and its worker processes."""
        assert self.process is not None
        return sum(_rss_kb(pid) for pid in _tree(self.process.pid)) / 1024

    def cpu_seconds(self) -> float:
        """CPU time (user and system) the server and its worker processes have used."""
        assert self.process is not None
        ticks = sum(_cpu_ticks(pid) for pid in _tree(self.process.pid))
        return ticks / os.sysconf("SC_CLK_TCK")

    def commits(self) -> tuple[float, float]:
        """The worker's commits of decisions so far, and the decisions they wrote."""
        text = httpx.get(f"{self.base}/metrics", timeout=10).text
        found = dict.fromkeys(("_count", "_sum"), 0.0)
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            part = name.removeprefix("riskmodel_commit_group_size")
            if part in found:
                found[part] = float(value)
        return found["_count"], found["_sum"]

    def loop_cpu_seconds(self) -> float:
        """The part of ``cpu_seconds`` on the processes' main threads, their event loops:
        what one worker cannot spread over more cores. The rest is its threads (the
        decision writer's commits, the log's checkpoints, reads off the loop)."""
        assert self.process is not None
        ticks = sum(_cpu_ticks(pid, thread=pid) for pid in _tree(self.process.pid))
        return ticks / os.sysconf("SC_CLK_TCK")

    async def measured(self, run: Coroutine[Any, Any, Result]) -> Result:
        """``run``'s result, with the server's CPU time while it ran, that of PostgreSQL's
        processes on this machine (with that store), and how busy the whole machine was:
        a tail that comes with a machine busy near 100% is the cores running out, not the
        code waiting."""
        local = self.store.name == "postgresql" and not self.floor
        database = _database_cpu_seconds() if local else 0.0
        before, loops, machine = self.cpu_seconds(), self.loop_cpu_seconds(), _machine()
        # Each worker counts its own commits: with one, /metrics has them all.
        commits = self.commits() if self.workers == 1 and not self.floor else None
        result = await run
        result.server_cpu_seconds = self.cpu_seconds() - before
        result.loop_cpu_seconds = self.loop_cpu_seconds() - loops
        if commits is not None:
            count, written = (a - b for a, b in zip(self.commits(), commits, strict=True))
            result.commits = (int(count), int(written))
        if local:
            result.database_cpu_seconds = _database_cpu_seconds() - database
        busy, total = (after - start for after, start in zip(_machine(), machine, strict=True))
        result.machine_busy = busy / max(total, 1)
        return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tree(pid: int) -> list[int]:
    found = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in children:
        found += _tree(int(child))
    return found


def _cpu_ticks(pid: int, thread: int | None = None) -> int:
    """The CPU ticks of process ``pid``, or of its one ``thread``."""
    path = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    try:
        # The fields after the command name, which is in parentheses and may hold spaces.
        fields = path.read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime


def _database_cpu_seconds() -> float:
    """CPU time the processes of a PostgreSQL server on this machine have used (none: 0)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    ticks += _cpu_ticks(int(entry.name))
            except OSError:
                continue  # gone meanwhile
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in ticks, over all cores."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields) - idle, sum(fields)


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- a minimal HTTP/1.1 client --------------------------------------------------------------------


class ProtocolError(Exception):
    """An answer this client does not read (chunked, no Content-Length): the run stops."""


# Called once per request with the status and body, or with the error (and status 0).
Reply = Callable[[int, bytes, Exception | None], None]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time, its answer read by Content-Length.

    Answers go to a callback rather than to a task awaiting them: a task per request cost
    about a fifth more CPU per request.
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.head_end = -1  # where the body starts, once the head is in
        self.length = -1  # the answer's full size (head and body), once the head is in
        self.status = 0
        self.reusable = True
        self.reply: Reply | None = None
        self.sent_at = 0.0  # time.monotonic() of the request out, for Pool's watchdog

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A TCP transport (uvloop's does not subclass asyncio's, hence no isinstance).
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, reply: Reply) -> None:
        assert self.transport is not None
        assert self.reply is None, "one request at a time"
        self.reply = reply
        self.sent_at = time.monotonic()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            if self.head_end < 0 and not self._read_head():
                return
        except (ProtocolError, ValueError) as exc:
            self._fail(ProtocolError(f"{exc}: {bytes(self.buffer[:300])!r}"))
            return
        if len(self.buffer) < self.length:
            return
        body = bytes(self.buffer[self.head_end : self.length])
        del self.buffer[: self.length]
        self.head_end = self.length = -1
        reply, self.reply = self.reply, None
        self.pool.answered(self)
        if reply is not None:
            reply(self.status, body, None)

    def _read_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        # Lower-cased and with the last field's CRLF, so each field reads "\r\nname: value\r\n".
        head = bytes(self.buffer[: end + 2]).lower()
        if b"\r\ntransfer-encoding:" in head:
            raise ProtocolError("a chunked answer")  # the one transfer-coding seen in practice
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ProtocolError("an answer without Content-Length")
        value = at + len(b"\r\ncontent-length:")
        self.status = int(head[9:12])  # "HTTP/1.1 200 OK"
        self.head_end = end + 4
        self.length = self.head_end + int(head[value : head.index(b"\r\n", value)])
        self.reusable = b"\r\nconnection: close\r\n" not in head
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("closed by the server"))
        self.pool.lost(self)

    def expire(self) -> None:
        self._fail(TimeoutError(f"no answer in {REQUEST_TIMEOUT_SECONDS:g} s"))

    def _fail(self, exc: Exception) -> None:
        self.close()
        reply, self.reply = self.reply, None
        if reply is not None:
            reply(0, b"", exc)

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class Pool:
    """Up to ``size`` keep-alive connections; an idle one is reused, else one more opened."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host = host
        self.port = port
        self.size = size
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.connecting: set[asyncio.Task[None]] = set()
        self.watchdog: asyncio.TimerHandle | None = None

    def full(self) -> bool:
        return not self.idle and len(self.busy) + len(self.connecting) >= self.size

    def send(self, request: bytes, reply: Reply) -> bool:
        """Send ``request`` (a whole HTTP request); False if every connection is busy."""
        if self.watchdog is None:
            self._watch()
        if self.idle:
            connection = self.idle.pop()
            self.busy.add(connection)
            connection.send(request, reply)
        elif self.full():
            return False
        else:
            task = asyncio.get_running_loop().create_task(self._connect(request, reply))
            self.connecting.add(task)
            task.add_done_callback(self.connecting.discard)
        return True

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """Status and body of the answer to ``request``, for the requests not timed."""
        answer: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

        def reply(status: int, body: bytes, error: Exception | None) -> None:
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result((status, body))

        if not self.send(request, reply):
            raise ConnectionError(f"all {self.size} connections busy")
        return await answer

    async def _connect(self, request: bytes, reply: Reply) -> None:
        try:
            _, connection = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError as exc:
            reply(0, b"", exc)
            return
        self.busy.add(connection)
        connection.send(request, reply)

    def _watch(self) -> None:
        # One timer for the pool, once a second, rather than one set and cancelled for every
        # request: the client's work per request is kept to the sending and the reading.
        now = time.monotonic()
        for connection in [c for c in self.busy if now - c.sent_at > REQUEST_TIMEOUT_SECONDS]:
            connection.expire()
        self.watchdog = asyncio.get_running_loop().call_later(1.0, self._watch)

    def answered(self, connection: _Connection) -> None:
        self.busy.discard(connection)
        if connection.reusable:
            # Last in, first out: the busy connections stay warm, the spare ones go idle
            # and the server closes them (its keep-alive timeout) rather than this client
            # sending on one it is closing.
            self.idle.append(connection)
        else:
            connection.close()

    def lost(self, connection: _Connection) -> None:
        self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)

    def close(self) -> None:
        """Close every connection; requests still out get no reply."""
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        for task in list(self.connecting):
            task.cancel()
        for connection in [*self.idle, *self.busy]:
            connection.reply = None
            connection.close()


class Requests:
    """Refund requests as whole HTTP requests, each under a fresh ``request_id``, each row
    used once in turn (``traffic`` is cycled only when used up).

    Each row's JSON is encoded once; a request is then its head and the row joined to a new
    ``request_id``, a few bytes' work, so the client's cost is the sending, not JSON.
    """

    def __init__(self, traffic: list[dict[str, Any]], host: str, port: int, key: str) -> None:
        self.head = (
            f"POST /v1/decisions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.rows = [
            json.dumps({k: v for k, v in row.items() if k != "request_id"})[1:].encode()
            for row in traffic
        ]
        self.used = 0

    def named(self, prefix: str) -> Callable[[int], bytes]:
        """Request ``i`` with the id ``{prefix}-{i}``, on the next row not used yet."""
        opening = f'{{"request_id": "{prefix}-'.encode()

        def request(i: int) -> bytes:
            row = self.rows[self.used % len(self.rows)]
            self.used += 1
            body = b'%s%d", %s' % (opening, i, row) if row != b"}" else b'%s%d"}' % (opening, i)
            return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)

        return request


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` on uvloop when installed: its loop costs the client less per request."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# -- the open-loop client -------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    rate: float
    sent: int
    seconds: float
    latencies_ms: np.ndarray
    lag_ms: np.ndarray
    errors: Counter[str]
    cpu_seconds: float
    decisions: Counter[str]
    server_cpu_seconds: float | None = None
    loop_cpu_seconds: float | None = None  # of it, on the workers' event loops
    commits: tuple[int, int] | None = None  # transactions, and the decisions they wrote
    database_cpu_seconds: float = 0.0  # a local PostgreSQL's
    machine_busy: float | None = None  # the share of all cores in use

    @property
    def ok(self) -> int:
        return self.sent - sum(self.errors.values())

    @property
    def client_cpu(self) -> float:
        """The client's share of one core."""
        return self.cpu_seconds / self.seconds

    def percentile(self, q: float) -> float:
        return (
            # "higher": an order statistic, so unanswered requests (inf) read as inf, not nan.
            float(np.percentile(self.latencies_ms, q, method="higher"))
            if len(self.latencies_ms)
            else float("nan")
        )

    def held(self) -> bool:
        return not self.errors and self.percentile(99) < P99_BUDGET_MS

    def line(self) -> str:
        errors = sum(self.errors.values())
        detail = (
            f" ({', '.join(f'{k} x{v}' for k, v in self.errors.most_common(3))})" if errors else ""
        )
        worst = float(np.max(self.latencies_ms, initial=0))
        lag = float(np.percentile(self.lag_ms, 99))
        per_request_us = self.cpu_seconds / self.sent * 1e6
        # Per answered request: a server that falls behind leaves requests unsent, and
        # dividing by those too would halve its cost.
        server = (
            ""
            if self.server_cpu_seconds is None
            else f"; server cpu {self.server_cpu_seconds / max(self.ok, 1) * 1e6:,.0f} "
            "µs/answered request"
        )
        if self.server_cpu_seconds is not None and self.loop_cpu_seconds is not None:
            server += f" ({self.loop_cpu_seconds / max(self.ok, 1) * 1e6:,.0f} on event loops)"
        if self.commits is not None and self.commits[0]:
            count, written = self.commits
            server += f"; {count:,} commits of {written / count:.2f} decisions"
        if self.database_cpu_seconds > 0:
            server += f", database {self.database_cpu_seconds / max(self.ok, 1) * 1e6:,.0f} µs"
        if self.machine_busy is not None:
            server += f"; machine busy {self.machine_busy:.0%} of {os.cpu_count()} cores"
        return (
            f"{self.label:<{LABEL}} {self.rate:>7,.0f}/s  sent {self.sent:>7,}  "
            f"done {self.sent / self.seconds:>7,.0f}/s  p50 {self.percentile(50):>7.2f} ms  "
            f"p99 {self.percentile(99):>7.2f} ms  max {worst:>8.2f} ms  errors {errors}{detail}  "
            f"client lag p99 {lag:.1f} ms, client cpu {self.client_cpu:.0%} "
            f"({per_request_us:.0f} µs/request){server}"
        )


async def open_loop(
    pool: Pool,
    request: Callable[[int], bytes],
    rate: float,
    seconds: float,
    label: str,
    check: Callable[[int, bytes], str | None] | None = None,
    start_wall: float | None = None,
) -> Result:
    """Send ``rate * seconds`` requests, each due at its own time; latency from when due.

    ``start_wall`` (a ``time.time()``) lines up several client processes, or several
    consecutive runs, on one schedule. ``pool`` is this run's alone while it runs: what is
    still unanswered at the end is dropped by closing its connections.
    """
    n = max(1, int(rate * seconds))
    latencies = np.full(n, np.inf)  # stays so for what is not sent or never answered
    lag = np.zeros(n)
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    fatal: list[ProtocolError] = []
    out = 0  # sent and not answered yet
    drained: asyncio.Future[None] | None = None
    clock = time.perf_counter  # not loop.time(): uvloop's clock moves in whole milliseconds

    def answered(i: int, due: float, status: int, content: bytes, error: Exception | None) -> None:
        nonlocal out
        latencies[i] = (clock() - due) * 1000
        out -= 1
        if error is not None:
            if isinstance(error, ProtocolError):
                fatal.append(error)
            errors[type(error).__name__] += 1  # refused, reset, timed out
        elif status != 200:
            errors[f"HTTP {status}"] += 1
        else:
            problem = check(i, content) if check else None
            if problem:
                errors[problem] += 1
            else:
                decisions[_decision(content)] += 1
        if out == 0 and drained is not None and not drained.done():
            drained.set_result(None)

    start = clock() + (0.05 if start_wall is None else max(0.0, start_wall - time.time()))
    await asyncio.sleep(start - clock())
    cpu_before = _cpu_seconds()
    for i in range(n):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 32 == 0:
            await asyncio.sleep(0)  # behind schedule: still let answers in
        if fatal:
            raise fatal[0]  # an answer this client cannot read: the figures would be wrong
        lag[i] = (clock() - due) * 1000
        if not pool.send(request(i), partial(answered, i, due)):
            # The server holds this many already: a request more would only queue in the
            # client, whose growing backlog then slows the clock of every later request.
            errors[f"not sent: {pool.size} in flight"] += 1
            continue
        out += 1
    if out:
        # A server far behind would take minutes to drain; what is still out by then failed.
        drained = asyncio.get_running_loop().create_future()
        await asyncio.wait([drained], timeout=DRAIN_SECONDS)
    if out:
        errors[f"unanswered {DRAIN_SECONDS:g} s after the last send"] += out
        pool.close()
    if fatal:
        raise fatal[0]
    elapsed = clock() - start
    return Result(label, rate, n, elapsed, latencies, lag, errors,
                  _cpu_seconds() - cpu_before, decisions)  # fmt: skip


def _decision(content: bytes) -> str:
    # The server writes compact JSON; finding the one field costs less than parsing it all.
    at = content.find(b'"decision":"')
    if at < 0:
        return "?"
    start = at + len(b'"decision":"')
    return content[start : content.find(b'"', start)].decode()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- sections -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a section gives the summary table: its main figures and a word about them."""

    result: Result
    note: str = ""


def _label(server: Server, what: str) -> str:
    return f"{'none' if server.floor else server.store.name} {what}"


def _pool(server: Server, args: argparse.Namespace) -> Pool:
    return Pool(server.host, server.port, args.connections)


def _requests(server: Server, traffic: list[dict[str, Any]]) -> Requests:
    return Requests(traffic, server.host, server.port, server.key)


async def _warm_up(pool: Pool, requests: Requests, args: argparse.Namespace) -> None:
    await open_loop(pool, requests.named("warm"), 100, args.warmup_seconds, "warm-up")


async def fixed_rate(
    server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace
) -> Outcome:
    pool, requests = _pool(server, args), _requests(server, traffic)
    await _warm_up(pool, requests, args)
    result = await server.measured(
        open_loop(
            pool, requests.named("fixed"), args.rate, args.rate_seconds, _label(server, "fixed")
        )
    )
    pool.close()
    print(result.line())
    print(f"{'':<{LABEL}} decisions: {dict(result.decisions.most_common())}")
    return Outcome(result)


async def ramp(server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace) -> Outcome:
    held: Result | None = None
    first: Result | None = None
    failed = 0
    process_pool = None
    if args.clients > 1:
        # One client process can still fall behind past some rate on a busy machine (see
        # its lag); several spread the sending over the cores, and the figures say so.
        process_pool = ProcessPoolExecutor(
            args.clients, mp_context=multiprocessing.get_context("spawn")
        )
        list(process_pool.map(_ready, range(args.clients)))
    pool, requests = _pool(server, args), _requests(server, traffic)
    try:
        await _warm_up(pool, requests, args)
        for step, rate in enumerate(args.ramp):
            cpu = server.cpu_seconds()
            if process_pool is None:
                result = await open_loop(
                    pool,
                    requests.named(f"ramp{step}"),
                    rate,
                    args.step_seconds,
                    _label(server, "ramp"),
                )
            else:
                start = time.time() + 0.5
                # Rows no other client and no other step sends.
                step_rows = traffic[requests.used : requests.used + int(rate * args.step_seconds)]
                requests.used += len(step_rows)
                shares = [
                    _Share(server.host, server.port, server.key, args.connections,
                           step_rows[k :: args.clients], f"ramp{step}c{k}", rate / args.clients,
                           args.step_seconds, start)
                    for k in range(args.clients)
                ]  # fmt: skip
                parts = list(process_pool.map(_drive_share, shares))
                result = _merge(parts, rate, _label(server, "ramp"))
            result.server_cpu_seconds = server.cpu_seconds() - cpu
            print(result.line(), flush=True)
            first = first or result
            if result.held():
                held, failed = result, 0
            else:
                # One step can fail on a single stall (a checkpoint, a neighbour's
                # burst of work); two in a row is the server's limit.
                failed += 1
                if failed == 2:
                    break
            await asyncio.sleep(1.0)  # let the last answers drain before the next step
    finally:
        pool.close()
        if process_pool is not None:
            process_pool.shutdown()
    verdict = f"{held.rate:,.0f} decisions/s" if held else "none of the steps"
    clients = f" ({args.clients} client processes)" if args.clients > 1 else ""
    print(f"highest rate held with p99 < {P99_BUDGET_MS:g} ms and no error{clients}: {verdict}")
    assert first is not None
    return Outcome(held or first, f"held {verdict}")


@dataclass(frozen=True)
class _Share:
    """One client process's part of a step."""

    host: str
    port: int
    key: str
    connections: int
    traffic: list[dict[str, Any]]
    prefix: str
    rate: float
    seconds: float
    start_wall: float


def _ready(_: int) -> None:
    """Nothing: makes the pool start its processes (and import) before the clock runs."""


def _drive_share(share: _Share) -> Result:
    async def drive() -> Result:
        pool = Pool(share.host, share.port, share.connections)
        requests = Requests(share.traffic, share.host, share.port, share.key)
        try:
            return await open_loop(pool, requests.named(share.prefix), share.rate,
                                   share.seconds, "ramp", start_wall=share.start_wall)  # fmt: skip
        finally:
            pool.close()

    result: Result = run_async(drive())
    return result


def _merge(
    parts: list[Result], rate: float, label: str | None = None, one_after_another: bool = False
) -> Result:
    """One result of several: client processes side by side, or runs one after another."""
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
        decisions.update(part.decisions)
    return Result(
        label or parts[0].label,
        rate,
        sum(p.sent for p in parts),
        (sum if one_after_another else max)(p.seconds for p in parts),
        np.concatenate([p.latencies_ms for p in parts]),
        np.concatenate([p.lag_ms for p in parts]),
        errors,
        sum(p.cpu_seconds for p in parts),
        decisions,
        _total(p.server_cpu_seconds for p in parts) if one_after_another else None,
    )


def _total(values: Iterator[float | None]) -> float | None:
    found = list(values)
    return None if any(v is None for v in found) else sum(v for v in found if v is not None)


async def repeated(
    server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace
) -> Outcome:
    pool, requests = _pool(server, args), _requests(server, traffic)
    first_request = requests.named("again")(0)
    status, content = await pool.post(first_request)
    if status != 200:
        raise SystemExit(f"POST /v1/decisions: {status} {content[:500]!r}")
    stored = _comparable(content)

    def same(_: int, content: bytes) -> str | None:
        return None if _comparable(content) == stored else "a different answer"

    result = await server.measured(
        open_loop(
            pool,
            lambda _: first_request,
            args.rate,
            args.repeat_seconds,
            _label(server, "same id"),
            same,
        )
    )
    print(result.line())
    # Simultaneous duplicates of one new request: one decision, the same for all.
    burst_request = requests.named("burst")(1)
    answers = await asyncio.gather(*(pool.post(burst_request) for _ in range(args.burst)))
    pool.close()
    statuses = Counter(status for status, _ in answers)
    distinct = {_comparable(content) for status, content in answers if status == 200}
    print(
        f"{_label(server, 'burst'):<{LABEL}} {args.burst} simultaneous copies of one new "
        f"request: statuses "
        f"{dict(statuses)}, {len(distinct)} distinct decision(s)"
    )
    return Outcome(result, f"burst: {len(distinct)} distinct decision(s)")


def _comparable(content: bytes) -> str:
    answer = json.loads(content)
    # Whether this answer is the first or a replay is the one field allowed to differ.
    answer.pop("replayed", None)
    return json.dumps(answer, sort_keys=True)


async def memory(
    server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace
) -> Outcome:
    """The fixed rate for a long while: resident memory and latency minute by minute."""
    requests = _requests(server, traffic)
    minutes = math.ceil(args.memory_seconds / 60)
    start = time.time() + 0.5
    # One schedule cut into minutes: each minute is its own open loop (with its own
    # connections), started at its time while the one before may still be waiting for its
    # last answers, so the rate never pauses between them.
    runs = []
    pools = [_pool(server, args) for _ in range(minutes)]
    for m, pool in enumerate(pools):
        seconds = min(60.0, args.memory_seconds - 60 * m)
        label = _label(server, f"minute {m + 1}")
        minute = open_loop(pool, requests.named(f"mem{m}"), args.rate, seconds, label,
                           start_wall=start + 60 * m)  # fmt: skip
        runs.append(asyncio.create_task(minute))
    rss, cpu = [server.rss_mb()], server.cpu_seconds()
    print(f"{_label(server, 'memory'):<{LABEL}} server RSS {rss[0]:.0f} MB at start")
    results = []
    for run, pool in zip(runs, pools, strict=True):
        results.append(await run)
        pool.close()
        used, cpu = cpu, server.cpu_seconds()
        results[-1].server_cpu_seconds = cpu - used
        rss.append(server.rss_mb())
        print(f"{results[-1].line()}  server RSS {rss[-1]:.0f} MB", flush=True)
    whole = _merge(results, args.rate, _label(server, "memory"), one_after_another=True)
    print(whole.line())
    print(f"{'':<{LABEL}} server RSS by minute (MB): {', '.join(f'{mb:.0f}' for mb in rss)}")
    last = f"{rss[-1] - rss[-2]:+.0f} MB in the last {results[-1].seconds:.0f} s"
    return Outcome(whole, f"RSS by minute {', '.join(f'{mb:.0f}' for mb in rss)} MB ({last})")


# -- main -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the summary table."""

    store: str
    section: str
    workers: int
    outcome: Outcome
    rss_mb: tuple[float, float]


def _summary(rows: list[Row]) -> None:
    print()
    print(
        f"{'store':<11} {'section':<7} {'workers':>7} {'rate':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'errors':>6} {'RSS MB':>11}  note"
    )
    for row in rows:
        result = row.outcome.result
        print(
            f"{row.store:<11} {row.section:<7} {row.workers:>7} {result.rate:>6,.0f}/s "
            f"{result.percentile(50):>8.2f} {result.percentile(99):>8.2f} "
            f"{sum(result.errors.values()):>6} "
            f"{f'{row.rss_mb[0]:.0f} -> {row.rss_mb[1]:.0f}':>11}  {row.outcome.note}"
        )


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench-serve")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holdout-days", type=float, default=14.0)
    parser.add_argument(
        "--backends", default="sqlite", help="stores to serve from: sqlite, postgresql or both"
    )
    parser.add_argument(
        "--postgresql-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="a PostgreSQL server, without a database (the benchmark creates its own)",
    )
    parser.add_argument("--workers", type=int, help="server workers (default: serve's)")
    parser.add_argument(
        "--connections", type=int, default=256, help="client connections, the most in flight"
    )
    parser.add_argument(
        "--clients", type=int, default=1, help="client processes for the ramp (default 1)"
    )
    parser.add_argument("--rate", type=float, default=200.0, help="the fixed rate (200/s)")
    parser.add_argument("--rate-seconds", type=float, default=60.0)
    parser.add_argument(
        "--ramp", type=_rates, default=_rates("100,200,300,500,750,1000,1500,2000,3000,4000")
    )
    parser.add_argument("--step-seconds", type=float, default=15.0)
    parser.add_argument("--repeat-seconds", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=20)
    parser.add_argument("--warmup-seconds", type=float, default=10.0)
    parser.add_argument("--memory-seconds", type=float, default=600.0)
    parser.add_argument(
        "--sections",
        default="fixed,ramp,repeat",
        help="which of fixed, ramp, repeat, memory to run (default: all but memory)",
    )
    return parser


async def floor(server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace) -> Outcome:
    """``benchmarks/floor_app.py`` at the fixed rate and at 2,000/s: what HTTP, FastAPI and
    the request body cost without any of the decision's work."""
    pool, requests = _pool(server, args), _requests(server, traffic)
    await _warm_up(pool, requests, args)
    results = []
    for rate in (args.rate, 2000.0):
        result = await server.measured(
            open_loop(pool, requests.named(f"floor{rate:.0f}"), rate, args.step_seconds,
                      _label(server, "floor"))
        )  # fmt: skip
        print(result.line(), flush=True)
        results.append(result)
    pool.close()
    last = results[-1]
    per_request = (last.server_cpu_seconds or 0.0) / max(last.ok, 1) * 1e6
    return Outcome(last, f"no store, no model: {per_request:,.0f} µs of CPU a request")


SECTIONS = {
    "fixed": fixed_rate,
    "ramp": ramp,
    "repeat": repeated,
    "memory": memory,
    "floor": floor,
}


def _needed(sections: list[str], args: argparse.Namespace) -> int:
    """Requests the longest of ``sections`` sends (each section starts on a fresh store,
    so they may send the same ones)."""
    warm = int(100 * args.warmup_seconds)
    sends = {
        "fixed": warm + int(args.rate * args.rate_seconds),
        "ramp": warm + sum(int(rate * args.step_seconds) for rate in args.ramp),
        "repeat": 2,
        "memory": int(args.rate * args.memory_seconds),
        "floor": warm + int((args.rate + 2000) * args.step_seconds),
    }
    return max(sends[name] for name in sections)


def _fit_ramp(sections: list[str], args: argparse.Namespace, made: int) -> None:
    """Drop the ramp's top steps when the store cannot make fresh traffic for all of them
    (sent again, a request asks for an order already asked for: another workload); stop
    when another section asks for more than was made."""
    asked = _needed(sections, args)
    while "ramp" in sections and len(args.ramp) > 1 and _needed(sections, args) > made:
        args.ramp = args.ramp[:-1]
    if _needed(sections, args) > made:
        raise SystemExit(f"fresh traffic: {asked:,} requests asked, {made:,} could be made")
    print(
        f"fresh traffic: {made:,} requests could be made of {asked:,} asked; the ramp stops "
        f"at {args.ramp[-1]:,.0f}/s (more fresh orders: --users or --days)"
    )


def main() -> None:
    args = _parser().parse_args()
    # Stopped from outside, still stop the server it started (Server.__exit__).
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    sections = args.sections.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: no section {', '.join(sorted(unknown))}")

    bench = Bench(args.dir)
    stores: list[Store] = []
    for name in args.backends.split(","):
        if name == "sqlite":
            stores.append(SqliteStore(bench))
        elif name == "postgresql":
            stores.append(PostgresqlStore(bench, args.postgresql_url))
        else:
            raise SystemExit(f"--backends: {name} is neither sqlite nor postgresql")
    key = prepare(bench, args.users, args.days, args.seed, args.holdout_days)
    for store in stores:
        store.prepare()
    traffic = fresh_traffic(bench, _needed(sections, args), args.seed)
    if len(traffic) < _needed(sections, args):
        _fit_ramp(sections, args, len(traffic))
    print(
        f"store: {args.users:,} users x {args.days} days (seed {args.seed}), "
        f"{len(traffic):,} fresh refund requests as traffic (fresh_traffic); "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}"
    )
    rows = []
    if "floor" in sections:
        rows.append(_section(bench, stores[0], "floor", key, traffic, args))
    for store in stores:
        for name in sections:
            if name != "floor":
                rows.append(_section(bench, store, name, key, traffic, args))
    _summary(rows)


def _section(
    bench: Bench,
    store: Store,
    name: str,
    key: str,
    traffic: list[dict[str, Any]],
    args: argparse.Namespace,
) -> Row:
    from serving.commands import default_workers

    floor = name == "floor"
    with Server(bench, store, None if floor else args.workers, key, floor=floor) as server:
        workers = 1 if floor else args.workers or default_workers(f"{store.name}://")
        print(f"-- {'none' if floor else store.name}, {name}, {workers} worker(s)", flush=True)
        rss = server.rss_mb()
        outcome: Outcome = run_async(SECTIONS[name](server, traffic, args))
        end = server.rss_mb()
        print(f"{'':<{LABEL}} server RSS {rss:.0f} MB at start, {end:.0f} MB at end")
    return Row("none" if floor else store.name, name, workers, outcome, (rss, end))


if __name__ == "__main__":
    main()
