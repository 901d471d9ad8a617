"""End-to-end latency and throughput of ``POST /v1/decisions`` over real HTTP on loopback.

    python benchmarks/serve.py                        # the full run (about 5 minutes after set-up)
    python benchmarks/serve.py --rate-seconds 10 --step-seconds 5 --repeat-seconds 5   # quick

Set-up, once, under ``data/bench-serve/`` (reused afterwards): ``riskmodel simulate
--users 100000 --days 180 --seed 7``; the last ``--holdout-days`` of refund requests are
kept apart as the traffic, the rest is ingested into SQLite; a model is trained on it and
promoted; the starter policy; an API key. Each section then starts from a fresh copy of that
store and a new ``riskmodel serve`` process, so sections do not see each other's decisions.

The client is open-loop: request ``i`` is due at ``start + i / rate`` whatever happened to
the ones before, and its latency is measured from when it was *due*, so a server that falls
behind shows its queue instead of slowing the client down (which a closed loop would hide).
Every request is a held-out refund request with a fresh ``request_id``, so each one is a
new decision: features from the store, the model, the policy, and a durable write.
``lag`` is how late the client itself sent (its own CPU share on a busy machine); when it is
high, the figures measure the client as much as the server.

Sections: a fixed rate (200/s for 60 s); a rate ramp, reporting the highest step held with
p99 under 50 ms and no error; the same ``request_id`` sent again (the idempotent path), plus
a burst of simultaneous duplicates of one new request that must all get one decision.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RISKMODEL = [sys.executable, "-m", "riskmodel.cli"]
P99_BUDGET_MS = 50.0
DRAIN_SECONDS = 15.0


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
    created = _riskmodel("keys", "create", "--caller", "benchmark", "--role", "decide",
                         "--api-keys", str(bench.api_keys), "--json", capture=True)  # fmt: skip
    return str(json.loads(created)["key"])


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


def load_traffic(bench: Bench) -> list[dict[str, Any]]:
    frame = pd.read_parquet(bench.traffic)
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


# -- the server ---------------------------------------------------------------------------------


class Server:
    """``riskmodel serve`` on a fresh copy of the base store, as a child process."""

    def __init__(
        self, bench: Bench, workers: int | None, key: str, extra_env: dict[str, str]
    ) -> None:
        self.bench = bench
        self.workers = workers
        self.key = key
        self.extra_env = extra_env
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.bench.run_db}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.bench.base_db, self.bench.run_db)
        argv = [
            *RISKMODEL, "serve", "--port", str(self.port),
            "--database-url", f"sqlite:///{self.bench.run_db}",
            "--registry", str(self.bench.registry), "--policy", str(self.bench.policy),
            "--api-keys", str(self.bench.api_keys), "--log-level", "warning",
        ]  # fmt: skip
        if self.workers is not None:
            argv += ["--workers", str(self.workers)]
        self.process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **self.extra_env})
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


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


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
    client_cpu: float
    decisions: Counter[str]

    @property
    def ok(self) -> int:
        return self.sent - sum(self.errors.values())

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
        return (
            f"{self.label:<14} {self.rate:>7,.0f}/s  sent {self.sent:>7,}  "
            f"done {self.sent / self.seconds:>7,.0f}/s  p50 {self.percentile(50):>7.2f} ms  "
            f"p99 {self.percentile(99):>7.2f} ms  max {worst:>8.2f} ms  errors {errors}{detail}  "
            f"client lag p99 {lag:.1f} ms, client cpu {self.client_cpu:.0%}"
        )


async def open_loop(
    client: httpx.AsyncClient,
    url: str,
    body: Callable[[int], bytes],
    rate: float,
    seconds: float,
    label: str,
    check: Callable[[int, bytes], str | None] | None = None,
    start_wall: float | None = None,
    max_in_flight: int = 256,
) -> Result:
    """Send ``rate * seconds`` requests, each due at its own time; latency from when due.

    ``start_wall`` (a ``time.time()``) lines up several client processes on one schedule.
    """
    n = max(1, int(rate * seconds))
    latencies = np.zeros(n)
    lag = np.zeros(n)
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    loop = asyncio.get_running_loop()

    in_flight = 0

    async def one(i: int, due: float) -> None:
        nonlocal in_flight
        lag[i] = (loop.time() - due) * 1000
        latencies[i] = np.inf  # stays so if cancelled unanswered
        in_flight += 1
        try:
            answer = await client.post(url, content=body(i))
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] += 1
        else:
            if answer.status_code != 200:
                errors[f"HTTP {answer.status_code}"] += 1
            else:
                problem = check(i, answer.content) if check else None
                if problem:
                    errors[problem] += 1
                else:
                    decisions[_decision(answer.content)] += 1
        finally:
            in_flight -= 1
        latencies[i] = (loop.time() - due) * 1000

    cpu_before = _cpu_seconds()
    start = loop.time() + (0.05 if start_wall is None else max(0.0, start_wall - time.time()))
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif i % 32 == 0:
            await asyncio.sleep(0)  # behind schedule: still let answers in
        if in_flight >= max_in_flight:
            # The server holds this many already: a request more would only queue in the
            # client, whose growing backlog then slows the clock of every later request.
            errors[f"not sent: {max_in_flight} in flight"] += 1
            latencies[i] = np.inf
            continue
        tasks.append(asyncio.create_task(one(i, due)))
    # A server far behind would take minutes to drain; what is still out by then failed.
    _, late = await asyncio.wait(tasks, timeout=DRAIN_SECONDS) if tasks else (set(), set())
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
        errors[f"unanswered {DRAIN_SECONDS:g} s after the last send"] += len(late)
    elapsed = loop.time() - start
    return Result(label, rate, n, elapsed, latencies, lag, errors,
                  (_cpu_seconds() - cpu_before) / elapsed, decisions)  # fmt: skip


def _decision(content: bytes) -> str:
    try:
        return str(json.loads(content).get("decision"))
    except ValueError:
        return "?"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client(key: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(10.0),
    )


class Bodies:
    """Held-out refund requests, each sent under a fresh ``request_id``."""

    def __init__(self, traffic: list[dict[str, Any]], prefix: str) -> None:
        self.traffic = traffic
        self.prefix = prefix

    def __call__(self, i: int) -> bytes:
        row = dict(self.traffic[i % len(self.traffic)])
        row["request_id"] = f"{self.prefix}-{i}"
        return json.dumps(row).encode()


# -- sections -------------------------------------------------------------------------------------


async def fixed_rate(
    server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    url = f"{server.base}/v1/decisions"
    async with _client(server.key, args.connections) as client:
        await open_loop(client, url, Bodies(traffic, "warm"), 100, args.warmup_seconds, "warm-up")
        result = await open_loop(
            client, url, Bodies(traffic, "fixed"), args.rate, args.rate_seconds, "fixed",
            max_in_flight=args.connections,
        )  # fmt: skip
    print(result.line())
    print(f"               decisions: {dict(result.decisions.most_common())}")


async def ramp(server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace) -> None:
    url = f"{server.base}/v1/decisions"
    held = 0.0
    failed = 0
    pool = None
    if args.clients > 1:
        # One Python client process tops out near a core's worth of httpx; past that the
        # schedule slips and the figures measure the client. Spread it, and say so.
        pool = ProcessPoolExecutor(args.clients, mp_context=multiprocessing.get_context("spawn"))
        list(pool.map(_ready, range(args.clients)))
    try:
        async with _client(server.key, args.connections) as client:
            await open_loop(
                client, url, Bodies(traffic, "warm"), 100, args.warmup_seconds, "warm-up"
            )
            for step, rate in enumerate(args.ramp):
                if pool is None:
                    result = await open_loop(
                        client, url, Bodies(traffic, f"ramp{step}"), rate, args.step_seconds,
                        "ramp", max_in_flight=args.connections,
                    )  # fmt: skip
                else:
                    start = time.time() + 0.5
                    shares = [
                        _Share(url, server.key, args.connections, traffic, f"ramp{step}c{k}",
                               rate / args.clients, args.step_seconds, start)
                        for k in range(args.clients)
                    ]  # fmt: skip
                    result = _merge(list(pool.map(_drive_share, shares)), rate)
                print(result.line(), flush=True)
                if result.held():
                    held, failed = rate, 0
                else:
                    # One step can fail on a single stall (a checkpoint, a neighbour's
                    # burst of work); two in a row is the server's limit.
                    failed += 1
                    if failed == 2:
                        break
                await asyncio.sleep(1.0)  # let the last answers drain before the next step
    finally:
        if pool is not None:
            pool.shutdown()
    verdict = f"{held:,.0f} decisions/s" if held else "none of the steps"
    clients = f" ({args.clients} client processes)" if args.clients > 1 else ""
    print(f"highest rate held with p99 < {P99_BUDGET_MS:g} ms and no error{clients}: {verdict}")


@dataclass(frozen=True)
class _Share:
    """One client process's part of a step."""

    url: str
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
        async with _client(share.key, share.connections) as client:
            bodies = Bodies(share.traffic, share.prefix)
            return await open_loop(client, share.url, bodies, share.rate, share.seconds,
                                   "ramp", start_wall=share.start_wall,
                                   max_in_flight=share.connections)  # fmt: skip

    return asyncio.run(drive())


