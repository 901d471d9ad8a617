"""Point-in-time features on a local Dask cluster at scale, beside the single machine.

    python benchmarks/dask_scale.py [--sizes 10k/100k,1M/10M,3M/30M] [--partitions N]
    python benchmarks/dask_scale.py --sizes 10k/100k          # smoke: under a minute

For each size (requests/orders) it writes, once, a dataset directory of partitioned
Parquet files under ``data/bench-dask/`` (a folder per table, made chunk by chunk with the
distributions of ``benchmarks/feature_engines.py``'s synthetic history: 10 orders per
user, 500 public IPs shared by everyone, 300 sellers), then builds the feature table as
``riskmodel features build --dask`` does (``Tables.read``, ``build_on_dask``,
``write_parquet`` with the ``repeated_keys`` checks) on a local cluster of 2
single-threaded worker processes limited to 6 GB each, and prints the wall time, each
worker's peak resident memory and the largest entities' numbers of events.

The single-machine reference (``build_features`` on the same tables held in memory, as
``feature_engines.py offline`` measures it: the build's time, the process's peak RSS) runs
in a subprocess, watched: it is killed if it passes ``--single-max-gb``. A size whose
orders exceed ``--single-max-orders`` is not run on one machine; its figures are scaled
linearly from the largest size measured and printed as an estimate.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import pandas as pd
import psutil  # type: ignore[import-untyped]  # no stubs installed
import pyarrow.parquet as pq
from feature_engines import START

from features import History, build_features, load_history
from riskmodel.units import DAY, HOUR

ROOT = Path(__file__).resolve().parent.parent / "data" / "bench-dask"
# Orders per generated file, and so per input partition: a task that reads a partition
# of orders (normalised as Python objects, then copied once per entity that reads orders)
# grows by some 3 GB per million rows; a quarter of that leaves room in a 6 GB worker.
CHUNK = 250_000
WORKERS = 2
WORKER_LIMIT = "6GB"
GB = 1024**3
SELLERS = 300
PUBLIC_IPS = 500
_STATS = "_bench.json"  # not a table name: Tables.read never looks at it


# --- the dataset -------------------------------------------------------------------------


def parse_size(text: str) -> tuple[int, int]:
    """``1M/10M`` -> (1_000_000 requests, 10_000_000 orders)."""

    def number(part: str) -> int:
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1].lower(), 1)
        return int(float(part[:-1] if scale > 1 else part) * scale)

    requests, orders = text.split("/")
    return number(requests), number(orders)


def _ids(prefix: str, numbers: np.ndarray) -> pd.Series:
    return prefix + pd.Series(numbers).astype("str")


def _times(micros: np.ndarray) -> pd.Series:
    """Dataset form: a UTC timestamp (the store form's integer microseconds)."""
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True))


@dataclass
class _Counts:
    """Orders and requests per value of each entity with a bounded number of values, for
    the largest entity: what one fold task must hold at the least."""

    users: int
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    requests: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, kind: str, codes: dict[str, np.ndarray]) -> None:
        sizes = {"user_id": self.users, "device_id": self.users + 1}
        sizes |= {"payment_account": 2 * self.users, "seller_id": SELLERS}
        sizes["ip"] = self.users + PUBLIC_IPS
        counts = self.orders if kind == "orders" else self.requests
        for name, values in codes.items():
            found = np.bincount(values, minlength=sizes[name])
            counts[name] = counts.get(name, np.zeros(sizes[name], np.int64)) + found

    def largest(self) -> dict[str, dict[str, int]]:
        out = {}
        for name, orders in self.orders.items():
            top = int(np.argmax(orders))
            out[name] = {"orders": int(orders[top]), "requests": int(self.requests[name][top])}
        return out


