"""How long the review console's queue page takes with 10,000 open cases.

    python benchmarks/console_queue.py                 # 10,000 open cases, 50 loads a page
    python benchmarks/console_queue.py --cases 50000 --loads 30

Fills a new SQLite store with that many requests awaiting review (2,000 buyers, four
product types, two queues, deadlines from two days ago to two days ahead, 2% of them
open appeals instead), signs a reviewer in, then loads over HTTP (uvicorn in this process,
one connection) the queue's first page, a filtered page, a deep page, a case page and
``/healthz``, the reference: an answer with nothing behind it, measured in the same run.
Prints the median and p95 of each in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import uvicorn
from sqlalchemy import insert

from riskmodel import dataset, store, units
from riskmodel.ingest import ingest_tables
from riskmodel.policy import STARTER_POLICY
from riskmodel.store.schema import appeals, decisions
from serving.app import create_app
from serving.console.accounts import create_account
from serving.settings import Settings

PASSWORD = "benchmark passphrase"
_PRODUCTS = ("card_code", "membership", "game_currency", "service")
_REASONS = {
    "card_code": ("invalid_code", "not_delivered", "duplicate_charge"),
    "membership": ("unused", "partial_use", "other"),
    "game_currency": ("not_delivered", "duplicate_charge"),
    "service": ("not_as_described", "other"),
}
_RULES = (
    ("RULE_REFUND_VELOCITY", "many refund requests in a short time"),
    ("RULE_PRORATED_OVERCLAIM", "fewer days claimed than the platform saw used"),
    ("RULE_REPEAT_REFUND", "an earlier refund on this order"),
)


def fill(url: str, cases: int, *, seed: int = 7, now: datetime | None = None) -> None:
    """Write ``cases`` refund requests awaiting review (2% as open appeals) to ``url``."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    buyers = max(cases // 5, 1)
    users = pd.DataFrame(
        {
            "user_id": [f"u{i:05d}" for i in range(buyers)],
            "registered_at": [(now - timedelta(days=400)).isoformat()] * buyers,
        }
    )
    orders, requests, rows, appealed = [], [], [], []
    for i in range(cases):
        product = rng.choice(_PRODUCTS)
        paid = now - timedelta(days=rng.uniform(3, 60))
        amount = round(rng.uniform(5, 600), 2)
        user = f"u{rng.randrange(buyers):05d}"
        orders.append(
            {
                "order_id": f"o{i:06d}",
                "user_id": user,
                "product_type": product,
                "amount": f"{amount:.2f}",
                "paid_at": paid.isoformat(),
                "currency": "CNY",
                "seller_id": f"s{rng.randrange(40)}",
                "payment_method": rng.choice(("alipay", "wechat_pay", "bank_card")),
                "device_id": f"d{rng.randrange(buyers)}",
                "ip": f"10.0.{rng.randrange(200)}.{rng.randrange(250)}",
                "delivered_at": (paid + timedelta(seconds=5)).isoformat(),
                "service_days": "30" if product == "membership" else None,
            }
        )
        asked = round(amount * rng.uniform(0.3, 1.0), 2)
        requested = paid + timedelta(days=rng.uniform(0.5, 2))
        requests.append(
            {
                "request_id": f"req{i:06d}",
                "order_id": f"o{i:06d}",
                "user_id": user,
                "requested_at": requested.isoformat(),
                "amount": f"{asked:.2f}",
                "reason": rng.choice(_REASONS[product]),
                "days_used_claimed": str(rng.randrange(5)) if product == "membership" else None,
                "channel": rng.choice(("app", "web")),
                "device_id": orders[-1]["device_id"],
                "ip": orders[-1]["ip"],
            }
        )
        queue = rng.choice(("ordinary", "ordinary", "disputes"))
        due = now + timedelta(hours=rng.uniform(-48, 48))
        code, message = rng.choice(_RULES)
        reasons = [
            {"code": code, "kind": "rule", "message": message},
            {
                "code": "MODEL_SCORE",
                "kind": "model",
                "message": "the model's score is in the review band",
                "feature": "user_refunds_90d",
                "value": rng.randrange(1, 9),
                "contribution": round(rng.uniform(0.05, 0.4), 3),
            },
        ]
        rows.append(
            {
                "request_id": f"req{i:06d}",
                "decision": "review",
                "score": round(rng.uniform(0.2, 0.8), 3),
                "approved_amount": units.cents(asked),
                "reasons": json.dumps(reasons),
                "review_queue": queue,
                "review_due_at": units.micros(due),
                "model_version": "benchmark",
                "policy_version": "starter-3",
                "policy_hash": None,
                "feature_version": "benchmark",
                "decided_at": units.micros(due - timedelta(hours=24)),
                "request_hash": f"h{i}",
                "shadow": None,
            }
        )
        if rng.random() < 0.02:
            rows[-1]["decision"] = "block"
            appealed.append(
                {
                    "request_id": f"req{i:06d}",
                    "filed_at": units.micros(due - timedelta(hours=48)),
                    "filed_by": user,
                    "channel": "buyer",
                    "statement": "I never received a working code.",
                    "queue": "disputes",
                    "due_at": units.micros(due),
                    "against_version": 1,
                    "first_reviewer": None,
                    "decided_version": None,
                }
            )
    tables = {
        "users": users,
        "orders": pd.DataFrame(orders),
        "refund_requests": pd.DataFrame(requests),
    }
    engine = store.open_store(url)
    try:
        ingest_tables(engine, {k: dataset.normalise(k, v) for k, v in tables.items()})
        with engine.begin() as conn:
            conn.execute(insert(decisions), rows)
            if appealed:
                conn.execute(insert(appeals), appealed)
            store.analyze(conn, ["decisions", "appeals", "refund_requests", "orders"])
    finally:
        engine.dispose()


