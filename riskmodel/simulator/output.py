"""Turning the simulator's arrays into the dataset tables, and writing them.

Every table has the columns of ``riskmodel.dataset.TABLES`` in their declared order
(an export without outcome or crediting records leaves out ``OUTCOME_COLUMNS`` or
``CREDIT_COLUMNS``), with natural types: identifiers and categories as ``str``, timestamps as
``datetime64[us, UTC]`` at whole seconds, amounts as ``float64`` with two decimals,
counts as ``Int64`` and flags as ``bool``. Rows are sorted by time, then identifier.
Identifiers are numbered in the order rows are sorted (accounts by registration, orders
by payment), except devices, payment accounts, sellers and products, which are numbered
in a random order so that an identifier reveals nothing about how it was made.

    >>> from riskmodel.simulator import SimulationConfig, simulate, write_simulation
    >>> sim = simulate(SimulationConfig(users=500, days=14))
    >>> paths = write_simulation(sim, "data/sim-small")    # doctest: +SKIP
    >>> sorted(paths)                                      # doctest: +SKIP
    ['ground_truth', 'labels', 'orders', 'refund_requests', 'usage', 'users']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from riskmodel import dataset
from riskmodel.simulator.common import (
    CHANNELS,
    LABEL_SOURCES,
    PAYMENT_METHODS,
    PRODUCT_TYPES,
    REASONS,
    Array,
    dotted_quads,
    format_ids,
    id_width,
    take_ids,
    timestamps,
)
from riskmodel.simulator.labels import Labels
from riskmodel.simulator.orders import Orders
from riskmodel.simulator.patterns import FIRST_ABUSE, PATTERNS
from riskmodel.simulator.population import Population
from riskmodel.simulator.requests import Requests
from riskmodel.simulator.usage import Usage

__all__ = [
    "CREDIT_COLUMNS",
    "GROUND_TRUTH",
    "OUTCOME_COLUMNS",
    "Simulation",
    "assemble",
    "write_simulation",
]

OUTCOME_COLUMNS = ("paid_amount", "resolved_at")
"""Columns of refund_requests that an export without outcomes leaves out."""
CREDIT_COLUMNS = ("credited_at", "activation_failed_at")
"""Columns of orders that an export without the issuer's crediting records leaves out."""

GROUND_TRUTH = "ground_truth"
"""Name of the ground-truth file, written next to the tables but never part of them."""
GROUND_TRUTH_COLUMNS = ("request_id", "is_abuse", "pattern")


@dataclass(frozen=True)
class Simulation:
    """The simulated dataset: the tables of the dataset directory and the truth.

    ``ground_truth`` has one row per refund request: ``request_id``, ``is_abuse`` and
    ``pattern`` (an abuse pattern or the kind of honest request). It is what labels would
    say if every request were judged at once and without error.

    Example::

        >>> from riskmodel.simulator import SimulationConfig, simulate
        >>> sim = simulate(SimulationConfig(users=500, days=14, seed=3))
        >>> list(sim.ground_truth.columns)
        ['request_id', 'is_abuse', 'pattern']
    """

    users: pd.DataFrame
    orders: pd.DataFrame
    usage: pd.DataFrame
    refund_requests: pd.DataFrame
    labels: pd.DataFrame
    rates: pd.DataFrame
    ground_truth: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """The dataset tables by name, in contract order (ground truth excluded)."""
        return {name: getattr(self, name) for name in dataset.TABLES}


def _rank(*keys: Array) -> Array:
    """Position of each row once sorted by ``keys`` (the first key is the primary one)."""
    order = np.lexsort(tuple(reversed(keys)))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def _sorted(frame: pd.DataFrame, *keys: Array) -> pd.DataFrame:
    order = np.lexsort(tuple(reversed(keys)))
    return frame.iloc[order].reset_index(drop=True)


def _choices(values: tuple[str, ...], codes: Array) -> pd.Series:
    return take_ids(pd.Series(values, dtype="str"), codes)


