"""The outcome feed's delay: from the moment a verdict's (or an automatic decision's) HTTP
answer arrives to the moment a consumer long-polling ``GET /v1/outcomes`` sees its
outcome, and to the moment a registered webhook receiver gets it; beside the round trip
of ``/healthz`` in the same run.

    python benchmarks/feed_delay.py                  # 150 verdicts and 150 decisions
    python benchmarks/feed_delay.py --verdicts 50    # quicker

Set-up as ``benchmarks/client_overhead.py`` (reused from ``data/bench-client/``: the
sample data in SQLite, a trained champion, the starter policy), plus one key with the
decide, review and admin roles. Each run serves a fresh copy of that store with
``riskmodel serve`` (one worker) and, before measuring, decides second refunds of orders
already refunded once until ``--verdicts`` of them are under review.

Then, in one process: a consumer thread long-polls the feed (``Client.outcomes`` with
``wait=30``, as ``follow`` does) and notes when each outcome arrives; a local HTTP server,
registered with ``POST /v1/webhooks``, notes when each delivery arrives (after checking
its signature with the client's ``verify_webhook``); a producer thread gives the verdicts
and makes new decisions one at a time, alternately, at random intervals (``--interval``
on average, so that the moments fall anywhere in the service's polling cycle), noting
when each answer arrived (and how long each call took), and times a ``/healthz`` after
each. Every moment is
``time.perf_counter`` in this process. Delays below zero: the consumer had the outcome
before the producer had its answer.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
from riskmodel_client import (
    SIGNATURE_HEADER,
    Client,
    ServiceUnavailable,
    parse_outcome,
    verify_webhook,
)
from riskmodel_client.answers import encode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from client_overhead import _FileStore, prepare  # noqa: E402
from serve import Bench, Server, _step  # noqa: E402


def feed_key(bench: Bench) -> str:
    """A key with the decide, review and admin roles, made once."""
    from serving.auth import Role, create_key

    saved = bench.root / "benchmark-feed.key"
    if not saved.is_file():
        key = create_key(bench.api_keys, "feed-benchmark", [Role.DECIDE, Role.REVIEW, Role.ADMIN])
        saved.write_text(key + "\n")
        saved.chmod(0o600)
    return saved.read_text().strip()


@dataclass
class Arrivals:
    """When each outcome (by ``event_id``) was seen, first time only."""

    at: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    refused: int = 0

    def note(self, event_id: str, moment: float) -> None:
        with self.lock:
            self.at.setdefault(event_id, moment)


def receiver(secret: list[str], arrivals: Arrivals) -> ThreadingHTTPServer:
    """A webhook receiver on a free port: checks, reads and notes each delivery."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            moment = time.perf_counter()
            ok = verify_webhook(secret[0], body, self.headers.get(SIGNATURE_HEADER, ""))
            if ok:
                arrivals.note(parse_outcome(body).event_id, moment)
            else:
                arrivals.refused += 1
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def refunds(tag: str, orders: slice, count: int) -> list[dict[str, Any]]:
    """``count`` new refund requests on the sample's non-membership ``orders`` (a slice,
    newest last), in turn, dated two hours after each order was paid."""
    table = pd.read_parquet(ROOT / "data" / "sample" / "orders.parquet")
    rows = table[table["product_type"] != "membership"].iloc[orders].to_dict("records")
    return [
        {
            "request_id": f"feed-{tag}-{i}",
            "order_id": order["order_id"],
            "user_id": order["user_id"],
            "requested_at": (order["paid_at"] + pd.Timedelta(hours=2)).isoformat(),
            "amount": f"{order['amount']:.2f}",
            "reason": "not_delivered",
            "device_id": order["device_id"],
            "ip": order["ip"],
            "channel": "app",
        }
        for i, order in ((i, rows[i % len(rows)]) for i in range(count))
    ]


SETUP_ORDERS = slice(-500, None)  # refunded twice before measuring: the second reviewed
FRESH_ORDERS = slice(-3000, -500)  # refunded once while measuring: decided at once, mostly


def under_review(http: httpx.Client, headers: Mapping[str, str], count: int) -> list[str]:
    """Request ids of ``count`` decisions under review: second refunds of orders refunded
    once already (the starter policy's repeat-refund rule), decided until there are
    enough."""
    found: list[str] = []
    for attempt in range(20):
        for request in refunds(f"setup{attempt}", SETUP_ORDERS, 500):
            answer = http.post("/v1/decisions", content=encode(request), headers=headers)
            answer.raise_for_status()
            if answer.json()["decision"] == "review":
                found.append(request["request_id"])
                if len(found) == count:
                    return found
    raise SystemExit(f"only {len(found)} decisions went to review")


def end_of_feed(risk: Client) -> int:
    after = 0
    while True:
        page = risk.outcomes(after=after, limit=1000)
        if not page.outcomes:
            return after
        after = page.last


