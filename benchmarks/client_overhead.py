"""The refund pipeline's client's own cost per call: ``riskmodel_client.Client.decide``
beside a bare ``httpx.Client.post`` of the same body (its JSON parsed), against one real
server, in the same run.

    python benchmarks/client_overhead.py                 # 2,000 calls each way, per section
    python benchmarks/client_overhead.py --calls 500     # quicker
    python benchmarks/client_overhead.py --sections flood   # back-pressure under a flood

Set-up, once, under ``data/bench-client/`` (reused afterwards): the committed sample data
(``data/sample``, 5,000 users x 120 days) ingested into SQLite, a model trained on it and
promoted, the starter policy, an API key. Each run serves a fresh copy of that store with
``riskmodel serve`` (one worker).

Two sections, each with its own requests: ``fresh``, every call a new decision (a new
request_id on one of 500 orders of the sample: features, model, policy and a durable
write), and ``replayed``, the same requests sent again (the stored decision, looked up).
The two ways alternate in blocks of 50 calls, in turn first, so that the machine's drift
falls on both alike. Printed per way: the wall time of a call (p50, p99) and the client
process's own CPU per call; then the client's overhead: the difference and the ratio.
The ratios are the figures to read (the machine's speed varies from day to day); the
replayed section shows the overhead against the cheapest answer the service gives.

``flood`` (only when asked for): two callers, ``--flood-connections`` connections each,
send new decisions one after another for ``--flood-seconds`` (waiting what ``Retry-After``
says after a refusal, as the client does), against a server with each of ``--limits``
as ``RISKMODEL_MAX_IN_FLIGHT`` (the default 64, 16, and one out of reach); printed per
status: calls, p50 and p99 seconds (0: the connection failed). Then four
``AsyncClient.decide`` loops beside the flood: how many got the service's decision, how
many the fallback, and the slowest call against the budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from riskmodel_client import Client, Decision
from riskmodel_client.answers import encode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from serve import Bench, Server, _riskmodel, _step  # noqa: E402

BLOCK = 50


@dataclass(frozen=True)
class _FileStore:
    """A fresh copy of the base store for each server (``serve.Store``'s one method)."""

    base: Path
    run: Path
    name: str = "sqlite"

    def fresh(self) -> str:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.run}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(self.base, self.run)
        return f"sqlite:///{self.run}"


def prepare(bench: Bench) -> str:
    """Build what is missing; returns an API key with the decide role."""
    from riskmodel.policy import STARTER_POLICY
    from serving.auth import Role, create_key

    bench.root.mkdir(parents=True, exist_ok=True)
    if not bench.base_db.is_file():
        with _step("ingest data/sample into SQLite"):
            partial = bench.base_db.with_name("base.partial.db")
            partial.unlink(missing_ok=True)
            _riskmodel("ingest", str(ROOT / "data" / "sample"), "--database-url",
                       f"sqlite:///{partial}")  # fmt: skip
            partial.replace(bench.base_db)
    if not (bench.registry / "aliases.json").is_file():
        with _step("train and promote a model"):
            _riskmodel("train", "--database-url", f"sqlite:///{bench.base_db}",
                       "--registry", str(bench.registry), "--promote", "champion")  # fmt: skip
    if not bench.policy.is_file():
        shutil.copyfile(STARTER_POLICY, bench.policy)
    saved = bench.root / "benchmark.key"
    if saved.is_file() and bench.api_keys.is_file():
        return saved.read_text().strip()
    key = create_key(bench.api_keys, "client-benchmark", [Role.DECIDE])
    saved.write_text(key + "\n")
    saved.chmod(0o600)
    return key


def requests(section: str, count: int) -> list[dict[str, Any]]:
    """``count`` new refund requests on 500 orders of the sample, dated after them."""
    orders = pd.read_parquet(ROOT / "data" / "sample" / "orders.parquet")
    orders = orders[orders["product_type"] != "membership"].tail(500)
    rows = orders.to_dict("records")
    made = []
    for i in range(count):
        order = rows[i % len(rows)]
        made.append(
            {
                "request_id": f"overhead-{section}-{i}",
                "order_id": order["order_id"],
                "user_id": order["user_id"],
                "requested_at": (order["paid_at"] + pd.Timedelta(hours=2)).isoformat(),
                "amount": f"{order['amount']:.2f}",
                "reason": "not_delivered",
                "device_id": order["device_id"],
                "ip": order["ip"],
                "channel": "app",
            }
        )
    return made