@contextmanager
def serving(url: str, folder: Path) -> Iterator[str]:
    """The service over ``url`` behind uvicorn on a free local port (no model needed)."""
    settings = Settings(
        database_url=url,
        registry=folder / "registry",
        policy=STARTER_POLICY,
        api_keys=folder / "api_keys.json",
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="error"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def signed_in(client: httpx.Client, name: str) -> None:
    form = client.get("/console/login").text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', form)
    assert token is not None
    answer = client.post(
        "/console/login", data={"name": name, "password": PASSWORD, "csrf": token.group(1)}
    )
    assert answer.status_code == 303, answer.text


def _times(client: httpx.Client, path: str, loads: int) -> tuple[float, float]:
    taken = []
    for _ in range(loads):
        started = time.perf_counter()
        answer = client.get(path)
        taken.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    taken.sort()
    return statistics.median(taken), taken[max(int(len(taken) * 0.95) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=50)
    args = parser.parse_args()
    # The service starts without a model (the console needs none); it says so in its log.
    logging.getLogger("serving").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="console-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'store.db'}"
        started = time.perf_counter()
        fill(url, args.cases)
        engine = store.open_store(url)
        create_account(engine, "reviewer", "reviewer", PASSWORD)
        engine.dispose()
        print(f"{args.cases:,} open cases written in {time.perf_counter() - started:.1f} s")
        with serving(url, Path(folder)) as base, httpx.Client(base_url=base, timeout=30) as client:
            signed_in(client, "reviewer")
            pages = {
                "queue, first page": "/console/queue",
                "queue, filtered": "/console/queue?product_type=membership&band=medium",
                "queue, page 100": "/console/queue?page=100",
                "a case": "/console/cases/req000042",
                "/healthz (reference)": "/healthz",
            }
            for path in pages.values():  # warm: the first load plans the statements
                client.get(path).raise_for_status()
            print(f"{'page':<22} {'median ms':>10} {'p95 ms':>8}   ({args.loads} loads each)")
            for name, path in pages.items():
                median, p95 = _times(client, path, args.loads)
                print(f"{name:<22} {median:>10.1f} {p95:>8.1f}")


if __name__ == "__main__":
    main()