def _order_chunk(
    rng: np.random.Generator, first: int, count: int, users: int
) -> tuple[pd.DataFrame, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Orders ``first``..``first + count``, as ``synthetic_history`` draws them (users
    across the whole history), in dataset form; with the entities' integer codes."""
    user = rng.integers(0, users, count)
    paid = START + rng.integers(0, 180 * DAY, count)
    product = rng.choice(["card_code", "membership", "game_currency", "service"], count)
    seller = rng.integers(0, SELLERS, count)
    account = user * 2 + rng.integers(0, 2, count)
    device = user + rng.integers(0, 2, count)
    public = rng.random(count) < 0.1
    ip = np.where(public, rng.integers(0, PUBLIC_IPS, count), user + PUBLIC_IPS)
    redeemed = np.where(product == "card_code", paid + HOUR, 0)
    frame = pd.DataFrame(
        {
            "order_id": _ids("o", np.arange(first, first + count)),
            "user_id": _ids("u", user),
            "product_type": product,
            "amount": rng.integers(100, 60_000, count) / 100,
            "paid_at": _times(paid),
            "currency": None,
            "seller_id": _ids("s", seller),
            "product_id": None,
            "payment_method": rng.choice(["alipay", "wechat_pay", "bank_card"], count),
            "payment_account": _ids("pa", account),
            "device_id": _ids("d", device),
            "ip": _ids("ip", ip),
            "delivered_at": _times(paid + 60_000_000),
            "redeemed_at": _times(redeemed).where(product == "card_code"),
            "service_days": pd.Series(np.full(count, 30), dtype="Int64").where(
                product == "membership"
            ),
        }
    )
    codes = {
        "user_id": user,
        "seller_id": seller,
        "payment_account": account,
        "device_id": device,
        "ip": ip,
    }
    return frame, codes, paid, product


def _request_tables(
    rng: np.random.Generator, orders: pd.DataFrame, paid: np.ndarray, first: int, count: int
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """``count`` refund requests of distinct orders of the chunk, and a fifth of them
    labelled, as ``synthetic_history`` draws them; with the chosen orders' places."""
    chosen = rng.choice(len(orders), count, replace=False)
    picked = orders.iloc[chosen].reset_index(drop=True)
    requested = paid[chosen] + rng.integers(0, 20 * DAY, count)
    requests = pd.DataFrame(
        {
            "request_id": _ids("r", np.arange(first, first + count)),
            "order_id": picked["order_id"],
            "user_id": picked["user_id"],
            "requested_at": _times(requested),
            "amount": picked["amount"],
            "reason": rng.choice(["not_delivered", "invalid_code", "unused", "other"], count),
            "days_used_claimed": None,
            "device_id": picked["device_id"],
            "ip": picked["ip"],
            "channel": "app",
        }
    )
    labelled = rng.choice(count, count // 5, replace=False)
    labels = pd.DataFrame(
        {
            "request_id": requests["request_id"].iloc[labelled].reset_index(drop=True),
            "is_abuse": rng.random(len(labelled)) < 0.2,
            "labeled_at": _times(requested[labelled] + rng.integers(DAY, 40 * DAY, len(labelled))),
            "source": "review",
        }
    )
    return requests, labels, chosen


def _usage(
    rng: np.random.Generator, orders: pd.DataFrame, paid: np.ndarray, product: np.ndarray
) -> pd.DataFrame:
    memberships = np.flatnonzero(product == "membership")
    used = rng.integers(0, 10, len(memberships))
    order = np.repeat(memberships, used)
    offsets = np.arange(used.sum()) - np.repeat(np.cumsum(used) - used, used)
    return pd.DataFrame(
        {
            "order_id": orders["order_id"].iloc[order].reset_index(drop=True),
            "used_at": _times(paid[order] + offsets * DAY + HOUR),
        }
    )


def _users(rng: np.random.Generator, first: int, count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": _ids("u", np.arange(first, first + count)),
            "registered_at": _times(START - rng.integers(0, 400 * DAY, count)),
            "phone_verified": rng.random(count) < 0.9,
        }
    )


def _cuts(total: int, chunks: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, total, chunks + 1).astype(np.int64)
    return [(int(a), int(b - a)) for a, b in itertools.pairwise(edges)]


def write_dataset(directory: Path, requests: int, orders: int, seed: int = 0) -> dict[str, Any]:
    """The dataset directory for a size, made once (``_bench.json`` marks it finished):
    a folder per table, one Parquet file per chunk of ``CHUNK`` orders."""
    done = directory / _STATS
    if done.exists():
        stats: dict[str, Any] = json.loads(done.read_text())
        if stats.get("orders_per_file") == CHUNK:
            return stats
    shutil.rmtree(directory, ignore_errors=True)
    for name in ("users", "orders", "usage", "refund_requests", "labels"):
        (directory / name).mkdir(parents=True)
    started = time.perf_counter()
    users = max(orders // 10, 1)
    chunks = max(1, -(-orders // CHUNK))
    counts = _Counts(users)
    rows = dict.fromkeys(("users", "orders", "usage", "refund_requests", "labels"), 0)
    order_cuts, request_cuts = _cuts(orders, chunks), _cuts(requests, chunks)
    for c, ((first, count), (first_request, asked), (first_user, known)) in enumerate(
        zip(order_cuts, request_cuts, _cuts(users, chunks), strict=True)
    ):
        rng = np.random.default_rng([seed, c])
        frame, codes, paid, product = _order_chunk(rng, first, count, users)
        asked_frame, labels, chosen = _request_tables(rng, frame, paid, first_request, asked)
        tables = {
            "orders": frame,
            "refund_requests": asked_frame,
            "labels": labels,
            "usage": _usage(rng, frame, paid, product),
            "users": _users(rng, first_user, known),
        }
        for name, table in tables.items():
            table.to_parquet(directory / name / f"part-{c:05d}.parquet", index=False)
            rows[name] += len(table)
        counts.add("orders", codes)
        counts.add("requests", {name: values[chosen] for name, values in codes.items()})
    stats = {
        "requests": requests,
        "orders": orders,
        "rows": rows,
        "files_per_table": chunks,
        "orders_per_file": CHUNK,
        "largest": counts.largest(),
        "seconds_to_write": round(time.perf_counter() - started, 1),
    }
    done.write_text(json.dumps(stats, indent=1))
    return stats


# --- the single machine, in a subprocess -------------------------------------------------


def _store_form(frame: pd.DataFrame) -> pd.DataFrame:
    """A dataset table as the store holds it (integer microseconds, integer cents),
    strings kept as Arrow strings as ``synthetic_history`` has them."""
    out = {}
    for name in frame.columns:
        values = frame[name]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            micros = values.dt.tz_localize(None).to_numpy(dtype="datetime64[us]").astype(np.int64)
            out[name] = pd.Series(pd.array(micros, dtype="Int64")).mask(values.isna())
        elif name == "amount":
            out[name] = pd.Series(np.rint(values.to_numpy(dtype=float) * 100).astype(np.int64))
        else:
            out[name] = values
    return pd.DataFrame(out)


def _load_in_memory(directory: Path) -> History:
    tables = {
        name: _store_form(pq.read_table(directory / name).to_pandas())
        for name in ("users", "orders", "usage", "refund_requests", "labels")
    }
    return History.empty().replace(**tables)


def single_machine(directory: Path, command: bool = False) -> dict[str, float]:
    """``build_features`` of the dataset in ``directory``, held in memory (this process).
    With ``command``, read as ``features build --from`` reads it (``load_history``: every
    value validated and normalised, text as Python objects) and the table written to
    Parquet, as the command does: its whole path, beside the cluster's."""
    started = time.perf_counter()
    history = load_history(directory) if command else _load_in_memory(directory)
    loaded = time.perf_counter() - started
    started, cpu = time.perf_counter(), time.process_time()
    table = build_features(history)
    if command:
        out = directory.parent / f"single-{directory.name}.parquet"
        table.to_parquet(out)
        out.unlink()
    return {
        "load_s": loaded,
        "build_s": time.perf_counter() - started,
        "cpu_s": time.process_time() - cpu,
        "rows": float(len(table)),
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024,
    }


def run_single(directory: Path, max_gb: float, command: bool = False) -> dict[str, float] | None:
    """``single_machine`` in a subprocess, killed (None) if its memory passes ``max_gb``."""
    flags = ["--single-command"] if command else []
    child = subprocess.Popen(
        [sys.executable, __file__, "--single", str(directory), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    watched = psutil.Process(child.pid)
    while child.poll() is None:
        try:
            rss = watched.memory_info().rss
        except psutil.NoSuchProcess:
            break
        if rss > max_gb * GB:
            child.kill()
            child.wait()
            print(f"  single machine passed {max_gb:g} GB: stopped")
            return None
        time.sleep(0.2)
    out, _ = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the single-machine build failed ({child.returncode})")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# --- the cluster -------------------------------------------------------------------------


class _Sampler:
    """The resident memory of some processes, sampled every 0.2 s: the largest seen."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peaks = dict.fromkeys(pids, 0)
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for name, process in self.processes.items():
                try:
                    rss = process.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                self.peaks[name] = max(self.peaks[name], rss)
                total += rss
            self.total = max(self.total, total)
            self._stop.wait(0.2)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _default_partitions(tables: Any) -> int:
    """``build_on_dask``'s number of partitions per entity pass when not given."""
    return int(max(2, tables.orders.npartitions, tables.refund_requests.npartitions))


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def local_cluster() -> Any:
    """The benchmarks' cluster: ``WORKERS`` single-threaded worker processes limited to
    ``WORKER_LIMIT`` each, on this machine."""
    from distributed import LocalCluster

    # Every P2P shuffle logs its start and end as warnings, and a nanny each restart:
    # noise beside the table.
    for noisy in ("distributed.shuffle", "distributed.nanny"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        memory_limit=WORKER_LIMIT,
        processes=True,
        dashboard_address=None,
    )


def worker_pids(client: Any) -> dict[str, int]:
    """Each worker's process, named "worker 1", "worker 2"... in the order of addresses."""
    pids: dict[str, int] = client.run(os.getpid)
    return {f"worker {i + 1}": pids[address] for i, address in enumerate(sorted(pids))}


def run_dask(directory: Path, out: Path, partitions: int | None) -> dict[str, Any]:
    """The feature build as ``features build --dask`` runs it, on a fresh local cluster."""
    from distributed import Client

    from features.dask import Tables, build_on_dask, repeated_keys, write_parquet

    with local_cluster() as cluster, Client(cluster) as client:
        pids: dict[str, int] = client.run(os.getpid)
        watched = worker_pids(client) | {"client": os.getpid()}
        started = time.perf_counter()
        with _Sampler(watched) as sampler:
            tables = Tables.read(str(directory))
            built = build_on_dask(tables, partitions=partitions)
            rows, width = write_parquet(client, built, out, repeated_keys(tables))
        seconds = time.perf_counter() - started
        # A worker restarted by its nanny would start its own peak again: say so.
        after: dict[str, int] = client.run(os.getpid)
        peaks: dict[str, int] = client.run(_max_rss)
        return {
            "seconds": seconds,
            "rows": rows,
            "width": width,
            "partitions": partitions or _default_partitions(tables),
            "input_partitions": tables.orders.npartitions,
            "worker_peaks_gb": [peaks[a] / GB for a in sorted(peaks)],
            "sampled_peaks_gb": {k: v / GB for k, v in sampler.peaks.items()},
            "sampled_total_gb": sampler.total / GB,
            "restarted": sorted(set(pids.items()) ^ set(after.items())) != [],
        }


# --- the report --------------------------------------------------------------------------


def _label(requests: int, orders: int) -> str:
    def short(n: int) -> str:
        return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"

    return f"{short(requests)}/{short(orders)}"


def report(size: str, stats: dict[str, Any], dask: dict[str, Any], single: dict[str, Any]) -> None:
    largest = ", ".join(
        f"{name} {v['orders']:,} orders + {v['requests']:,} requests"
        for name, v in stats["largest"].items()
    )
    peaks = " / ".join(f"{gb:.2f}" for gb in dask["worker_peaks_gb"])
    sampled = ", ".join(f"{k} {v:.2f}" for k, v in dask["sampled_peaks_gb"].items())
    kind = "estimate, scaled from " + single["from"] if single.get("estimate") else "measured"
    ratio = dask["seconds"] / single["build_s"]
    print(
        f"\n{size}: {stats['rows']['orders']:,} orders, {stats['rows']['refund_requests']:,} "
        f"requests, {stats['rows']['usage']:,} usage days, {stats['rows']['labels']:,} labels "
        f"in {stats['files_per_table']} files per table\n"
        f"  largest entities: {largest}\n"
        f"  dask ({WORKERS} workers x {WORKER_LIMIT}, {dask['partitions']} partitions per "
        f"entity pass): {dask['rows']:,} x {dask['width']} in {dask['seconds']:.1f} s "
        f"(read, build, write); worker peak RSS {peaks} GB"
        f"{' (a worker restarted)' if dask['restarted'] else ''}\n"
        f"  sampled RSS peaks: {sampled} GB; all together {dask['sampled_total_gb']:.2f} GB\n"
        f"  single machine ({kind}): build {single['build_s']:.1f} s "
        f"(+{single['load_s']:.1f} s to load), peak RSS {single['peak_gb']:.2f} GB\n"
        f"  dask / single-machine build time: {ratio:.2f}x"
    )


def _single_for(
    directory: Path,
    requests: int,
    orders: int,
    args: argparse.Namespace,
    measured: dict[tuple[int, int], dict[str, float]],
) -> dict[str, Any]:
    if orders <= args.single_max_orders:
        if (requests, orders) not in measured:
            result = run_single(directory, args.single_max_gb)
            if result is None:
                raise RuntimeError("the single-machine reference passed its memory cap")
            measured[(requests, orders)] = result
        return dict(measured[(requests, orders)])
    if not measured:
        # Measure at the largest size allowed, the same shape scaled down.
        scale = args.single_max_orders / orders
        small = (int(requests * scale), args.single_max_orders)
        small_dir = ROOT / _label(*small).replace("/", "-")
        write_dataset(small_dir, *small)
        _single_for(small_dir, *small, args, measured)
    base = max(measured, key=lambda key: key[1])
    factor = orders / base[1]
    # Linear in the history: the engine's columns and sort are per row (n log n sorts
    # are near linear at these sizes).
    estimate: dict[str, Any] = {k: v * factor for k, v in measured[base].items()}
    return estimate | {"estimate": True, "from": f"{_label(*base)} x {factor:g}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10k/100k,1M/10M,3M/30M", help="requests/orders,...")
    parser.add_argument("--partitions", type=int, help="partitions per entity pass")
    parser.add_argument("--single-max-orders", type=int, default=10_000_000)
    parser.add_argument("--single-max-gb", type=float, default=11.0)
    parser.add_argument(
        "--command-path",
        action="store_true",
        help="also time the single machine's whole command path (read, validate, build, "
        "write) where it is measured",
    )
    parser.add_argument("--single", type=Path, help=argparse.SUPPRESS)  # the subprocess
    parser.add_argument("--single-command", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        print(json.dumps(single_machine(args.single, args.single_command)))
        return
    measured: dict[tuple[int, int], dict[str, float]] = {}
    for size in args.sizes.split(","):
        requests, orders = parse_size(size)
        directory = ROOT / _label(requests, orders).replace("/", "-")
        stats = write_dataset(directory, requests, orders)
        out = ROOT / f"features-{directory.name}.parquet"
        dask = run_dask(directory, out, args.partitions)
        out.unlink()
        single = _single_for(directory, requests, orders, args, measured)
        report(_label(requests, orders), stats, dask, single)
        if args.command_path and orders <= args.single_max_orders:
            command_path(directory, dask["seconds"], args.single_max_gb)


def command_path(directory: Path, dask_seconds: float, max_gb: float) -> None:
    whole = run_single(directory, max_gb, command=True)
    if whole is None:
        print(f"  single machine, the command's whole path: over {max_gb:g} GB, stopped")
        return
    seconds = whole["load_s"] + whole["build_s"]
    print(
        f"  single machine, the command's whole path (read and validate, build, write): "
        f"{seconds:.1f} s ({whole['load_s']:.1f} s to read), peak RSS {whole['peak_gb']:.2f} GB"
        f"\n  dask / the command's whole path: {dask_seconds / seconds:.2f}x"
    )


if __name__ == "__main__":
    main()