@dataclass
class Way:
    name: str
    call: Callable[[Mapping[str, Any]], Any]
    sent: list[dict[str, Any]]
    seconds: list[float]
    cpu: list[float]

    def run(self, block: list[dict[str, Any]]) -> None:
        for request in block:
            wall, cpu = time.perf_counter(), time.process_time()
            self.call(request)
            self.cpu.append(time.process_time() - cpu)
            self.seconds.append(time.perf_counter() - wall)


def measure(ways: list[Way]) -> None:
    """Each way's requests, a block at a time, each way first in turn; the first block
    warms the connection and the paths and is not counted."""
    for way in ways:
        way.run(way.sent[:BLOCK])
        way.seconds.clear()
        way.cpu.clear()
    for start in range(BLOCK, len(ways[0].sent), BLOCK):
        for way in ways if (start // BLOCK) % 2 else ways[::-1]:
            way.run(way.sent[start : start + BLOCK])


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(section: str, client: Way, bare: Way) -> None:
    for way in (client, bare):
        print(
            f"{section:<9} {way.name:<22} {len(way.seconds):>5} calls  "
            f"p50 {_p(way.seconds, 0.5) * 1e3:6.2f} ms  p99 {_p(way.seconds, 0.99) * 1e3:6.2f} ms"
            f"  client cpu {statistics.fmean(way.cpu) * 1e6:6.0f} us/call"
        )
    wall = _p(client.seconds, 0.5) - _p(bare.seconds, 0.5)
    cpu = statistics.fmean(client.cpu) - statistics.fmean(bare.cpu)
    ratio_wall = _p(client.seconds, 0.5) / _p(bare.seconds, 0.5)
    ratio_cpu = statistics.fmean(client.cpu) / statistics.fmean(bare.cpu)
    print(
        f"{section:<9} {'overhead':<22} p50 {wall * 1e6:+6.0f} us ({ratio_wall:.3f} x bare), "
        f"client cpu {cpu * 1e6:+6.0f} us/call ({ratio_cpu:.3f} x bare)"
    )


def in_process(sample: Mapping[str, Any], answer: bytes, repeat: int = 20_000) -> None:
    """Where the overhead goes, without a network: encoding and reading one decision."""
    started = time.perf_counter()
    for _ in range(repeat):
        json.loads(answer)
    bare = (time.perf_counter() - started) / repeat
    started = time.perf_counter()
    for _ in range(repeat):
        encode(sample)
        Decision.from_json(json.loads(answer))
    typed = (time.perf_counter() - started) / repeat
    print(
        f"in process: json.loads of an answer {bare * 1e6:.1f} us; encode the request and "
        f"read a typed Decision {typed * 1e6:.1f} us"
    )


def flood(base: str, keys: list[str], seconds: float, connections: int, budget: float) -> None:
    """Raw decisions from two callers for ``seconds``, and clients beside them."""
    import asyncio

    from riskmodel_client import AsyncClient

    order_rows = requests("flood-template", 500)
    results: list[tuple[int, float]] = []
    counter = iter(range(10**9))

    def fresh(tag: str) -> dict[str, Any]:
        i = next(counter)
        return order_rows[i % len(order_rows)] | {"request_id": f"{tag}-{time.time_ns()}-{i}"}

    async def caller(client: httpx.AsyncClient, key: str, until: float) -> None:
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                response = await client.post(
                    "/v1/decisions", content=encode(fresh("flood")), headers=headers
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            results.append((status, time.monotonic() - started))
            if status in (429, 503):
                await asyncio.sleep(float(response.headers.get("retry-after", 1)))

    async def patient(risk: Any, until: float, took: list[tuple[bool, float]]) -> None:
        while time.monotonic() < until:
            started = time.monotonic()
            decision = await risk.decide(fresh("patient"))
            took.append((decision.is_fallback, time.monotonic() - started))

    async def run() -> list[tuple[bool, float]]:
        limits = httpx.Limits(max_connections=2 * connections)
        took: list[tuple[bool, float]] = []
        async with (
            httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client,
            AsyncClient(base, keys[0], timeout=budget, budget=budget) as risk,
        ):
            until = time.monotonic() + seconds
            await asyncio.gather(
                *(caller(client, key, until) for key in keys for _ in range(connections)),
                *(patient(risk, until, took) for _ in range(4)),
            )
        return took

    took = asyncio.run(run())
    for status in sorted({s for s, _ in results}):
        times = [t for s, t in results if s == status]
        print(
            f"  status {status}: {len(times):>6} calls, p50 {_p(times, 0.5):.3f} s, "
            f"p99 {_p(times, 0.99):.3f} s"
        )
    served = [t for fell, t in took if not fell]
    fallen = [t for fell, t in took if fell]
    print(
        f"  AsyncClient.decide beside it (budget {budget:g} s): {len(served)} decided, "
        f"{len(fallen)} fallbacks, slowest {max(t for _, t in took):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench-client")
    parser.add_argument("--calls", type=int, default=2000, help="calls per way and section")
    parser.add_argument("--sections", default="overhead", help="overhead, flood, or both")
    parser.add_argument("--flood-seconds", type=float, default=10.0)
    parser.add_argument(
        "--limits", default="64,16,1000000", help="RISKMODEL_MAX_IN_FLIGHT of each flood"
    )
    parser.add_argument("--flood-connections", type=int, default=64, help="per caller")
    parser.add_argument("--budget", type=float, default=3.0, help="the clients' budget, flood")
    args = parser.parse_args()
    sections = args.sections.split(",")
    bench = Bench(args.dir)
    key = prepare(bench)
    store = _FileStore(bench.base_db, bench.run_db)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    if "flood" in sections:
        import os

        from serving.auth import Role, create_key

        saved = bench.root / "benchmark-flood.key"
        if not saved.is_file():
            saved.write_text(create_key(bench.api_keys, "client-flood", [Role.DECIDE]) + "\n")
            saved.chmod(0o600)
        other = saved.read_text().strip()
        for limit in args.limits.split(","):
            os.environ["RISKMODEL_MAX_IN_FLIGHT"] = limit
            with Server(bench, store, workers=1, key=key) as server:  # type: ignore[arg-type]
                print(
                    f"flood, RISKMODEL_MAX_IN_FLIGHT={limit}: two callers x "
                    f"{args.flood_connections} connections, {args.flood_seconds:g} s"
                )
                flood(
                    server.base,
                    [key, other],
                    args.flood_seconds,
                    args.flood_connections,
                    args.budget,
                )
        del os.environ["RISKMODEL_MAX_IN_FLIGHT"]
    if "overhead" not in sections:
        return
    with Server(bench, store, workers=1, key=key) as server:  # type: ignore[arg-type]
        risk = Client(server.base, key, timeout=5, budget=10)
        bare_http = httpx.Client(base_url=server.base, timeout=5)

        def bare(request: Mapping[str, Any]) -> Any:
            response = bare_http.post("/v1/decisions", content=encode(request), headers=headers)
            response.raise_for_status()
            return response.json()

        print(f"server {server.base}, one worker; {args.calls} calls per way and section")
        # The two ways decide requests of their own; the replayed section sends them again.
        mine = requests("client", args.calls + BLOCK)
        theirs = requests("bare", args.calls + BLOCK)
        for section in ("fresh", "replayed"):
            ways = [Way("Client.decide", risk.decide, mine, [], []),
                    Way("bare httpx post+json", bare, theirs, [], [])]  # fmt: skip
            measure(ways)
            report(section, *ways)
        sample = requests("sample", 1)[0]
        answer = bare_http.post("/v1/decisions", content=encode(sample), headers=headers)
        in_process(sample, answer.content)
        risk.close()
        bare_http.close()


if __name__ == "__main__":
    main()