def _money(values: Array) -> pd.Series:
    return pd.Series(np.round(np.asarray(values, dtype=np.float64), 2))


def _counts(values: Array) -> pd.Series:
    values = np.asarray(values, dtype=np.int64)
    return pd.Series(pd.array(values, dtype="Int64")).mask(pd.Series(values < 0))


def _randomly_numbered(prefix: str, count: int, width: int, rng: np.random.Generator) -> pd.Series:
    return format_ids(prefix, rng.permutation(count), id_width(count, width))


def _currency_column(currencies: tuple[tuple[str, float], ...], code: Array) -> pd.Series:
    if len(currencies) == 1:
        return pd.Series([currencies[0][0]] * len(code), dtype="str")
    return _choices(tuple(name for name, _ in currencies), code)


def _rates(currencies: tuple[tuple[str, float], ...]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "currency": pd.Series([name for name, _ in currencies], dtype="str"),
            "rate": pd.Series([float(rate) for _, rate in currencies], dtype=np.float64),
        }
    )


def _check_columns(name: str, frame: pd.DataFrame, left_out: tuple[str, ...] = ()) -> pd.DataFrame:
    expected = tuple(c for c in dataset.TABLES[name].names if c not in left_out)
    if tuple(frame.columns) != expected:
        raise RuntimeError(f"{name} columns {tuple(frame.columns)} != contract {expected}")
    return frame


