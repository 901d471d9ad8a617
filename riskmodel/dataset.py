"""The dataset directory: the interchange format for history in bulk.

One file per table (``users``, ``orders``, ``usage``, ``refund_requests``, ``labels``, and
``rates`` when orders come in several currencies), Parquet or CSV, or a folder of Parquet
files per table (a partitioned export: ``orders/part-0.parquet``...), with the columns
declared in ``TABLES``. This module is the one
definition of that contract: the simulator writes it, ingest reads and validates it,
and the event store's schema is generated from it.

``read_dataset`` returns each table *normalised*: timestamps as integer microseconds
since the Unix epoch (UTC), money as integer cents, enumerations checked, and extra
columns gathered into one JSON text column ``extra``. A value that breaks the contract
raises ``DatasetError`` naming the file, the row, the column and the problem::

    >>> from riskmodel.dataset import read_dataset
    >>> tables = read_dataset("data/sample")            # doctest: +SKIP
    >>> tables["orders"].columns[:3].tolist()           # doctest: +SKIP
    ['order_id', 'user_id', 'product_type']
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from riskmodel.domain import LabelSource, ProductType, RefundReason
from riskmodel.errors import DatasetError
from riskmodel.units import CENTS, RATE_UNIT

__all__ = [
    "EXTRA",
    "TABLES",
    "Column",
    "Kind",
    "Table",
    "dataset_counts",
    "find_table_file",
    "normalise",
    "read_dataset",
    "read_table",
    "write_table",
]

EXTRA = "extra"
"""Name of the JSON column that keeps a file's extra columns (a dict per row, or null)."""


class Kind(StrEnum):
    ID = "id"  # non-empty text naming an entity
    TEXT = "text"  # free text
    CHOICE = "choice"  # one of a fixed set of values
    TIMESTAMP = "timestamp"  # ISO 8601, UTC; stored as integer microseconds since the epoch
    MONEY = "money"  # a decimal amount with at most 2 places; stored as integer cents
    COUNT = "count"  # a whole number
    FLAG = "flag"  # true / false
    RATE = "rate"  # a positive decimal; stored as integer millionths


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    required: bool = False
    choices: tuple[str, ...] = ()
    minimum: int | None = None  # for MONEY (in cents), COUNT and RATE (in millionths)
    doc: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    doc: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _choices(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(e.value for e in enum)


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "users",
            key=("user_id",),
            doc="One row per account.",
            columns=(
                Column("user_id", Kind.ID, required=True),
                Column("registered_at", Kind.TIMESTAMP, required=True),
                Column("phone_verified", Kind.FLAG),
            ),
        ),
        Table(
            "orders",
            key=("order_id",),
            doc="One row per paid order. What is odd but true is kept: a code redeemed or "
            "delivered before the buyer paid (a code sold already used), a membership whose "
            "length is unknown (its prorated entitlement is then unknown too).",
            columns=(
                Column("order_id", Kind.ID, required=True),
                Column("user_id", Kind.ID, required=True),
                Column("product_type", Kind.CHOICE, required=True, choices=_choices(ProductType)),
                Column("amount", Kind.MONEY, required=True, minimum=0),
                Column("paid_at", Kind.TIMESTAMP, required=True),
                Column("currency", Kind.TEXT),
                Column("seller_id", Kind.ID),
                Column("product_id", Kind.ID),
                Column("payment_method", Kind.TEXT, doc="alipay, wechat_pay, bank_card, balance"),
                Column("payment_account", Kind.ID),
                Column("device_id", Kind.ID),
                Column("ip", Kind.ID),
                Column("delivered_at", Kind.TIMESTAMP, doc="null: not delivered"),
                Column(
                    "redeemed_at",
                    Kind.TIMESTAMP,
                    doc="code redeemed or currency credited; may be before paid_at (a code "
                    "sold already used)",
                ),
                Column(
                    "credited_at",
                    Kind.TIMESTAMP,
                    doc="the value reached the buyer's own account (the issuer's word); "
                    "null: never, or not reported",
                ),
                Column(
                    "activation_failed_at",
                    Kind.TIMESTAMP,
                    doc="the issuer reported that the value never reached the buyer",
                ),
                Column("service_days", Kind.COUNT, minimum=1, doc="memberships"),
            ),
        ),
        Table(
            "usage",
            key=("order_id", "used_at"),
            doc="One row per day on which the platform saw a membership used.",
            columns=(
                Column("order_id", Kind.ID, required=True),
                Column("used_at", Kind.TIMESTAMP, required=True),
            ),
        ),
        Table(
            "refund_requests",
            key=("request_id",),
            doc="One row per refund request.",
            columns=(
                Column("request_id", Kind.ID, required=True),
                Column("order_id", Kind.ID, required=True),
                Column("user_id", Kind.ID, required=True),
                Column("requested_at", Kind.TIMESTAMP, required=True),
                Column("amount", Kind.MONEY, required=True, minimum=1),
                Column("reason", Kind.CHOICE, required=True, choices=_choices(RefundReason)),
                Column("days_used_claimed", Kind.COUNT, minimum=0),
                Column("device_id", Kind.ID),
                Column("ip", Kind.ID),
                Column("channel", Kind.TEXT, doc="app, web, support"),
                Column(
                    "paid_amount",
                    Kind.MONEY,
                    minimum=0,
                    doc="what was paid back for this request in the end (0: refused); null "
                    "while unanswered; given with resolved_at",
                ),
                Column("resolved_at", Kind.TIMESTAMP, doc="when it was paid or refused"),
            ),
        ),
        Table(
            "labels",
            key=("request_id", "labeled_at"),
            doc="Outcomes learned after the request; several per request may arrive, "
            "the latest known at a time is the one that counts then.",
            columns=(
                Column("request_id", Kind.ID, required=True),
                Column("is_abuse", Kind.FLAG, required=True),
                Column("labeled_at", Kind.TIMESTAMP, required=True),
                Column("source", Kind.CHOICE, choices=_choices(LabelSource)),
            ),
        ),
        Table(
            "rates",
            key=("currency",),
            doc="What one unit of each currency is worth in the reporting currency. Needed "
            "when orders come in several currencies: amounts are converted with it wherever "
            "they are added up or compared across orders.",
            columns=(
                Column("currency", Kind.ID, required=True),
                Column("rate", Kind.RATE, required=True, minimum=1),
            ),
        ),
    )
}

