"""History in the shape both engines read: event streams and the request frame.

Everything is in store units (integer microseconds, integer cents). The offline engine
builds these streams from whole tables; the online engine runs the same construction on
the few rows the store returns for one request, so both see identical events.

    >>> from features.history import History
    >>> History.empty().orders.columns.tolist()[:3]
    ['order_id', 'user_id', 'product_type']
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Engine

from features.spec import Entity, Source
from riskmodel import dataset, store
from riskmodel.units import CENTS, RATE_UNIT

__all__ = [
    "ORDER_COLUMNS",
    "ORDER_NUMBERS",
    "Events",
    "History",
    "Sources",
    "base_amounts",
    "dense_rank",
    "load_history",
    "rates_of",
    "request_entity",
    "request_frame",
]

ORDER_COLUMNS = (
    "user_id",
    "product_type",
    "amount",
    "paid_at",
    "currency",
    "seller_id",
    "product_id",
    "payment_method",
    "payment_account",
    "device_id",
    "ip",
    "delivered_at",
    "redeemed_at",
    "credited_at",
    "activation_failed_at",
    "service_days",
)
"""Order columns a request carries, as ``order_<name>``."""

_ORDER_TIMES = ("paid_at", "delivered_at", "redeemed_at", "credited_at", "activation_failed_at")
ORDER_NUMBERS = frozenset({"amount", *_ORDER_TIMES, "service_days"})
"""Those of ``ORDER_COLUMNS`` that are numbers (float64, NaN for null); the rest are text."""

_TABLES = ("users", "orders", "usage", "refund_requests", "labels", "decisions", "rates")
_OPTIONAL = {
    name: tuple(c.name for c in dataset.TABLES[name].columns if not c.required)
    for name in _TABLES
    if name in dataset.TABLES
}


@dataclass(frozen=True)
class History:
    """The tables features are computed from, in store form (``riskmodel.store``)."""

    users: pd.DataFrame
    orders: pd.DataFrame
    usage: pd.DataFrame
    refund_requests: pd.DataFrame
    labels: pd.DataFrame
    decisions: pd.DataFrame
    rates: pd.DataFrame

    def __post_init__(self) -> None:
        # An optional column a table lacks (one written before the contract had it) reads
        # as null, as when a dataset file leaves it out.
        for name, optional in _OPTIONAL.items():
            frame = getattr(self, name)
            missing = [c for c in optional if c not in frame.columns]
            if missing:
                object.__setattr__(self, name, frame.assign(**dict.fromkeys(missing)))

    @classmethod
    def empty(cls) -> History:
        return cls(**{name: _empty(name) for name in _TABLES})

    @classmethod
    def from_tables(cls, tables: dict[str, pd.DataFrame]) -> History:
        """From ``riskmodel.dataset.read_dataset`` output; absent tables are empty."""
        return cls(**{name: tables.get(name, _empty(name)) for name in _TABLES})

    @classmethod
    def from_store(cls, source: Engine | Connection) -> History:
        return cls(**{name: store.read_table(source, name) for name in _TABLES})

    def replace(self, **tables: pd.DataFrame) -> History:
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        return History(**{**current, **tables})


def load_history(source: str | Path) -> History:
    """History from a dataset directory, or from the store at a database URL."""
    if isinstance(source, Path) or "://" not in source:
        return History.from_tables(dataset.read_dataset(source))
    engine = store.open_store(source)
    try:
        return History.from_store(engine)
    finally:
        engine.dispose()


def _empty(table: str) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in store.columns_of(table)})


def _num(series: pd.Series) -> np.ndarray:
    """A numeric column as float64 with NaN for null (exact for store integers < 2**53)."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _obj(series: pd.Series) -> np.ndarray:
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)


def rates_of(history: History, currencies: pd.Series) -> np.ndarray:
    """The stored rate (integer millionths, float64) of each currency; NaN where none."""
    at = _positions(currencies, history.rates["currency"])
    rates = _num(history.rates["rate"])
    return np.where(at >= 0, rates[np.maximum(at, 0)] if len(rates) else np.nan, np.nan)