def consume(risk: Client, after: int, arrivals: Arrivals, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            page = risk.outcomes(after=after, limit=1000, wait=1)
        except ServiceUnavailable:
            continue
        moment = time.perf_counter()
        for outcome in page.outcomes:
            arrivals.note(outcome.event_id, moment)
        after = page.last


@dataclass
class Produced:
    verdicts: dict[str, float] = field(default_factory=dict)  # event_id: answer arrived
    decisions: dict[str, float] = field(default_factory=dict)
    reviewed: int = 0  # new decisions that went to review: no outcome to time
    healthz: list[float] = field(default_factory=list)
    round_trips: dict[str, list[float]] = field(
        default_factory=lambda: {"verdict": [], "decision": []}
    )


def produce(
    http: httpx.Client,
    headers: Mapping[str, str],
    reviews: list[str],
    interval: float,
    seed: int,
) -> Produced:
    produced = Produced()
    fresh = refunds("fresh", FRESH_ORDERS, len(reviews))
    pace = random.Random(seed)
    for i, request_id in enumerate(reviews):
        verdict = (
            {"decision": "approve", "approved_amount": None, "is_abuse": False, "note": None}
            if i % 2
            else {"decision": "refuse", "approved_amount": None, "is_abuse": True, "note": None}
        )
        started = time.perf_counter()
        answer = http.post(f"/v1/reviews/{request_id}", json=verdict, headers=headers)
        moment = time.perf_counter()
        produced.round_trips["verdict"].append(moment - started)
        answer.raise_for_status()
        produced.verdicts[answer.json()["event_id"]] = moment
        time.sleep(pace.uniform(0, 2 * interval))

        started = time.perf_counter()
        answer = http.post("/v1/decisions", content=encode(fresh[i]), headers=headers)
        moment = time.perf_counter()
        produced.round_trips["decision"].append(moment - started)
        answer.raise_for_status()
        if answer.json()["decision"] in ("approve", "block"):
            produced.decisions[f"{fresh[i]['request_id']}:1"] = moment
        else:
            produced.reviewed += 1

        started = time.perf_counter()
        http.get("/healthz").raise_for_status()
        produced.healthz.append(time.perf_counter() - started)
        time.sleep(pace.uniform(0, 2 * interval))
    return produced


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, answered: Mapping[str, float], seen: Arrivals) -> None:
    delays = [seen.at[e] - t for e, t in answered.items() if e in seen.at]
    missing = len(answered) - len(delays)
    if not delays:
        print(f"{name:<34} none seen ({missing} missing)")
        return
    early = sum(1 for d in delays if d < 0)
    print(
        f"{name:<34} {len(delays):>4}  p50 {_p(delays, 0.5) * 1e3:7.1f} ms  "
        f"p95 {_p(delays, 0.95) * 1e3:7.1f} ms  max {max(delays) * 1e3:7.1f} ms"
        f"  (min {min(delays) * 1e3:6.1f} ms, {early} before the answer, {missing} missing)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench-client")
    parser.add_argument("--verdicts", type=int, default=150, help="and as many new decisions")
    parser.add_argument("--interval", type=float, default=0.1, help="mean seconds between")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    bench = Bench(args.dir)
    decide_key = prepare(bench)
    key = feed_key(bench)
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    store = _FileStore(bench.base_db, bench.run_db)
    with Server(bench, store, workers=1, key=decide_key) as server:  # type: ignore[arg-type]
        http = httpx.Client(base_url=server.base, timeout=30)
        with _step(f"put {args.verdicts} decisions under review"):
            reviews = under_review(http, headers, args.verdicts)
        risk = Client(server.base, key, timeout=5, budget=10)
        after = end_of_feed(risk)

        fed, hooked = Arrivals(), Arrivals()
        secret: list[str] = []
        hook_server = receiver(secret, hooked)
        url = f"http://127.0.0.1:{hook_server.server_address[1]}/hook"
        registered = http.post("/v1/webhooks", json={"url": url, "after": after}, headers=headers)
        registered.raise_for_status()
        secret.append(registered.json()["secret"])

        stop = threading.Event()
        consumer = threading.Thread(target=consume, args=(risk, after, fed, stop), daemon=True)
        consumer.start()
        time.sleep(0.5)  # the consumer is in its long poll
        print(
            f"server {server.base}, one worker, SQLite; {len(reviews)} verdicts and as many "
            f"new decisions, about {args.interval * 1e3:.0f} ms apart"
        )
        produced = produce(http, headers, reviews, args.interval, args.seed)
        expected = set(produced.verdicts) | set(produced.decisions)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not expected <= (set(fed.at) & set(hooked.at)):
            time.sleep(0.05)
        stop.set()
        consumer.join(timeout=5)
        hook_server.shutdown()
        http.close()
        risk.close()

    print(f"new decisions under review (no outcome to time): {produced.reviewed}")
    line("verdict -> GET /v1/outcomes", produced.verdicts, fed)
    line("decision -> GET /v1/outcomes", produced.decisions, fed)
    line("verdict -> webhook", produced.verdicts, hooked)
    line("decision -> webhook", produced.decisions, hooked)
    for name, took in (
        ("/healthz round trip (reference)", produced.healthz),
        ("verdict round trip", produced.round_trips["verdict"]),
        ("decision round trip", produced.round_trips["decision"]),
    ):
        print(
            f"{name:<34} {len(took):>4}  p50 {_p(took, 0.5) * 1e3:7.1f} ms  "
            f"p95 {_p(took, 0.95) * 1e3:7.1f} ms  max {max(took) * 1e3:7.1f} ms"
        )
    if hooked.refused:
        print(f"webhook deliveries refused by verify_webhook: {hooked.refused}")


if __name__ == "__main__":
    main()