Format = Literal["parquet", "csv"]
_SUFFIXES: dict[str, Format] = {".parquet": "parquet", ".csv": "csv"}
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


def find_table_file(directory: str | Path, table: str) -> Path | None:
    """The file holding ``table`` in ``directory`` (``table.parquet`` or ``table.csv``), or
    the folder of Parquet files holding it (``table.parquet/`` or ``table/``: a partitioned
    export, read as one table in the order of its file names)."""
    directory = Path(directory)
    found = [
        place
        for place in (directory / f"{table}.parquet", directory / f"{table}.csv")
        if place.is_file() or (place.suffix == ".parquet" and place.is_dir())
    ]
    if (directory / table).is_dir():
        found.append(directory / table)
    if len(found) > 1:
        raise DatasetError(table, f"both {found[0].name} and {found[1].name} exist; keep one")
    return found[0] if found else None


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read and normalise one table file or folder of Parquet files (see the module
    docstring). A folder's rows are numbered across its files, in name order."""
    path = Path(path)
    fmt = "parquet" if path.is_dir() else _SUFFIXES.get(path.suffix)
    if fmt is None:
        raise DatasetError(table, "unsupported file type (use .parquet or .csv)", file=path.name)
    try:
        if path.is_dir():
            files = sorted(path.glob("*.parquet"))
            if not files:
                raise DatasetError(table, "a folder without .parquet files", file=path.name)
            raw = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        elif fmt == "parquet":
            raw = pd.read_parquet(path)
        else:
            # All text, so that this module, not the CSV reader, decides what a value means.
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise DatasetError(table, f"cannot be read: {exc}", file=path.name) from exc
    return normalise(table, raw, file=path.name)


