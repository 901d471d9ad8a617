"""Feature engines: offline throughput and memory, online latency per request.

    python benchmarks/feature_engines.py offline [--orders 10000000 --requests 1000000]
    python benchmarks/feature_engines.py online  [--users 100000 --days 180] [--postgres-url URL]

Offline runs on a synthetic history with the cardinalities of a large marketplace
(10 orders per user, shared public IPs, a few hundred sellers); it prints seconds, rows/s
and the peak resident memory. Online simulates a marketplace, loads it into SQLite (and
PostgreSQL unless --skip-postgres), and times ``online_features`` for random requests.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, select

from features import History, build_features, online_features
from riskmodel import store
from riskmodel.ingest import ingest
from riskmodel.simulator import SimulationConfig, simulate, write_simulation
from riskmodel.units import DAY, HOUR

START = 1_767_225_600_000_000


def _ids(prefix: str, numbers: np.ndarray) -> pd.Series:
    # Arrow-backed strings, built without a Python call per row: compact and quick.
    return prefix + pd.Series(numbers).astype("str")


def synthetic_history(orders: int, requests: int, seed: int = 0) -> History:
    rng = np.random.default_rng(seed)
    users = max(orders // 10, 1)
    user_of_order = rng.integers(0, users, orders)
    paid = START + rng.integers(0, 180 * DAY, orders)
    product = rng.choice(["card_code", "membership", "game_currency", "service"], orders)
    order_frame = pd.DataFrame(
        {
            "order_id": _ids("o", np.arange(orders)),
            "user_id": _ids("u", user_of_order),
            "product_type": product,
            "amount": rng.integers(100, 60_000, orders),
            "paid_at": paid,
            "currency": None,
            "seller_id": _ids("s", rng.integers(0, 300, orders)),
            "product_id": None,
            "payment_method": rng.choice(["alipay", "wechat_pay", "bank_card"], orders),
            "payment_account": _ids("pa", user_of_order * 2 + rng.integers(0, 2, orders)),
            "device_id": _ids("d", user_of_order + rng.integers(0, 2, orders)),
            # One order in ten from a pool of 500 public IPs shared by everyone.
            "ip": _ids(
                "ip",
                np.where(
                    rng.random(orders) < 0.1, rng.integers(0, 500, orders), user_of_order + 500
                ),
            ),
            "delivered_at": paid + 60_000_000,
            "redeemed_at": np.where(product == "card_code", paid + HOUR, None),
            "service_days": np.where(product == "membership", 30, None),
            "extra": None,
        }
    )
    chosen = rng.choice(orders, requests, replace=False)
    request_frame = pd.DataFrame(
        {
            "request_id": _ids("r", np.arange(requests)),
            "order_id": order_frame["order_id"].iloc[chosen].reset_index(drop=True),
            "user_id": order_frame["user_id"].iloc[chosen].reset_index(drop=True),
            "requested_at": paid[chosen] + rng.integers(0, 20 * DAY, requests),
            "amount": order_frame["amount"].iloc[chosen].reset_index(drop=True),
            "reason": rng.choice(["not_delivered", "invalid_code", "unused", "other"], requests),
            "days_used_claimed": None,
            "device_id": order_frame["device_id"].iloc[chosen].reset_index(drop=True),
            "ip": order_frame["ip"].iloc[chosen].reset_index(drop=True),
            "channel": "app",
            "extra": None,
        }
    )
    labelled = rng.choice(requests, requests // 5, replace=False)
    label_frame = pd.DataFrame(
        {
            "request_id": request_frame["request_id"].iloc[labelled].reset_index(drop=True),
            "is_abuse": rng.random(len(labelled)) < 0.2,
            "labeled_at": request_frame["requested_at"].iloc[labelled].reset_index(drop=True)
            + rng.integers(DAY, 40 * DAY, len(labelled)),
            "source": "review",
            "extra": None,
        }
    )
    memberships = np.flatnonzero(product == "membership")
    used = rng.integers(0, 10, len(memberships))
    usage_order = np.repeat(memberships, used)
    offsets = np.arange(used.sum()) - np.repeat(np.cumsum(used) - used, used)
    usage_frame = pd.DataFrame(
        {
            "order_id": order_frame["order_id"].iloc[usage_order].reset_index(drop=True),
            "used_at": paid[usage_order] + offsets * DAY + HOUR,
            "extra": None,
        }
    )
    user_frame = pd.DataFrame(
        {
            "user_id": _ids("u", np.arange(users)),
            "registered_at": START - rng.integers(0, 400 * DAY, users),
            "phone_verified": rng.random(users) < 0.9,
            "extra": None,
        }
    )
    return History.empty().replace(
        users=user_frame,
        orders=order_frame,
        usage=usage_frame,
        refund_requests=request_frame,
        labels=label_frame,
    )


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def offline(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    history = synthetic_history(args.orders, args.requests)
    print(
        f"synthetic history: {len(history.orders):,} orders, "
        f"{len(history.refund_requests):,} requests, {len(history.usage):,} usage days, "
        f"{len(history.labels):,} labels ({time.perf_counter() - started:.1f} s to make)"
    )
    started, cpu = time.perf_counter(), time.process_time()
    table = build_features(history)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # CPU seconds too: on a shared machine they move less than the wall clock does.
    print(
        f"offline: {table.shape[0]:,} requests x {table.shape[1]} features in {seconds:.1f} s "
        f"({cpu:.1f} s CPU, {table.shape[0] / seconds:,.0f} requests/s); "
        f"peak RSS {_peak_rss_gb():.2f} GB"
    )


def _latencies(url: str, requests: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request, in milliseconds: ``online_features``, the floor beside it (the
    request's order read by its key, the least a decision asks of the store), alternated
    request by request so that both see the same machine, and the CPU ``online_features``
    took in this process (on PostgreSQL, what the driver and the engine cost a server's
    worker beside the database's own work)."""
    engine = store.open_store(url)
    orders = store.EVENT_TABLES["orders"]
    floor_statement = select(orders).where(orders.c.order_id == bindparam("order_id"))
    timings, floor, cpu = [], [], []
    with engine.connect() as conn:
        for request in requests.to_dict("records")[:50]:  # warm caches and statements
            online_features(conn, request)
            conn.execute(floor_statement, {"order_id": request["order_id"]}).all()
        for request in requests.to_dict("records"):
            started = time.perf_counter()
            conn.execute(floor_statement, {"order_id": request["order_id"]}).all()
            floor.append(time.perf_counter() - started)
            started, thread = time.perf_counter(), time.thread_time()
            online_features(conn, request)
            timings.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - thread)
    engine.dispose()
    return np.array(timings) * 1000, np.array(floor) * 1000, np.array(cpu) * 1000