def assemble(
    pop: Population,
    n_sellers: int,
    n_products: int,
    currencies: tuple[tuple[str, float], ...],
    order_currency: Array,
    orders: Orders,
    usage: Usage,
    requests: Requests,
    context: tuple[Array, Array, Array],
    labels: Labels,
    rng: np.random.Generator,
    outcome_columns: bool = True,
    credit_columns: bool = True,
) -> Simulation:
    """Number every entity and build the sorted tables.

    ``currencies`` is the rates table, ``(currency, rate)`` with the reporting currency
    first; ``order_currency`` the position in it of each order's currency (amounts are
    already in that currency). Without ``outcome_columns`` (``credit_columns``) the
    tables leave out ``OUTCOME_COLUMNS`` (``CREDIT_COLUMNS``).
    """
    n_users = len(pop.registered)
    user_rank = _rank(pop.registered, np.arange(n_users))
    user_ids = format_ids("u", user_rank, id_width(n_users, 7))
    seller_ids = _randomly_numbered("s", n_sellers, 4, rng)
    product_ids = _randomly_numbered("p", n_products, 5, rng)
    device_ids = _randomly_numbered("d", pop.n_devices, 7, rng)
    account_ids = _randomly_numbered("pa", len(pop.account_method), 7, rng)
    ips = dotted_quads(pop.ip_numbers)

    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "registered_at": timestamps(pop.registered),
            "phone_verified": pd.Series(pop.phone_verified.astype(bool)),
        }
    )
    users = _sorted(users, user_rank)

    n_orders = len(orders)
    order_rank = _rank(orders.paid, np.arange(n_orders))
    order_ids = format_ids("o", order_rank, id_width(n_orders, 8))
    frame = pd.DataFrame(
        {
            "order_id": order_ids,
            "user_id": take_ids(user_ids, orders.user),
            "product_type": _choices(PRODUCT_TYPES, orders.product_type),
            "amount": _money(orders.amount),
            "paid_at": timestamps(orders.paid),
            "currency": _currency_column(currencies, order_currency),
            "seller_id": take_ids(seller_ids, orders.seller),
            "product_id": take_ids(product_ids, orders.product),
            "payment_method": _choices(PAYMENT_METHODS, orders.method),
            "payment_account": take_ids(account_ids, orders.account),
            "device_id": take_ids(device_ids, orders.device),
            "ip": take_ids(ips, orders.ip),
            "delivered_at": timestamps(orders.delivered),
            "redeemed_at": timestamps(orders.redeemed),
            "credited_at": timestamps(orders.credited),
            "activation_failed_at": timestamps(orders.activation_failed),
            "service_days": _counts(np.where(orders.service_days > 0, orders.service_days, -1)),
        }
    )
    orders_frame = _sorted(frame, order_rank)

    usage_frame = pd.DataFrame(
        {
            "order_id": take_ids(order_ids, usage.order),
            "used_at": timestamps(usage.used_at),
        }
    )
    usage_frame = _sorted(usage_frame, usage.used_at, order_rank[usage.order])

    n_requests = len(requests)
    request_rank = _rank(requests.requested, order_rank[requests.order], np.arange(n_requests))
    request_ids = format_ids("r", request_rank, id_width(n_requests, 7))
    device, ip, channel = context
    frame = pd.DataFrame(
        {
            "request_id": request_ids,
            "order_id": take_ids(order_ids, requests.order),
            "user_id": take_ids(user_ids, orders.user[requests.order]),
            "requested_at": timestamps(requests.requested),
            "amount": _money(requests.amount),
            "reason": _choices(REASONS, requests.reason),
            "days_used_claimed": _counts(requests.claimed),
            "device_id": take_ids(device_ids, device),
            "ip": take_ids(ips, ip),
            "channel": _choices(CHANNELS, channel),
            "paid_amount": _money(requests.paid),
            "resolved_at": timestamps(requests.resolved),
        }
    )
    requests_frame = _sorted(frame, request_rank)
    truth = pd.DataFrame(
        {
            "request_id": request_ids,
            "is_abuse": pd.Series(requests.pattern >= FIRST_ABUSE),
            "pattern": _choices(tuple(p.value for p in PATTERNS), requests.pattern),
        }
    )
    truth = _sorted(truth, request_rank)

    frame = pd.DataFrame(
        {
            "request_id": take_ids(request_ids, labels.request),
            "is_abuse": pd.Series(labels.is_abuse.astype(bool)),
            "labeled_at": timestamps(labels.labeled_at),
            "source": _choices(LABEL_SOURCES, labels.source),
        }
    )
    label_rank = request_rank[labels.request]
    labels_frame = _sorted(frame, labels.labeled_at, label_rank)
    # Two verdicts on one request in the same second would break the table's key.
    labels_frame = labels_frame.drop_duplicates(["request_id", "labeled_at"], ignore_index=True)

    no_credits = () if credit_columns else CREDIT_COLUMNS
    no_outcomes = () if outcome_columns else OUTCOME_COLUMNS
    orders_frame = orders_frame.drop(columns=list(no_credits))
    requests_frame = requests_frame.drop(columns=list(no_outcomes))
    return Simulation(
        users=_check_columns("users", users),
        orders=_check_columns("orders", orders_frame, no_credits),
        usage=_check_columns("usage", usage_frame),
        refund_requests=_check_columns("refund_requests", requests_frame, no_outcomes),
        labels=_check_columns("labels", labels_frame),
        rates=_check_columns("rates", _rates(currencies)),
        ground_truth=truth,
    )


def write_simulation(
    sim: Simulation, out_dir: str | Path, fmt: Literal["parquet", "csv"] = "parquet"
) -> dict[str, Path]:
    """Write the tables with ``dataset.write_table`` and the ground truth next to them.

    The same simulation always gives the same bytes. Returns the path of each file by
    table name (``ground_truth`` included).

    Example::

        >>> from riskmodel.simulator import SimulationConfig, simulate, write_simulation
        >>> sim = simulate(SimulationConfig(users=500, days=14))
        >>> write_simulation(sim, "data/sim", fmt="csv")["orders"].name   # doctest: +SKIP
        'orders.csv'
    """
    if fmt not in ("parquet", "csv"):
        raise ValueError(f"fmt must be 'parquet' or 'csv', got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: dataset.write_table(out, name, frame, fmt) for name, frame in sim.tables().items()
    }
    path = out / f"{GROUND_TRUTH}.{fmt}"
    if fmt == "parquet":
        sim.ground_truth.to_parquet(path, index=False)
    else:
        sim.ground_truth.to_csv(path, index=False)
    paths[GROUND_TRUTH] = path
    return paths