def read_dataset(directory: str | Path) -> dict[str, pd.DataFrame]:
    """Read every table present in ``directory``; a table without a file is left out."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError("dataset", f"{directory} is not a directory")
    tables = {}
    for name in TABLES:
        path = find_table_file(directory, name)
        if path is not None:
            tables[name] = read_table(path, name)
    if not tables:
        expected = ", ".join(f"{n}.parquet|csv" for n in TABLES)
        raise DatasetError("dataset", f"no table files in {directory} (expected {expected})")
    return tables


def normalise(table: str, raw: pd.DataFrame, *, file: str | None = None) -> pd.DataFrame:
    """Validate ``raw`` against the contract of ``table`` and convert it to store form.

    Rows keep their order, and the index is reset so that row ``i`` of the result is
    data row ``i + 1`` of the file.
    """
    spec = TABLES[table]
    raw = raw.reset_index(drop=True)
    missing = [c for c in spec.required if c not in raw.columns]
    if missing:
        raise DatasetError(table, f"missing required column(s): {', '.join(missing)}", file=file)
    out: dict[str, pd.Series] = {}
    for column in spec.columns:
        values = raw[column.name] if column.name in raw.columns else _nulls(len(raw))
        out[column.name] = _convert(spec, column, values, file)
    frame = pd.DataFrame(out, index=raw.index)
    extra = [c for c in raw.columns if c not in spec.names and c != EXTRA]
    frame[EXTRA] = _extra_json(raw, extra)
    _check_unique_key(spec, frame, file)
    _check_pairs(spec, frame, file)
    return frame


# Columns that only mean something together: a payout without its time cannot be placed in
# the history, and a resolution without its amount says neither paid nor refused.
_PAIRS = {"refund_requests": ("paid_amount", "resolved_at")}


def _check_pairs(spec: Table, frame: pd.DataFrame, file: str | None) -> None:
    pair = _PAIRS.get(spec.name)
    if pair is None:
        return
    first, second = pair
    for given, lacking in ((first, second), (second, first)):
        alone = frame[given].notna() & frame[lacking].isna()
        if alone.any():
            raise _fail(
                spec,
                lacking,
                _first(alone),
                f"{given} is given without {lacking}: give both (paid_amount 0 for a "
                "refusal) or neither (unanswered)",
                file,
            )


def write_table(
    directory: str | Path, table: str, frame: pd.DataFrame, fmt: Format = "parquet"
) -> Path:
    """Write ``frame`` (natural types: datetimes, decimal amounts) as a table file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{table}.{fmt}"
    if fmt == "parquet":
        frame.to_parquet(path, index=False)
    else:
        text = frame.copy()
        for name in text.columns:
            if isinstance(text[name].dtype, pd.DatetimeTZDtype):
                text[name] = _iso(text[name])
        text.to_csv(path, index=False)
    return path


def _iso(series: pd.Series) -> pd.Series:
    utc = series.dt.tz_convert("UTC")
    whole_seconds = bool((utc.dropna().dt.microsecond == 0).all())
    pattern = "%Y-%m-%dT%H:%M:%SZ" if whole_seconds else "%Y-%m-%dT%H:%M:%S.%fZ"
    text: pd.Series = utc.dt.strftime(pattern)
    return text


_OBJECT = np.dtype(object)


def _objects(values: np.ndarray, present: np.ndarray) -> pd.Series:
    """An object column holding ``values`` where ``present`` and None elsewhere."""
    out = np.array(values, dtype=_OBJECT)
    out[~present] = None
    return pd.Series(out, dtype=_OBJECT)


def _nulls(n: int) -> pd.Series:
    return pd.Series([None] * n, dtype=_OBJECT)


def _fail(spec: Table, column: str, row_index: int, problem: str, file: str | None) -> DatasetError:
    return DatasetError(spec.name, problem, row=row_index + 1, column=column, file=file)