def _merge(parts: list[Result], rate: float) -> Result:
    errors: Counter[str] = Counter()
    decisions: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
        decisions.update(part.decisions)
    return Result(
        parts[0].label,
        rate,
        sum(p.sent for p in parts),
        max(p.seconds for p in parts),
        np.concatenate([p.latencies_ms for p in parts]),
        np.concatenate([p.lag_ms for p in parts]),
        errors,
        sum(p.client_cpu for p in parts),
        decisions,
    )


async def repeated(server: Server, traffic: list[dict[str, Any]], args: argparse.Namespace) -> None:
    url = f"{server.base}/v1/decisions"
    async with _client(server.key, args.connections) as client:
        first_body = Bodies(traffic, "again")(0)
        first = await client.post(url, content=first_body)
        if first.status_code != 200:
            raise SystemExit(f"POST {url}: {first.status_code} {first.text[:500]}")
        stored = _comparable(first.content)

        def same(_: int, content: bytes) -> str | None:
            return None if _comparable(content) == stored else "a different answer"

        result = await open_loop(
            client, url, lambda _: first_body, args.rate, args.repeat_seconds, "same id", same,
            max_in_flight=args.connections,
        )  # fmt: skip
        print(result.line())
        # Simultaneous duplicates of one new request: one decision, the same for all.
        burst_body = Bodies(traffic, "burst")(1)
        answers = await asyncio.gather(
            *(client.post(url, content=burst_body) for _ in range(args.burst))
        )
    statuses = Counter(a.status_code for a in answers)
    distinct = {_comparable(a.content) for a in answers if a.status_code == 200}
    print(
        f"{'burst':<14} {args.burst} simultaneous copies of one new request: statuses "
        f"{dict(statuses)}, {len(distinct)} distinct decision(s)"
    )


