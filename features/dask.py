"""Point-in-time features on a Dask cluster, computed by the offline engine's own kernels.

For histories too large for one machine (``docs/dask.md``). The result is the table
``features.offline.build_features`` returns, value for value and row for row; only where
the work happens changes:

1. *Number.* Each request gets ``_row`` (its input partition times ``2**40`` plus its
   place in it): the order of the result. Each event row gets ``_seq`` the same way: the
   order the kernels see events in, so that ties break as on one machine.
2. *Join.* Requests and refund requests meet their order and their user (hash joins on
   the cluster); each refund request gets its order's payment account, seller, product
   and its amount in the reporting currency; labels and decisions get their request's
   entities; orders get their user's registration when sightings are wanted.
3. *Route.* For each entity the aggregates read, its requests and the events of every
   source it needs go to partition ``hash(value) % N``: all of one value's events and
   requests share a partition, so every window of every request is inside it.
4. *Fold.* In each partition ``features.offline.aggregate_columns`` runs over a
   ``features.history.Sources`` of the partition's rows: the same kernel, on a slice.
5. *Join back.* Each entity's family of aggregates goes back to its requests' ranges of
   ``_row``, beside the request frame; context, ratio and derived features are computed
   by ``computed_columns`` and the table shaped by ``feature_table``, as on one machine.

Dask is an optional extra (``pip install 'refund-risk[dask]'``); importing this module
imports it, so nothing else in the package imports this module at its top.

    >>> from features.dask import connect, Tables, build_on_dask   # doctest: +SKIP
    >>> client = connect("local:2")                                  # doctest: +SKIP
    >>> table = build_on_dask(Tables.read("data/sample")).compute()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dask.base import tokenize
from dask.delayed import Delayed, delayed
from dask.highlevelgraph import HighLevelGraph
from distributed import Client

from features.catalog import CATALOG
from features.history import (
    ORDER_COLUMNS,
    History,
    Sources,
    base_amounts,
    rates_of,
    request_entity,
    request_frame,
)
from features.offline import (
    _with_inputs,
    aggregate_columns,
    build_features,
    computed_columns,
    feature_table,
)
from features.spec import Aggregate, Entity, Source
from riskmodel import dataset
from riskmodel.errors import DataError

__all__ = [
    "OnCluster",
    "Sink",
    "Tables",
    "build_on_dask",
    "connect",
    "each_partition",
    "repeated_keys",
    "write_parquet",
    "write_partitions",
]

_SPAN = 2**40
"""Rows one input partition may hold: ``_row`` and ``_seq`` are partition * span + place."""

# Store-form columns each table is read with (the rest, ``extra`` included, are not read
# by any feature), and those that are numbers (float64, NaN for null: store integers are
# exact below 2**53).
_COLUMNS = {
    "users": ("user_id", "registered_at", "phone_verified"),
    "orders": ("order_id", *ORDER_COLUMNS),
    "usage": ("order_id", "used_at"),
    "refund_requests": (
        "request_id",
        "order_id",
        "user_id",
        "requested_at",
        "amount",
        "reason",
        "days_used_claimed",
        "device_id",
        "ip",
        "channel",
        "paid_amount",
        "resolved_at",
    ),
    "labels": ("request_id", "is_abuse", "labeled_at"),
    "decisions": ("request_id", "decision", "decided_at", "approved_amount"),
}
_NUMBERS = frozenset(
    {
        "registered_at",
        "phone_verified",  # 1.0 / 0.0 / NaN: request_frame reads it so
        "amount",
        "paid_at",
        "delivered_at",
        "redeemed_at",
        "credited_at",
        "activation_failed_at",
        "service_days",
        "used_at",
        "requested_at",
        "days_used_claimed",
        "paid_amount",
        "resolved_at",
        "labeled_at",
        "decided_at",
        "approved_amount",
    }
)
_ENTITIES = tuple(e.value for e in Entity)
_REGISTERED = "_registered"  # an event's user's registration, for sightings


def connect(address: str) -> Client:
    """A client of the scheduler at ``address`` (``tcp://host:8786``), or of a new local
    cluster of N single-threaded worker processes for ``local:N``."""
    if address.startswith("local:"):
        try:
            workers = int(address.removeprefix("local:"))
        except ValueError:
            raise DataError(f"--dask {address}: write local:N, N a number of workers") from None
        # The local scheduler runs in this process, and logs every shuffle's start and end
        # as a warning: a dozen lines of noise on each command's output.
        logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
        # Started by the client, so closing the client ends it. Its HTTP server takes any
        # free port: 8787, Dask's default, may be another cluster's.
        return Client(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
    return Client(address)


def write_parquet(
    client: Client, table: dd.DataFrame, path: Path, checks: Sequence[Delayed] = ()
) -> tuple[int, int]:
    """Write ``table`` (``build_on_dask``'s) to one Parquet file at ``path``, a partition
    at a time in the requests' order, so the client holds one partition, not the table.
    ``write_partitions`` says what happens on a failure. Returns (rows, columns)."""
    schema = pa.Schema.from_pandas(table._meta)
    # Text of an empty frame has no type: the request ids (and any text) are strings.
    for i, column in enumerate(schema):
        if pa.types.is_null(column.type):
            schema = schema.set(i, column.with_type(pa.string()))

    @contextmanager
    def parquet(path: Path) -> Iterator[Callable[[pd.DataFrame], None]]:
        with pq.ParquetWriter(path, schema) as writer:
            yield lambda part: writer.write_table(pa.Table.from_pandas(part, schema=schema))

    return write_partitions(client, table, path, parquet, checks), len(table.columns)


Sink = Callable[[Path], AbstractContextManager[Callable[[pd.DataFrame], None]]]
"""Opens the file at a path and gives what writes one partition to it."""


def write_partitions(
    client: Client,
    table: dd.DataFrame,
    path: Path,
    sink: Sink,
    checks: Sequence[Delayed] = (),
    *,
    what: str = "the feature build",
) -> int:
    """Each partition of ``table``, in order, to the file ``sink`` opens at ``path``
    (``each_partition``). On any failure ``path`` is removed: there is never a partial
    file. Returns the rows written."""
    try:
        with sink(path) as write:
            return each_partition(client, table, write, checks, what=what)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def each_partition(
    client: Client,
    table: dd.DataFrame,
    use: Callable[[pd.DataFrame], None],
    checks: Sequence[Delayed] = (),
    *,
    what: str,
) -> int:
    """``use`` each partition of ``table`` as it comes, in the table's order: the client
    holds one partition at a time. Returns the rows used.

    ``checks`` (``repeated_keys``'s) run beside the build; any problem they find fails it.
    If the cluster fails (a task's error, workers lost for good) or a check does, a
    ``DataError`` says why (``what`` failed). An error of ``use`` itself (a full disk, say)
    is raised as it is, the cluster's work cancelled.
    """
    parts = table.to_delayed()
    futures = client.compute([*parts, *checks])
    checked = futures[len(parts) :]

    def result(future: Any) -> Any:
        try:
            return future.result()
        except Exception as exc:
            # A repeated key also breaks the build, further on and in its own words.
            _refuse(_found(checked))
            raise DataError(f"{what} failed on the cluster, nothing written: {exc}") from exc

    rows = 0
    try:
        for future in futures[: len(parts)]:
            part = result(future)
            future.release()  # the cluster may drop the partition now
            use(part)
            rows += len(part)
        problems = [problem for future in checked for problem in result(future)]
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    _refuse(problems)
    return rows


def _refuse(problems: list[str]) -> None:
    if problems:
        raise DataError(f"nothing written: {'; '.join(problems)}")


def _found(checks: Sequence[Any]) -> list[str]:
    """What the checks' futures found, as far as they ran (none, if the cluster failed)."""
    problems: list[str] = []
    for future in checks:
        try:
            problems.extend(future.result())
        except Exception:
            future.cancel()
    return problems


def repeated_keys(tables: Tables, shown: int = 3) -> list[Delayed]:
    """Checks that no key of a table read from several files (``Tables.read``) is in two
    of them; each file's own repeats are ``Tables.read``'s. Each check computes to the
    problems it found, at most ``shown`` keys a piece. A repeated order would count twice
    in every feature that reads it.

    Only the key columns are read again (normalising whole files a second time cost a
    quarter of the build), and they are routed by value as the build routes its events,
    so a worker holds a slice of one table's keys at a time."""
    found: list[Delayed] = []
    repeated = delayed(_repeated, pure=True)
    for name, (path, kind) in tables.files.items():
        key = list(dataset.TABLES[name].key)
        with _strings_as_they_are():
            keys = (
                dd.read_parquet(path, columns=key)
                if kind == "parquet"
                else dd.read_csv(
                    path, dtype=str, usecols=key, keep_default_na=False, na_values=[""]
                )
            )
            if keys.npartitions < 2:
                continue
            keys = keys.map_partitions(_moments, meta=_moments(keys._meta))
            for part in _route(keys, [key[0]], keys.npartitions):
                found.append(repeated(name, key, shown, part))
    return found


def _moments(keys: pd.DataFrame) -> pd.DataFrame:
    """Times in a key as instants (a CSV's text may write one instant two ways)."""
    out = keys.copy()
    for column in keys.columns:
        if column.endswith("_at"):
            out[column] = pd.to_datetime(keys[column], utc=True, errors="coerce", format="ISO8601")
    return out


def _repeated(name: str, key: list[str], shown: int, part: pd.DataFrame) -> list[str]:
    twice = part[part.duplicated(key, keep=False)].drop_duplicates(key).head(shown)
    return [
        f"{name}: duplicate key ({', '.join(f'{k}={_as_given(k, row[k])!r}' for k in key)}) "
        "across its files"
        for _, row in twice.iterrows()
    ]


def _as_given(column: str, value: Any) -> str:
    """A key's value as the files gave it, a time as its UTC instant."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Tables:
    """A history as Dask data frames in store form: what ``build_on_dask`` reads.

    ``rates`` is a pandas frame: a few currencies, sent with every task that converts.
    """

    users: dd.DataFrame
    orders: dd.DataFrame
    usage: dd.DataFrame
    refund_requests: dd.DataFrame
    labels: dd.DataFrame
    decisions: dd.DataFrame
    rates: pd.DataFrame
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Where each table read from a dataset directory came from: (path, parquet or csv)."""

    @classmethod
    def from_history(cls, history: History, partitions: int = 4) -> Tables:
        """A history already in memory, cut into ``partitions`` per table."""
        with _strings_as_they_are():
            frames = {
                name: dd.from_pandas(
                    _typed(getattr(history, name), name),
                    npartitions=max(1, min(partitions, len(getattr(history, name)))),
                    sort=False,
                )
                for name in _COLUMNS
            }
        return cls(**frames, rates=history.rates.reset_index(drop=True))

    @classmethod
    def read(cls, location: str) -> Tables:
        """The tables of a dataset directory, local or at any fsspec URL the workers can
        read (``s3://bucket/export``); a table may be one file or a folder of Parquet files
        (``orders.parquet/`` or ``orders/``). Each partition is validated and normalised
        by ``riskmodel.dataset.normalise``: its errors name the row within the partition,
        and a key repeated within one file; ``repeated_keys`` finds one repeated across
        files."""
        import fsspec

        fs, root = fsspec.core.url_to_fs(location)
        if not fs.isdir(root):
            raise DataError(f"{location} is not a directory")
        prefix = location.rstrip("/")
        frames: dict[str, dd.DataFrame] = {}
        files: dict[str, tuple[str, str]] = {}
        rates = _empty("rates")
        for name in (*_COLUMNS, "rates"):
            places = ((f"{name}.parquet", "parquet"), (name, "parquet"), (f"{name}.csv", "csv"))
            found = [
                (f"{prefix}/{entry}", kind)
                for entry, kind in places
                if fs.exists(f"{root.rstrip('/')}/{entry}")
            ]
            if len(found) > 1:
                raise DataError(f"{name}: {' and '.join(p for p, _ in found)} both exist; keep one")
            if name == "rates":
                if found:
                    rates = _read_small(found[0][0], found[0][1])
                continue
            if not found or name not in dataset.TABLES:
                with _strings_as_they_are():
                    frames[name] = dd.from_pandas(_typed(_empty(name), name), npartitions=1)
                continue
            path, kind = found[0]
            with _strings_as_they_are():
                raw = (
                    dd.read_parquet(path)
                    if kind == "parquet"
                    else dd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
                )
                meta = _typed(dataset.normalise(name, raw._meta), name)
                frames[name] = raw.map_partitions(_normalised, name, meta=meta)
            files[name] = (path, kind)
        return cls(**frames, rates=rates, files=files)


def _read_small(path: str, kind: str) -> pd.DataFrame:
    frame = (
        dd.read_parquet(path)
        if kind == "parquet"
        else dd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    ).compute()
    return dataset.normalise("rates", frame).drop(columns=[dataset.EXTRA])


def _normalised(raw: pd.DataFrame, name: str) -> pd.DataFrame:
    return _typed(dataset.normalise(name, raw), name)


def _empty(name: str) -> pd.DataFrame:
    return getattr(History.empty(), name)  # type: ignore[no-any-return]


def _typed(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """The columns features read, numbers as float64 and flags as they mean: text the
    cluster would turn into strings ("False") would change what the kernels see."""
    out: dict[str, pd.Series] = {}
    for column in _COLUMNS[name]:
        values = frame[column] if column in frame.columns else pd.Series([None] * len(frame))
        values = values.reset_index(drop=True)
        if column == "is_abuse":
            out[column] = values.astype(bool)
        elif column == "phone_verified":
            known = values.notna()
            out[column] = pd.Series(
                [float(bool(v)) if k else np.nan for v, k in zip(values, known, strict=True)],
                dtype=float,
            )
        elif column in _NUMBERS:
            out[column] = pd.to_numeric(values, errors="coerce").astype(float)
        else:
            out[column] = values.astype(object).where(values.notna(), None)
    return pd.DataFrame(out)


class _strings_as_they_are:
    """Dask turns text columns into Arrow strings by default: kept as Python objects here,
    as the single-machine engine has them, so both run on the same values."""

    def __enter__(self) -> None:
        self._config = dask.config.set({"dataframe.convert-string": False})
        self._config.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._config.__exit__(*exc)


@dataclass(frozen=True)
class OnCluster:
    """``build_features`` run on a Dask cluster, with its signature, for the commands
    that build features of a history in memory (``score``, ``backtest``): the cluster
    does the work, the client holds the history and the result."""

    client: Client
    partitions: int = 4

    def __call__(
        self,
        history: History,
        requests: pd.DataFrame | None = None,
        names: Sequence[str] | None = None,
        *,
        context: Sequence[str] = (),
    ) -> pd.DataFrame:
        tables = Tables.from_history(history, self.partitions)
        asked = None
        if requests is not None:
            with _strings_as_they_are():
                asked = dd.from_pandas(
                    _typed(requests, "refund_requests"),
                    npartitions=max(1, min(self.partitions, len(requests))),
                    sort=False,
                )
        built = build_on_dask(tables, asked, names, context=context, partitions=self.partitions)
        parts: list[pd.DataFrame] = self.client.gather(self.client.compute(built.to_delayed()))
        meta: pd.DataFrame = built._meta
        if not parts:
            return meta
        frame = pd.concat(parts)
        for name in context:
            if not pd.api.types.is_numeric_dtype(frame[name].dtype):
                # The type pandas gives a text column depends on its values (text, or only
                # nulls): inferred from the whole column, as on one machine.
                values = frame[name].astype(object).where(frame[name].notna(), None)
                frame[name] = pd.DataFrame({name: values.to_numpy(dtype=object)})[name].to_numpy()
        return frame


def build_on_dask(
    tables: Tables,
    requests: dd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    *,
    context: Sequence[str] = (),
    partitions: int | None = None,
) -> dd.DataFrame:
    """The features of ``requests`` (default: every refund request of ``tables``), as
    ``build_features`` returns them, as a lazy Dask frame whose partitions follow the
    requests' (``.compute()`` on the client, or write partition by partition).

    ``partitions`` is the number of partitions each entity's events are routed to
    (default: the largest table's number of partitions, at least 2).
    """
    chosen = list(CATALOG) if names is None else list(names)
    wanted = _with_inputs(chosen)
    aggregates = [f for f in wanted if isinstance(f, Aggregate)]
    meta = build_features(History.empty(), None, chosen, context=context)
    with _strings_as_they_are():
        own = requests is None
        if requests is None:
            requests = tables.refund_requests
        n = partitions or max(2, tables.orders.npartitions, requests.npartitions)
        rows = requests.map_partitions(_numbered, "_row", meta=_meta_with(requests, "_row"))
        wants_sightings = any(a.source is Source.SIGHTINGS for a in aggregates)
        orders = _seq(tables.orders)
        if wants_sightings:
            registered = tables.users[["user_id", "registered_at"]].rename(
                columns={"registered_at": _REGISTERED}
            )
            orders = orders.merge(registered, on="user_id", how="left")
        asked = _with_order_and_user(rows, tables)
        framed = asked.map_partitions(
            _request_frame, tables.rates, meta=_request_frame(asked._meta, tables.rates)
        )
        if own:
            refunds = asked.map_partitions(_refund_events, tables.rates, meta=_refund_meta())
        else:
            theirs = _with_order_and_user(
                tables.refund_requests.map_partitions(
                    _numbered, "_row", meta=_meta_with(tables.refund_requests, "_row")
                ),
                tables,
            )
            refunds = theirs.map_partitions(_refund_events, tables.rates, meta=_refund_meta())
        by_request = refunds[["request_id", *_ENTITIES]]
        labels = _seq(tables.labels).merge(by_request, on="request_id", how="inner")
        decisions = _seq(tables.decisions).merge(by_request, on="request_id", how="inner")
        events = _Events(orders, refunds, labels, decisions, _seq(tables.usage))
        passes = list(_by_entity(aggregates).items())
        folded = _fold_all(passes, framed, events, tables.rates, n, requests.npartitions)
        # The request frame and every family of a partition of requests meet in one task:
        # the pieces are request-sized, so a plain exchange of tasks moves them.
        split = delayed(_split, pure=True, nout=requests.npartitions)
        framed_parts = [split(part, requests.npartitions) for part in framed.to_delayed()]
        # Delayed pieces are passed one by one, never in a list: Dask optimises and culls
        # the whole graph for each call given a list of them, which made building the graph
        # quadratic in the number of partitions (minutes on the client at 120).
        combine = delayed(_combine_pieces, pure=True)
        sizes = (len(framed_parts), *[len(family) for family in folded])
        sources = [*framed_parts, *[pieces for family in folded for pieces in family]]
        by_part = _pieces(sources, requests.npartitions)
        parts = [
            combine(chosen, context, meta, sizes, *by_part[p]) for p in range(requests.npartitions)
        ]
        return dd.from_delayed(parts, meta=meta, verify_meta=False)


@dataclass(frozen=True)
class _Events:
    orders: dd.DataFrame
    refunds: dd.DataFrame
    labels: dd.DataFrame
    decisions: dd.DataFrame
    usage: dd.DataFrame


def _numbered(frame: pd.DataFrame, column: str, partition_info: Any = None) -> pd.DataFrame:
    number = partition_info["number"] if partition_info else 0
    out = frame.reset_index(drop=True)
    out[column] = number * _SPAN + np.arange(len(out), dtype=np.int64)
    return out


def _meta_with(frame: dd.DataFrame, column: str) -> pd.DataFrame:
    meta: pd.DataFrame = frame._meta
    return meta.assign(**{column: np.array([], dtype=np.int64)})


def _seq(frame: dd.DataFrame) -> dd.DataFrame:
    return frame.map_partitions(_numbered, "_seq", meta=_meta_with(frame, "_seq"))


def _with_order_and_user(requests: dd.DataFrame, tables: Tables) -> dd.DataFrame:
    """Requests with their order's columns (``order_<name>``) and their user's
    (``user_registered_at``, ``user_phone_verified``); null where unknown."""
    orders = tables.orders.rename(columns={c: f"order_{c}" for c in ORDER_COLUMNS})
    users = tables.users.rename(
        columns={"registered_at": "user_registered_at", "phone_verified": "user_phone_verified"}
    )
    joined = requests.merge(orders, on="order_id", how="left")
    return joined.merge(users, on="user_id", how="left")


def _parts(frame: pd.DataFrame, prefix: str, names: Sequence[str]) -> pd.DataFrame:
    return frame[[f"{prefix}{n}" for n in names]].set_axis(list(names), axis=1)


def _request_frame(asked: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """``request_frame`` of a partition of requests joined to their orders and users."""
    asked = asked.reset_index(drop=True)
    order_rows = _parts(asked, "order_", ORDER_COLUMNS)
    users = _parts(asked.assign(user_user_id=asked["user_id"]), "user_", _COLUMNS["users"])
    users = users[users["registered_at"].notna()].drop_duplicates("user_id")
    history = History.empty().replace(users=users.reset_index(drop=True), rates=rates)
    columns = request_frame(asked, history, order_rows)
    frame = pd.DataFrame(columns)
    frame["_row"] = asked["_row"].to_numpy(dtype=np.int64)
    return frame


_REFUND_ORDER_SIDE = ("payment_account", "seller_id", "product_id")


def _refund_events(asked: pd.DataFrame, rates: pd.DataFrame) -> pd.DataFrame:
    """Refund requests as ``Sources.refunds`` has them (their order's entities and their
    amount in cents of the reporting currency), with their user's registration."""
    asked = asked.reset_index(drop=True)
    out = asked[list(_COLUMNS["refund_requests"])].copy()
    for name in _REFUND_ORDER_SIDE:
        theirs = asked[f"order_{name}"]
        out[name] = theirs.astype(object).where(theirs.notna(), None)
    history = History.empty().replace(rates=rates)
    amounts = pd.to_numeric(asked["amount"]).to_numpy(dtype=float)
    out["base_amount"] = base_amounts(amounts, rates_of(history, asked["order_currency"]))
    out[_REGISTERED] = asked["user_registered_at"].to_numpy(dtype=float)
    out["_seq"] = asked["_row"].to_numpy(dtype=np.int64)
    return out


def _refund_meta() -> pd.DataFrame:
    empty = _typed(_empty("refund_requests"), "refund_requests")
    for name in _REFUND_ORDER_SIDE:
        empty[name] = pd.Series([], dtype=object)
    empty["base_amount"] = pd.Series([], dtype=float)
    empty[_REGISTERED] = pd.Series([], dtype=float)
    empty["_seq"] = pd.Series([], dtype=np.int64)
    return empty


def _by_entity(aggregates: Sequence[Aggregate]) -> dict[Entity, list[Aggregate]]:
    groups: dict[Entity, list[Aggregate]] = {}
    for aggregate in aggregates:
        groups.setdefault(aggregate.entity, []).append(aggregate)
    return groups


def _key_column(entity: Entity) -> str:
    """The request frame's column for ``entity`` (as ``request_entity`` reads it)."""
    return f"order_{entity.value}" if entity.on_order else entity.value


def _bucket(frame: pd.DataFrame, keys: Sequence[str | None], n: int) -> pd.DataFrame:
    """A copy of the rows for each pass that reads them (``keys[k]``: the column pass
    ``k`` is keyed by, None if it does not read the table), each with ``_part``: pass
    ``k``'s partition of its value, ``k * n + hash(value) % n``. Rows without a value
    match no request and are left out. Hashing the text itself gives every table the
    same partition for one value."""
    frame = _compact(frame)  # before the copies: a partition of orders is made 5 times over
    copies = []
    for k, column in enumerate(keys):
        if column is None:
            continue
        rows = frame[frame[column].notna()]
        text = np.asarray(rows[column].astype(object), dtype=object)
        hashed = pd.util.hash_array(text, categorize=False) if len(text) else np.zeros(0, np.uint64)
        bucket = (hashed % np.uint64(n)).astype(np.int64)
        copies.append(rows.assign(_part=k * n + bucket))
    if not copies:
        return frame.iloc[:0].assign(_part=np.zeros(0, dtype=np.int64))
    return pd.concat(copies, ignore_index=True)


_TEXT = pd.StringDtype("pyarrow")


def _compact(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Arrow strings for the trip through the shuffle: routed events are
    several copies of the history, and an id as a Python object takes some 60 bytes where
    Arrow takes its length; unpacked as objects, a worker held several times the history's
    own size. ``_as_objects`` gives the kernels the same values back. Store-form ids and
    text are strings; a column holding anything else is left as it is."""
    out = frame.copy(deep=False)
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) in (
            "string",
            "empty",
        ):
            out[name] = column.astype(_TEXT)
    return out


def _as_objects(frame: pd.DataFrame) -> pd.DataFrame:
    """``_compact``'s Arrow strings as the Python objects (None for null) the kernels read."""
    out = frame.copy(deep=False)
    for name in frame.columns:
        column = frame[name]
        if column.dtype == _TEXT:
            out[name] = column.astype(object).where(column.notna(), None)
    return out


def _route(frame: dd.DataFrame, keys: Sequence[str | None], n: int) -> list[Delayed]:
    """``frame``'s rows routed to every pass that reads them: one shuffle for all passes;
    partition ``k * n + i`` is pass ``k``'s partition ``i``."""
    bucketed = frame.map_partitions(
        _bucket,
        list(keys),
        n,
        meta=_compact(frame._meta.assign(_part=np.array([], dtype=np.int64))),
    )
    divisions = tuple(range(len(keys) * n + 1))
    return list(bucketed.set_index("_part", divisions=divisions).to_delayed())


# The sources of an entity's aggregates that read each table.
_READS = {
    "orders": frozenset({Source.ORDERS, Source.SIGHTINGS}),
    "refunds": frozenset(set(Source) - {Source.ORDERS, Source.USAGE}),
    "labels": frozenset({Source.ABUSE, Source.VERDICTS}),
    "decisions": frozenset({Source.DECISIONS}),
    "usage": frozenset({Source.USAGE}),
}


def _fold_all(
    passes: list[tuple[Entity, list[Aggregate]]],
    framed: dd.DataFrame,
    events: _Events,
    rates: pd.DataFrame,
    n: int,
    request_parts: int,
) -> list[list[Delayed]]:
    """Every entity's family of aggregates, folded where that entity's events are: per
    pass, per partition of the pass, a tuple of pieces, one per partition of requests."""
    keys = [_key_column(entity) for entity, _ in passes]
    asked = _route(framed[["_row", "requested_at", *dict.fromkeys(keys)]], keys, n)
    routed: dict[str, list[Delayed] | None] = {}
    for name, reads in _READS.items():
        frame: dd.DataFrame = getattr(events, name)
        readers = [
            entity.value
            if {a.source for a in group} & reads and entity.value in frame.columns
            else None
            for entity, group in passes
        ]
        if not any(readers):
            routed[name] = None
            continue
        if name == "orders":
            frame = frame[_order_columns(passes, frame)]
        routed[name] = _route(frame, readers, n)
    fold = delayed(_fold, pure=True, nout=request_parts)
    folded = []
    for k, (entity, group) in enumerate(passes):
        pieces = []
        for i in range(k * n, (k + 1) * n):
            tables = {name: None if parts is None else parts[i] for name, parts in routed.items()}
            # Positional, in _fold's order: see build_on_dask on Delayed given in a mapping.
            pieces.append(fold(entity, group, rates, asked[i], request_parts, *tables.values()))
        folded.append(pieces)
    return folded


def _order_columns(passes: list[tuple[Entity, list[Aggregate]]], orders: dd.DataFrame) -> list[str]:
    """What the orders sources read: fewer columns to move across the cluster."""
    read = {"_seq", "user_id", "paid_at", "amount", "currency", _REGISTERED}
    for entity, group in passes:
        read.add(entity.value)
        read |= {a.where[0] for a in group if a.where} | {a.of for a in group if a.of}
    return [c for c in orders.columns if c in read]


def _fold(
    entity: Entity,
    group: list[Aggregate],
    rates: pd.DataFrame,
    asked: pd.DataFrame,
    request_parts: int,
    orders: pd.DataFrame | None,
    refunds: pd.DataFrame | None,
    labels: pd.DataFrame | None,
    decisions: pd.DataFrame | None,
    usage: pd.DataFrame | None,
) -> tuple[pd.DataFrame, ...]:
    """One partition of one entity: the offline kernel over the partition's events, cut
    by partition of requests."""
    empty = History.empty()

    def rows(frame: pd.DataFrame | None, like: pd.DataFrame, keep: Sequence[str]) -> pd.DataFrame:
        if frame is None:
            return like
        frame = frame.reset_index(drop=True).sort_values("_seq", kind="stable")
        return _as_objects(frame[[c for c in frame.columns if c in keep]].reset_index(drop=True))

    order_rows = rows(orders, empty.orders, [*_COLUMNS["orders"], _REGISTERED])
    refund_rows = rows(refunds, _refund_meta(), list(_refund_meta().columns))
    history = History(
        users=_users_seen(order_rows, refund_rows),
        orders=order_rows,
        usage=rows(usage, empty.usage, _COLUMNS["usage"]),
        refund_requests=refund_rows,
        labels=rows(labels, empty.labels, _COLUMNS["labels"]),
        decisions=rows(decisions, empty.decisions, _COLUMNS["decisions"]),
        rates=rates,
    )
    asked = _as_objects(asked.reset_index(drop=True))
    key = _key_column(entity)
    columns = {
        "requested_at": asked["requested_at"].to_numpy(dtype=float),
        key: asked[key].astype(object).to_numpy(dtype=object),
    }
    assert request_entity(columns, entity) is columns[key]
    # One thread: the cluster runs partitions side by side already.
    out = aggregate_columns(_PartitionSources(history), columns, group, threads=1)
    folded = pd.DataFrame({"_row": asked["_row"].to_numpy(dtype=np.int64), **out})
    return _split(folded, request_parts)


def _split(frame: pd.DataFrame, parts: int) -> tuple[pd.DataFrame, ...]:
    """``frame`` cut by the partition of requests its ``_row`` is in."""
    frame = frame.reset_index(drop=True)
    part = frame["_row"].to_numpy(dtype=np.int64) // _SPAN
    return tuple(frame[part == p] for p in range(parts))


def _users_seen(orders: pd.DataFrame, refunds: pd.DataFrame) -> pd.DataFrame:
    """The users of a partition's events, with their registration (sightings' values)."""
    seen = [f[["user_id", _REGISTERED]] for f in (orders, refunds) if _REGISTERED in f.columns]
    if not seen:
        return History.empty().users
    users = pd.concat(seen).dropna(subset=[_REGISTERED]).drop_duplicates("user_id")
    return pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy(dtype=object),
            "registered_at": users[_REGISTERED].to_numpy(dtype=np.int64),
            "phone_verified": None,
        }
    )


class _PartitionSources(Sources):
    """``Sources`` of a partition whose refund requests were joined to their orders on
    the cluster (their orders may live in another partition)."""

    def _joined_refunds(self) -> pd.DataFrame:
        return self.history.refund_requests


def _pieces(sources: list[Delayed], parts: int) -> list[list[Delayed]]:
    """``[source[p] for source in sources]`` for each partition ``p`` of requests, as one
    graph layer of getitem tasks: each Delayed getitem is a layer of its own, and culling
    the 48,000 of 3M requests in 120 partitions took the client six minutes."""
    name = "pieces-" + tokenize([source.key for source in sources], parts)
    graph = {
        (name, i, p): (operator.getitem, source.key, p)
        for i, source in enumerate(sources)
        for p in range(parts)
    }
    layers = HighLevelGraph.from_collections(name, graph, dependencies=sources)
    return [
        [Delayed((name, i, p), layers, layer=name) for i in range(len(sources))]
        for p in range(parts)
    ]


def _combine_pieces(
    chosen: list[str],
    context: Sequence[str],
    meta: pd.DataFrame,
    sizes: Sequence[int],
    *pieces: pd.DataFrame,
) -> pd.DataFrame:
    """``_combine`` of pieces given in a row: ``sizes[0]`` of the request frame, then
    ``sizes[k]`` of family ``k``."""
    groups, start = [], 0
    for size in sizes:
        groups.append(list(pieces[start : start + size]))
        start += size
    return _combine(groups[0], groups[1:], chosen, context, meta)


def _combine(
    framed: list[pd.DataFrame],
    families: list[list[pd.DataFrame]],
    chosen: list[str],
    context: Sequence[str],
    meta: pd.DataFrame,
) -> pd.DataFrame:
    """One partition of requests: the request frame, every family, then the computed
    features and the table, by the single-machine engine's functions."""
    frame = pd.concat(framed).set_index("_row").sort_index()
    if not len(frame):
        return meta
    columns = {name: _as_engine(frame[name]) for name in frame.columns}
    for pieces in families:
        family = pd.concat(pieces).set_index("_row").reindex(frame.index)  # null: no entity
        for name in family.columns:
            columns[name] = family[name].to_numpy(dtype=float)
    computed = computed_columns(columns, _with_inputs(chosen))
    return feature_table(computed, chosen, context)


def _as_engine(series: pd.Series) -> np.ndarray:
    """A column as ``request_frame`` makes it: float64 with NaN, or objects with None."""
    if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype):
        return series.to_numpy(dtype=float, na_value=np.nan)
    return series.astype(object).where(series.notna(), None).to_numpy(dtype=object)