def _first(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _present(values: pd.Series) -> np.ndarray:
    """True where a value was given (not null, not an empty or blank string)."""
    present = values.notna().to_numpy(copy=True)
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("string").str.strip()
        present &= (text != "").fillna(False).to_numpy(dtype=bool)
    return present


def _convert(spec: Table, column: Column, values: pd.Series, file: str | None) -> pd.Series:
    present = _present(values)
    if column.required and not present.all():
        raise _fail(spec, column.name, _first(~present), "a value is required", file)
    if column.kind in (Kind.ID, Kind.TEXT, Kind.CHOICE):
        text = values.astype("string").str.strip()
        if column.kind is Kind.CHOICE:
            bad = present & ~text.isin(column.choices).fillna(False).to_numpy(dtype=bool)
            if bad.any():
                i = _first(bad)
                allowed = ", ".join(column.choices)
                raise _fail(
                    spec, column.name, i, f"{text.iloc[i]!r} is not one of: {allowed}", file
                )
        return _objects(text.to_numpy(dtype=_OBJECT), present)
    if column.kind is Kind.TIMESTAMP:
        return _timestamps(spec, column, values, present, file)
    if column.kind is Kind.MONEY:
        return _money(spec, column, values, present, file)
    if column.kind is Kind.COUNT:
        return _counts(spec, column, values, present, file)
    if column.kind is Kind.RATE:
        return _rates(spec, column, values, present, file)
    return _flags(spec, column, values, present, file)


def _timestamps(
    spec: Table, column: Column, values: pd.Series, present: np.ndarray, file: str | None
) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        text = values.astype("string").str.strip().where(pd.Series(present), None)
        parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = present & parsed.isna().to_numpy()
    if bad.any():
        i = _first(bad)
        raise _fail(spec, column.name, i, f"{values.iloc[i]!r} is not an ISO 8601 timestamp", file)
    micros = parsed.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    ints = micros.astype("int64")
    return pd.Series(pd.array(ints, dtype="Int64")).mask(~present)


def _numbers(
    spec: Table, column: Column, values: pd.Series, present: np.ndarray, file: str | None
) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = present & ~np.isfinite(numbers)
    if bad.any():
        i = _first(bad)
        raise _fail(spec, column.name, i, f"{values.iloc[i]!r} is not a number", file)
    return numbers


def _money(
    spec: Table, column: Column, values: pd.Series, present: np.ndarray, file: str | None
) -> pd.Series:
    numbers = _numbers(spec, column, values, present, file)
    cents = np.rint(numbers * CENTS)
    bad = present & (np.abs(numbers * CENTS - cents) > 1e-6)
    if bad.any():
        i = _first(bad)
        raise _fail(
            spec, column.name, i, f"{values.iloc[i]!r} has more than two decimal places", file
        )
    if column.minimum is not None:
        low = present & (cents < column.minimum)
        if low.any():
            i = _first(low)
            word = "negative" if cents[i] < 0 else "zero"
            raise _fail(spec, column.name, i, f"amount {values.iloc[i]!r} is {word}", file)
    ints = np.where(present, cents, 0).astype("int64")
    return pd.Series(pd.array(ints, dtype="Int64")).mask(~present)


def _counts(
    spec: Table, column: Column, values: pd.Series, present: np.ndarray, file: str | None
) -> pd.Series:
    numbers = _numbers(spec, column, values, present, file)
    bad = present & (numbers != np.floor(numbers))
    if bad.any():
        i = _first(bad)
        raise _fail(spec, column.name, i, f"{values.iloc[i]!r} is not a whole number", file)
    if column.minimum is not None:
        low = present & (numbers < column.minimum)
        if low.any():
            i = _first(low)
            raise _fail(spec, column.name, i, f"{values.iloc[i]!r} is below {column.minimum}", file)
    ints = np.where(present, numbers, 0).astype("int64")
    return pd.Series(pd.array(ints, dtype="Int64")).mask(~present)


def _rates(
    spec: Table, column: Column, values: pd.Series, present: np.ndarray, file: str | None
) -> pd.Series:
    numbers = _numbers(spec, column, values, present, file)
    millionths = np.rint(np.where(present, numbers, 0) * RATE_UNIT)
    if column.minimum is not None:
        low = present & (millionths < column.minimum)
        if low.any():
            i = _first(low)
            raise _fail(
                spec, column.name, i, f"rate {values.iloc[i]!r} must be above 0.000001", file
            )
    return pd.Series(pd.array(millionths.astype("int64"), dtype="Int64")).mask(~present)


def _flags(
    spec: Table, column: Column, values: pd.Series, present: np.ndarray, file: str | None
) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        flags = values.astype("boolean")
        return _objects(flags.to_numpy(dtype=_OBJECT), flags.notna().to_numpy())
    text = values.astype("string").str.strip().str.lower()
    is_true = text.isin(_TRUE).fillna(False).to_numpy(dtype=bool)
    is_false = text.isin(_FALSE).fillna(False).to_numpy(dtype=bool)
    bad = present & ~(is_true | is_false)
    if bad.any():
        i = _first(bad)
        raise _fail(spec, column.name, i, f"{values.iloc[i]!r} is not true or false", file)
    result = np.full(len(values), None, dtype=_OBJECT)
    result[is_true] = True
    result[is_false] = False
    return pd.Series(result, dtype=_OBJECT)


def _extra_json(raw: pd.DataFrame, extra: list[str]) -> pd.Series:
    if not extra:
        return _nulls(len(raw))
    records = raw[extra].astype(object).where(raw[extra].notna(), None).to_dict("records")
    texts = [
        json.dumps(kept, default=str, sort_keys=True)
        if (kept := {k: v for k, v in r.items() if v is not None})
        else None
        for r in records
    ]
    return pd.Series(texts, dtype=_OBJECT)


def _check_unique_key(spec: Table, frame: pd.DataFrame, file: str | None) -> None:
    dup = frame.duplicated(list(spec.key)).to_numpy()
    if dup.any():
        i = _first(dup)
        key = ", ".join(f"{k}={frame[k].iloc[i]!r}" for k in spec.key)
        raise _fail(spec, spec.key[0], i, f"duplicate key ({key})", file)


def dataset_counts(tables: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Rows per table, in contract order."""
    return {name: len(tables[name]) for name in TABLES if name in tables}