def base_amounts(cents: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """Amounts in cents of the reporting currency (``riskmodel.store.base_amount``),
    int64 arithmetic as in the store's SQL; NaN stays NaN."""
    known = ~np.isnan(cents)
    out = cents.copy()
    convert = known & ~np.isnan(rates) & (rates != RATE_UNIT)
    whole = cents[convert].astype(np.int64) * rates[convert].astype(np.int64)
    out[convert] = (whole // RATE_UNIT).astype(float)
    return out


def _positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """Row of ``keys`` holding each of ``values`` (-1 if none), by an Arrow hash lookup:
    several times faster than a pandas reindex or merge on millions of string keys."""
    found = pc.index_in(
        pa.array(values, type=pa.string(), from_pandas=True),
        value_set=pa.array(keys, type=pa.string(), from_pandas=True),
    )
    positions: np.ndarray = found.to_numpy(zero_copy_only=False)
    return np.where(np.isnan(positions), -1, positions).astype(np.int64)


def _rows_of(table: pd.DataFrame, key: str, values: pd.Series) -> pd.DataFrame:
    """The rows of ``table`` whose ``key`` is each of ``values``, all null where none."""
    at = _positions(values, table[key])
    rows: pd.DataFrame = table.iloc[np.maximum(at, 0)].reset_index(drop=True)
    if (at < 0).any():
        rows = rows.astype(object).where(pd.Series(at >= 0), None)
    return rows


def request_frame(
    requests: pd.DataFrame, history: History, order_rows: pd.DataFrame | None = None
) -> dict[str, np.ndarray]:
    """Columns of each request with its order's (``order_*``) and user's (``user_*``).

    Numbers are float64 with NaN for null; text is an object array with None.
    ``order_rows``, when the caller has them, are the requests' orders (``Sources.order_rows``).
    """
    if order_rows is None:
        order_rows = _rows_of(history.orders, "order_id", requests["order_id"])
    user_rows = _rows_of(history.users, "user_id", requests["user_id"])
    columns: dict[str, np.ndarray] = {}
    for name in ("request_id", "order_id", "user_id", "reason", "device_id", "ip", "channel"):
        columns[name] = _obj(requests[name])
    for name in ("requested_at", "amount", "days_used_claimed"):
        columns[name] = _num(requests[name])
    for name in ORDER_COLUMNS:
        values = order_rows[name]
        columns[f"order_{name}"] = _num(values) if name in ORDER_NUMBERS else _obj(values)
    rates = rates_of(history, order_rows["currency"])
    columns["amount_base"] = base_amounts(columns["amount"], rates) / CENTS
    columns["order_amount_base"] = base_amounts(columns["order_amount"], rates) / CENTS
    columns["amount"] = columns["amount"] / CENTS
    columns["order_amount"] = columns["order_amount"] / CENTS
    columns["user_registered_at"] = _num(user_rows["registered_at"])
    verified = user_rows["phone_verified"]
    columns["user_phone_verified"] = np.array(
        [np.nan if v is None or v is pd.NA or v != v else float(bool(v)) for v in verified],
        dtype=float,
    )
    return columns


def request_entity(columns: Mapping[str, np.ndarray], entity: Entity) -> np.ndarray:
    """The value each request has for ``entity`` (its own field, or its order's)."""
    if entity.on_order:
        return columns[f"order_{entity.value}"]
    return columns[entity.value]


@dataclass(frozen=True)
class Events:
    """One source's rows keyed by one entity, only those whose key is among the values asked.

    ``code`` is each row's key as an index into those values, ``time`` int64 microseconds,
    ``value`` int64
    (cents, +1/-1, a registration time, or 1), and ``attributes`` holds the text columns
    filters and distinct counts read, as they are (coded only by whoever needs codes).
    """

    code: np.ndarray
    time: np.ndarray
    value: np.ndarray
    attributes: dict[str, pd.Series]
    distinct_times: np.ndarray  # sorted distinct times of the source
    time_rank: np.ndarray  # each event's time as an index into distinct_times

    def subset(self, keep: np.ndarray) -> Events:
        return Events(
            code=self.code[keep],
            time=self.time[keep],
            value=self.value[keep],
            attributes={n: c[keep].reset_index(drop=True) for n, c in self.attributes.items()},
            distinct_times=self.distinct_times,
            time_rank=self.time_rank[keep],
        )


def dense_rank(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each value's index among them (sort-based: no hashing)."""
    order = np.argsort(values)  # ties share a rank whatever their order
    ordered = values[order]
    new = np.ones(len(values), dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.cumsum(new) - 1
    return ordered[new], rank


class Sources:
    """Builds event streams from one history, sharing the joins they have in common.

    >>> nobody = pa.array([], pa.string())
    >>> Sources(History.empty()).events(Source.ORDERS, Entity.USER, (), nobody).time.size
    0
    """

    def __init__(self, history: History) -> None:
        self.history = history
        self._refunds: pd.DataFrame | None = None
        self._order_amounts: np.ndarray | None = None
        self._verdicts: pd.DataFrame | None = None
        self._outcomes: pd.DataFrame | None = None
        self._decisions: pd.DataFrame | None = None
        self._lock = threading.RLock()
        self._order_rows: pd.DataFrame | None = None
        self._users_of: dict[str, np.ndarray] = {}
        self._ranks: dict[object, tuple[np.ndarray, np.ndarray]] = {}

    def order_rows(self, requests: pd.DataFrame) -> pd.DataFrame:
        """Each request's order (all null where unknown). Looked up once for the history's
        own requests: finding 1M orders among 10M hashes all 10M, so it is worth keeping."""
        if requests is not self.history.refund_requests:
            return _rows_of(self.history.orders, "order_id", requests["order_id"])
        if self._order_rows is None:
            self._order_rows = _rows_of(self.history.orders, "order_id", requests["order_id"])
        return self._order_rows

    @property
    def refunds(self) -> pd.DataFrame:
        """Refund requests with their order's payment account, seller and product, and
        their amount in cents of the reporting currency (``base_amount``)."""
        with self._lock:  # several sources read it, possibly from several threads
            return self._joined_refunds()

    def _joined_refunds(self) -> pd.DataFrame:
        if self._refunds is None:
            requests = self.history.refund_requests
            theirs = self.order_rows(requests)
            rates = rates_of(self.history, theirs["currency"])
            self._refunds = requests.reset_index(drop=True).assign(
                payment_account=theirs["payment_account"],
                seller_id=theirs["seller_id"],
                product_id=theirs["product_id"],
                base_amount=base_amounts(_num(requests["amount"]), rates),
            )
        return self._refunds

    def order_amounts(self) -> np.ndarray:
        """Each order's amount in cents of the reporting currency (a column beside the
        orders rather than in a copy of them: the orders are the largest table)."""
        with self._lock:
            if self._order_amounts is None:
                orders = self.history.orders
                rates = rates_of(self.history, orders["currency"])
                self._order_amounts = base_amounts(_num(orders["amount"]), rates)
            return self._order_amounts

    def verdicts(self) -> pd.DataFrame:
        """What the verdicts say of each request, once per time it changes (the store's
        ``abuse_changes``): ``delta`` +1 now abuse, -1 cleared; ``judged`` 1 for the first
        verdict. A verdict dated before its request counts from the request's time."""
        with self._lock:
            if self._verdicts is None:
                self._verdicts = self._verdict_changes()
            return self._verdicts

    def _verdict_changes(self) -> pd.DataFrame:
        requests = self._joined_refunds()
        labels = self.history.labels[["request_id", "labeled_at", "is_abuse"]]
        labels = labels.merge(requests[["request_id", "requested_at"]], on="request_id")
        labels["state"] = labels["is_abuse"].astype(bool).astype("int64")
        labels = labels.sort_values(["request_id", "labeled_at"], kind="stable")
        by_request = labels.groupby("request_id", sort=False)
        labels["delta"] = labels["state"] - by_request["state"].shift(1, fill_value=0)
        labels["judged"] = (by_request.cumcount() == 0).astype("int64")
        at = pd.to_numeric(labels["labeled_at"]).to_numpy(dtype=np.int64)
        asked = pd.to_numeric(labels["requested_at"]).to_numpy(dtype=np.int64)
        labels["labeled_at"] = np.maximum(at, asked)
        # Verdicts moved to their request's time may share an instant: one change for both.
        changes = (
            labels.groupby(["request_id", "labeled_at"], sort=False)[["delta", "judged"]]
            .sum()
            .reset_index()
        )
        changes = changes[(changes["delta"] != 0) | (changes["judged"] != 0)]
        keys = ["request_id", *(e.value for e in Entity)]
        return changes.merge(requests[keys], on="request_id", how="inner")

    def outcomes(self) -> pd.DataFrame:
        """The refund requests answered (``paid_amount`` and ``resolved_at`` both known),
        with ``outcome_at``: when the answer counts from (its time, or the request's if
        dated before it), and ``outcome``: ``paid`` (more than 0) or ``refused``."""
        with self._lock:
            if self._outcomes is None:
                requests = self._joined_refunds()
                answered = requests["resolved_at"].notna() & requests["paid_amount"].notna()
                frame = requests[answered.to_numpy(dtype=bool)].reset_index(drop=True)
                resolved = pd.to_numeric(frame["resolved_at"]).to_numpy(dtype=np.int64)
                asked = pd.to_numeric(frame["requested_at"]).to_numpy(dtype=np.int64)
                paid = pd.to_numeric(frame["paid_amount"]).to_numpy(dtype=np.int64)
                self._outcomes = frame.assign(
                    outcome_at=np.maximum(resolved, asked),
                    paid_amount=paid,
                    outcome=np.where(paid > 0, "paid", "refused").astype(object),
                )
            return self._outcomes

    def decisions(self) -> pd.DataFrame:
        """The service's decisions with their request's entities, ``decided_at`` moved to
        the request's time when dated before it, and ``approved_amount`` 0 where null."""
        with self._lock:
            if self._decisions is None:
                requests = self._joined_refunds()
                keys = ["request_id", *(e.value for e in Entity), "requested_at"]
                frame = self.history.decisions.merge(requests[keys], on="request_id")
                decided = pd.to_numeric(frame["decided_at"]).to_numpy(dtype=np.int64)
                asked = pd.to_numeric(frame["requested_at"]).to_numpy(dtype=np.int64)
                approved = pd.to_numeric(frame["approved_amount"]).fillna(0)
                self._decisions = frame.assign(
                    decided_at=np.maximum(decided, asked),
                    approved_amount=approved.to_numpy(dtype=np.int64),
                )
            return self._decisions

    def _user_codes(self, frame: pd.DataFrame) -> np.ndarray:
        """Each row's user as a row number of ``history.users`` (-1: unknown user)."""
        return _positions(frame["user_id"], self.history.users["user_id"])

    def sightings(self, entity: Entity, wanted: pa.Array) -> Events:
        """The first time each user was seen on each of the ``wanted`` values of
        ``entity`` (an order paid or a refund requested from it), valued at the user's
        registration; users the history does not know are left out.

        Everything after the one lookup of each row's entity and user is integer work:
        grouping (entity, user) string pairs of a long history cost more than all else.
        """
        users = len(self.history.users)
        codes, people, times = [], [], []
        tables = (
            ("orders", self.history.orders, "paid_at"),
            ("refunds", self.refunds, "requested_at"),
        )
        for name, frame, time in tables:
            if name not in self._users_of:
                self._users_of[name] = self._user_codes(frame)
            user = self._users_of[name]
            found = pc.index_in(
                pa.array(frame[entity.value], type=pa.string(), from_pandas=True),
                value_set=wanted,
            ).to_numpy(zero_copy_only=False)
            keep = ~np.isnan(found) & (user >= 0)
            codes.append(found[keep].astype(np.int64))
            people.append(user[keep])
            times.append(pd.to_numeric(frame[time]).to_numpy(dtype=np.int64)[keep])
        pair = np.concatenate(codes) * max(users, 1) + np.concatenate(people)
        first = pd.Series(np.concatenate(times)).groupby(pair, sort=False).min()
        pairs = first.index.to_numpy(dtype=np.int64)
        seen_at = first.to_numpy(dtype=np.int64)
        registered = pd.to_numeric(self.history.users["registered_at"]).to_numpy(dtype=np.int64)
        distinct, rank = dense_rank(seen_at)
        return Events(
            code=pairs // max(users, 1),
            time=seen_at,
            value=registered[pairs % max(users, 1)],
            attributes={},
            distinct_times=distinct,
            time_rank=rank,
        )

    def events(
        self,
        source: Source,
        entity: Entity,
        attributes: Sequence[str],
        wanted: pa.Array,
    ) -> Events:
        """The stream of ``source`` keyed by ``entity``, with the named attributes, for
        the entity values ``wanted`` (distinct strings: those some request has).

        Events of any other value are left out: they cannot change a feature, and most
        of a large history is such.
        """
        history = self.history
        frame: pd.DataFrame
        value: str | np.ndarray | None
        if source is Source.ORDERS:
            frame, time, value = history.orders, "paid_at", self.order_amounts()
        elif source is Source.REFUNDS:
            # An order's requests share its currency: they add up as they are.
            amount = "amount" if entity is Entity.ORDER else "base_amount"
            frame, time, value = self.refunds, "requested_at", amount
        elif source is Source.ABUSE:
            changes = self.verdicts()
            frame, time, value = changes[changes["delta"] != 0], "labeled_at", "delta"
        elif source is Source.VERDICTS:
            changes = self.verdicts()
            frame, time, value = changes[changes["judged"] != 0], "labeled_at", "judged"
        elif source is Source.OUTCOMES:
            frame, time, value = self.outcomes(), "outcome_at", "paid_amount"
        elif source is Source.DECISIONS:
            frame, time, value = self.decisions(), "decided_at", "approved_amount"
        elif source is Source.USAGE:
            frame, time, value = history.usage, "used_at", None
        else:
            return self.sightings(entity, wanted)
        if entity.value not in frame.columns:
            raise ValueError(f"source {source.value} has no {entity.value}")
        times = pd.to_numeric(frame[time]).to_numpy(dtype=np.int64)
        # Every entity of a source shares one ranking of its times.
        if source not in self._ranks:
            self._ranks[source] = dense_rank(times)
        distinct, rank = self._ranks[source]
        found = pc.index_in(
            pa.array(frame[entity.value], type=pa.string(), from_pandas=True), value_set=wanted
        ).to_numpy(zero_copy_only=False)
        keep = ~np.isnan(found)
        if value is None:
            values = np.ones(int(keep.sum()), dtype=np.int64)
        elif isinstance(value, str):
            values = pd.to_numeric(frame[value]).to_numpy(dtype=np.int64)[keep]
        else:
            values = value[keep].astype(np.int64)
        # Only the columns read: filtering a wide table copies every column it keeps.
        frame = frame[list(attributes)]
        if not keep.all():
            frame = frame[keep]
        return Events(
            code=found[keep].astype(np.int64),
            time=times[keep],
            value=values,
            attributes={name: frame[name].reset_index(drop=True) for name in attributes},
            distinct_times=distinct,
            time_rank=rank[keep],
        )