def _comparable(content: bytes) -> str:
    answer = json.loads(content)
    # Whether this answer is the first or a replay is the one field allowed to differ.
    answer.pop("replayed", None)
    return json.dumps(answer, sort_keys=True)


# -- main -----------------------------------------------------------------------------------------


def _rates(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench-serve")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holdout-days", type=float, default=14.0)
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
    parser.add_argument(
        "--sections", default="fixed,ramp,repeat", help="which of fixed, ramp, repeat to run"
    )
    args = parser.parse_args()
    # Stopped from outside, still stop the server it started (Server.__exit__).
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))

    bench = Bench(args.dir)
    key = prepare(bench, args.users, args.days, args.seed, args.holdout_days)
    traffic = load_traffic(bench)
    print(
        f"store: {args.users:,} users x {args.days} days (seed {args.seed}) in SQLite, "
        f"{len(traffic):,} held-out refund requests as traffic; "
        f"{args.workers or 'the default number of'} worker(s); "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}"
    )
    sections = {"fixed": fixed_rate, "ramp": ramp, "repeat": repeated}
    for name in args.sections.split(","):
        with Server(bench, args.workers, key, {}) as server:
            rss = server.rss_mb()
            asyncio.run(sections[name](server, traffic, args))
            print(
                f"               server RSS {rss:.0f} MB at start, {server.rss_mb():.0f} MB at end"
            )


if __name__ == "__main__":
    main()