def online(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "dataset"
        write_simulation(
            simulate(SimulationConfig(users=args.users, days=args.days, seed=3)), directory
        )
        targets = [("SQLite", f"sqlite:///{Path(tmp) / 'online.db'}")]
        if not args.skip_postgres:
            targets.append(("PostgreSQL", args.postgres_url))
        requests = pd.read_parquet(directory / "refund_requests.parquet")
        sample = requests.sample(n=min(args.samples, len(requests)), random_state=0)
        store_form = History.from_tables({}).refund_requests  # column order
        from riskmodel.dataset import normalise

        sample = normalise("refund_requests", sample.reset_index(drop=True))[store_form.columns]
        for name, url in targets:
            if name == "PostgreSQL":
                store.create_database(url)
                engine = store.open_store(url)
                store.drop_everything(engine)
                engine.dispose()
            ingest(directory, url)
            ms, floor, cpu = _latencies(url, sample)
            print(
                f"online {name:<10}: {len(ms):,} requests  p50 {np.percentile(ms, 50):.3f} ms  "
                f"p99 {np.percentile(ms, 99):.3f} ms  max {ms.max():.3f} ms; floor (the "
                f"order by its key) p50 {np.percentile(floor, 50):.3f} ms, p99 "
                f"{np.percentile(floor, 99):.3f} ms: features / floor at p50 "
                f"{np.percentile(ms, 50) / np.percentile(floor, 50):.1f}x; this process's "
                f"CPU p50 {np.percentile(cpu, 50):.3f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    off = modes.add_parser("offline")
    off.add_argument("--orders", type=int, default=10_000_000)
    off.add_argument("--requests", type=int, default=1_000_000)
    off.set_defaults(run=offline)
    on = modes.add_parser("online")
    on.add_argument("--users", type=int, default=100_000)
    on.add_argument("--days", type=int, default=180)
    on.add_argument("--samples", type=int, default=2_000)
    on.add_argument(
        "--postgres-url", default="postgresql://postgres@127.0.0.1:5432/riskmodel_bench"
    )
    on.add_argument("--skip-postgres", action="store_true")
    on.set_defaults(run=online)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
