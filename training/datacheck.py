"""Is a dataset directory fit for modelling, and what should an analyst look at first?

``check_dataset`` profiles the tables of a dataset directory (as ``riskmodel.dataset.
read_dataset`` returns them) and returns the figures as a ``DataCheck``; ``render`` turns
them into a report to read; ``DataCheck.as_dict`` into JSON-ready data. Nothing here reads
or writes a file. The report has these sections:

- **tables**: rows and time span of each, the currencies of the orders and whether the
  rates cover them;
- **labels**: the share of refund requests with any verdict and the share of abuse among
  them; by source, the verdicts, the delay from a request to the source's first verdict on
  it (median, 90th percentile, maximum) and the share of verdicts that change an earlier one;
- **abuse over time**: per week of request, requests, verdicts, abuse verdicts and the abuse
  rate among them, so that a drift or a gap in the labelling shows;
- **entities**: distinct users, devices, IPs, payment accounts, sellers and products, and
  the busiest of each with the share of refund requests it covers (a public IP, a huge
  seller);
- **rows ingest refuses** (broken references) and **odd but true rows** it keeps (a code
  redeemed before payment, a verdict dated before its request...), and how often the
  optional links of an order are missing;
- **features**: the standard point-in-time features of the labelled requests (the most
  recent ``FEATURE_SAMPLE``), each with its single-feature ROC AUC against the latest
  verdict. A number is ranked as it is, with a missing value as its own value below every
  other; a category is scored by the abuse rate of its level (missing is a level). An AUC
  of at least ``LEAK_AUC`` (or at most ``1 - LEAK_AUC``) looks like a leak; a feature
  with one value (or none) carries nothing;
- **warnings**, in plain words: too few abuse verdicts, labels that stop before the data
  does, an entity behind a fifth of the requests, leaks...

``until`` profiles the data as known before that time, exactly as training cuts it
(``training.dataset.as_of``): later rows, and deliveries or redemptions after it, are not
seen.

    >>> from riskmodel.dataset import read_dataset
    >>> check = check_dataset(read_dataset("data/sample"))          # doctest: +SKIP
    >>> print(render(check))                                         # doctest: +SKIP
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

import features
from features import History
from features.spec import Aggregate, Source
from riskmodel.dataset import TABLES, normalise
from riskmodel.domain import ProductType
from riskmodel.units import DAY, WEEK, iso, to_micros
from training.dataset import as_of, latest_labels

__all__ = [
    "BUSY_SHARE",
    "FEATURE_SAMPLE",
    "LABEL_GAP_DAYS",
    "LEAK_AUC",
    "MIN_ABUSE_VERDICTS",
    "CurrencyFigures",
    "DataCheck",
    "EntityFigures",
    "FeatureFigures",
    "FeatureSignal",
    "LabelFigures",
    "RowShare",
    "SourceFigures",
    "TableFigures",
    "WeekFigures",
    "check_dataset",
    "render",
    "single_feature_auc",
]

MIN_ABUSE_VERDICTS = 50
"""Fewer abuse verdicts than this are too few to train, calibrate and judge a model."""
LEAK_AUC = 0.97
"""A single feature this good (or this bad) at telling abuse looks like a leak."""
BUSY_SHARE = 0.20
"""One entity behind more than this share of refund requests deserves a look."""
LABEL_GAP_DAYS = 14.0
"""Verdicts that stop this long before the data does are missing, not late."""
FEATURE_SAMPLE = 50_000
"""Labelled requests whose features are computed (the most recent)."""
ODD_SHARE = 0.01
"""Odd-but-true rows above this share are worth a warning (a clock or time-zone problem)."""
MISSING_SHARE = 0.5
"""An order link missing on more than this share leaves its entity's features mostly null."""

LEAK = "looks like a leak: check it is known at request time"
NOTHING = "carries nothing here"
NAN_RULE = (
    "rank ROC AUC of each feature alone against the latest verdict; a missing value ranks "
    "below every value; a category is scored by the abuse rate of its level"
)

_TIME_COLUMNS = {
    "users": "registered_at",
    "orders": "paid_at",
    "usage": "used_at",
    "refund_requests": "requested_at",
    "labels": "labeled_at",
}
# (entity, column, where a request's value comes from: its own field or its order's)
_ENTITIES = (
    ("users", "user_id", "request"),
    ("devices", "device_id", "request"),
    ("IPs", "ip", "request"),
    ("payment accounts", "payment_account", "order"),
    ("sellers", "seller_id", "order"),
    ("products", "product_id", "order"),
)
_ORDER_LINKS = ("seller_id", "product_id", "payment_account", "device_id", "ip")
_REQUEST_LINKS = ("device_id", "ip")
_NO_SOURCE = "(none)"


@dataclass(frozen=True)
class TableFigures:
    """One table: rows and the span of its time column (ISO 8601, UTC)."""

    name: str
    present: bool
    rows: int
    time_column: str | None
    first: str | None
    last: str | None


@dataclass(frozen=True)
class CurrencyFigures:
    """Orders per currency, and whether the rates table covers them as ingest requires."""

    orders: dict[str, int]
    without_currency: int
    rated: tuple[str, ...]
    unrated: tuple[str, ...]
    problem: str | None


@dataclass(frozen=True)
class SourceFigures:
    """Verdicts of one source (``all`` for every source together).

    Delays run from a request to this source's first verdict on it, in days; a change
    is a verdict that says otherwise than the latest earlier verdict on the request.
    """

    source: str
    verdicts: int
    requests: int
    abuse_share: float | None
    delay_median_days: float | None
    delay_p90_days: float | None
    delay_max_days: float | None
    changes: int
    change_share: float | None


@dataclass(frozen=True)
class LabelFigures:
    """Coverage of the refund requests by verdicts, overall and by source."""

    requests: int
    labelled: int
    coverage: float | None
    abuse: int
    honest: int
    abuse_share: float | None
    overall: SourceFigures
    by_source: tuple[SourceFigures, ...]
    last_verdict: str | None
    activity_end: str | None
    days_without_verdicts_at_end: float | None


@dataclass(frozen=True)
class WeekFigures:
    """Refund requests of one week (Monday to Sunday, UTC) and their verdicts as known."""

    week: str
    requests: int
    labelled: int
    abuse: int
    abuse_rate: float | None


@dataclass(frozen=True)
class EntityFigures:
    """Distinct values of one entity over orders and requests, and the busiest one (most
    refund requests, then most orders)."""

    entity: str
    column: str
    distinct: int
    busiest: str | None
    busiest_orders: int
    busiest_requests: int
    busiest_share: float | None


@dataclass(frozen=True)
class RowShare:
    """How many rows of ``table`` are such, out of ``of``."""

    what: str
    table: str
    rows: int
    of: int
    share: float | None


@dataclass(frozen=True)
class FeatureSignal:
    """One feature alone against the latest verdict."""

    name: str
    kind: str
    auc: float | None
    missing_share: float
    distinct: int
    verdict: str | None


@dataclass(frozen=True)
class FeatureFigures:
    """Features of the most recent labelled requests (``sampled`` of ``labelled``)."""

    labelled: int
    sampled: int
    abuse: int
    honest: int
    method: str
    signals: tuple[FeatureSignal, ...]

    @property
    def leaks(self) -> list[FeatureSignal]:
        return [s for s in self.signals if s.verdict == LEAK]

    @property
    def empty(self) -> list[FeatureSignal]:
        return [s for s in self.signals if s.verdict == NOTHING]

    def strongest(self, count: int = 10) -> list[FeatureSignal]:
        """The features furthest from chance, by |AUC - 0.5|."""
        scored = [s for s in self.signals if s.auc is not None and s.verdict != NOTHING]
        scored.sort(key=lambda s: (-abs((s.auc or 0.5) - 0.5), s.name))
        return scored[:count]


@dataclass(frozen=True)
class DataCheck:
    """Every figure of the report; ``render`` writes it, ``as_dict`` serialises it."""

    until: str | None
    data_end: str | None
    tables: tuple[TableFigures, ...]
    currencies: CurrencyFigures
    labels: LabelFigures
    weeks: tuple[WeekFigures, ...]
    entities: tuple[EntityFigures, ...]
    refused: tuple[RowShare, ...]
    odd: tuple[RowShare, ...]
    missing: tuple[RowShare, ...]
    features: FeatureFigures
    warnings: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """The figures as plain JSON-ready data (missing numbers are None)."""
        data = asdict(self)
        data["features"]["leaks"] = [s.name for s in self.features.leaks]
        data["features"]["carry_nothing"] = [s.name for s in self.features.empty]
        data["features"]["strongest"] = [s.name for s in self.features.strongest()]
        return data


def check_dataset(
    tables: Mapping[str, pd.DataFrame],
    until: datetime | str | int | None = None,
    *,
    sample: int = FEATURE_SAMPLE,
) -> DataCheck:
    """Profile ``tables`` (``read_dataset`` output) as known before ``until`` (default:
    everything). See the module docstring for what is measured.

    >>> from riskmodel.dataset import read_dataset
    >>> check_dataset(read_dataset("data/sample")).labels.requests     # doctest: +SKIP
    1267
    """
    cutoff = to_micros(until)
    present = {name for name in TABLES if name in tables}
    full = {name: tables[name] if name in tables else _empty(name) for name in TABLES}
    if cutoff is not None:
        known = as_of(History.from_tables(full), cutoff)
        full = {name: getattr(known, name) for name in _TIME_COLUMNS} | {"rates": full["rates"]}
    verdicts = latest_labels(full["labels"])
    requests = full["refund_requests"]
    label_figures = _labels(full, verdicts)
    weeks = _weeks(requests, verdicts)
    entities = _entities(full["orders"], requests)
    refused = _refused(full, present)
    odd = _odd(full)
    missing = _missing(full["orders"], requests)
    currencies = _currencies(full["orders"], full["rates"])
    feature_figures = _features(full, verdicts, sample)
    ends = [_max(full[t][c]) for t, c in _TIME_COLUMNS.items() if t != "users"]
    data_end = max((e for e in ends if e is not None), default=None)
    figures = DataCheck(
        until=None if cutoff is None else iso(cutoff),
        data_end=None if data_end is None else iso(data_end),
        tables=tuple(_table(name, full[name], name in present) for name in TABLES),
        currencies=currencies,
        labels=label_figures,
        weeks=weeks,
        entities=entities,
        refused=refused,
        odd=odd,
        missing=missing,
        features=feature_figures,
        warnings=(),
    )
    return replace(figures, warnings=tuple(_warnings(figures)))


def single_feature_auc(values: pd.Series | np.ndarray, target: np.ndarray) -> float | None:
    """ROC AUC of one feature alone (None without both outcomes).

    Numbers are ranked as they are, a missing value as its own value below every other;
    a category (a pandas categorical or text) is scored by the share of abuse among the
    rows of its level, missing being a level of its own.

    >>> round(single_feature_auc(np.array([1.0, 2.0, np.nan, 4.0]), np.array([0, 1, 0, 1])), 2)
    1.0
    """
    target = np.asarray(target, dtype=bool)
    series = pd.Series(values).reset_index(drop=True)
    if not pd.api.types.is_numeric_dtype(series.dtype):  # categories, text
        codes = pd.factorize(series.astype(object), use_na_sentinel=False)[0]
        abuse = np.bincount(codes, weights=target.astype(float))
        rows = np.bincount(codes)
        scores = (abuse / rows)[codes]
    else:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        scores = np.where(np.isnan(numbers), -np.inf, numbers)
    return _rank_auc(scores, target)


def _rank_auc(scores: np.ndarray, target: np.ndarray) -> float | None:
    positives = int(target.sum())
    negatives = len(target) - positives
    if positives == 0 or negatives == 0:
        return None
    ranks = pd.Series(scores).rank(method="average").to_numpy(dtype=float)
    total = float(ranks[target].sum())
    return (total - positives * (positives + 1) / 2) / (positives * negatives)


def _empty(table: str) -> pd.DataFrame:
    return normalise(table, pd.DataFrame({c: [] for c in TABLES[table].required}))


def _numbers(series: pd.Series) -> np.ndarray:
    """A store column as float64 with NaN for null."""
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _max(series: pd.Series) -> int | None:
    values = _numbers(series)
    values = values[~np.isnan(values)]
    return int(values.max()) if len(values) else None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _table(name: str, frame: pd.DataFrame, present: bool) -> TableFigures:
    column = _TIME_COLUMNS.get(name)
    first = last = None
    if column is not None:
        times = _numbers(frame[column])
        times = times[~np.isnan(times)]
        if len(times):
            first, last = iso(times.min()), iso(times.max())
    return TableFigures(name, present, len(frame), column, first, last)


def _currencies(orders: pd.DataFrame, rates: pd.DataFrame) -> CurrencyFigures:
    counts = orders["currency"].dropna().value_counts()
    used = {str(c): int(n) for c, n in counts.items()}
    rated = tuple(sorted(str(c) for c in rates["currency"].dropna()))
    problem = None
    if rated:
        unrated = tuple(sorted(c for c in used if c not in rated))
        if unrated:
            problem = f"no rate for {', '.join(unrated)}: ingest refuses these orders"
    else:
        unrated = tuple(sorted(used)) if len(used) > 1 else ()
        if unrated:
            problem = "several currencies and no rates table: ingest refuses them"
    return CurrencyFigures(
        orders=dict(sorted(used.items(), key=lambda item: (-item[1], item[0]))),
        without_currency=int(orders["currency"].isna().sum()),
        rated=rated,
        unrated=unrated,
        problem=problem,
    )


def _delays(days: np.ndarray) -> tuple[float | None, float | None, float | None]:
    if len(days) == 0:
        return None, None, None
    return (
        float(np.median(days)),
        float(np.percentile(days, 90)),
        float(days.max()),
    )


def _labels(tables: Mapping[str, pd.DataFrame], verdicts: pd.Series) -> LabelFigures:
    requests = tables["refund_requests"]
    labels = tables["labels"]
    ids = pd.Index(requests["request_id"].astype(object))
    known = verdicts[verdicts.index.isin(ids)]
    abuse = int(known.sum())
    frame = pd.DataFrame(
        {
            "request_id": labels["request_id"].astype(object),
            "labeled_at": _numbers(labels["labeled_at"]),
            "is_abuse": labels["is_abuse"].astype(bool).to_numpy(),
            "source": labels["source"].astype(object).fillna(_NO_SOURCE).to_numpy(),
        }
    ).sort_values(["request_id", "labeled_at"], kind="stable")
    previous = frame.groupby("request_id", sort=False)["is_abuse"].shift(1)
    frame["change"] = previous.notna().to_numpy() & (
        previous.to_numpy(dtype=object) != frame["is_abuse"].to_numpy(dtype=object)
    )
    asked = pd.Series(
        _numbers(requests["requested_at"]), index=requests["request_id"].astype(object)
    )
    frame["requested_at"] = asked.reindex(frame["request_id"].to_numpy()).to_numpy()

    def figures(name: str, rows: pd.DataFrame) -> SourceFigures:
        firsts = rows.dropna(subset=["requested_at"]).groupby("request_id", sort=False).head(1)
        days = ((firsts["labeled_at"] - firsts["requested_at"]) / DAY).to_numpy(dtype=float)
        median, p90, most = _delays(days)
        changes = int(rows["change"].sum())
        return SourceFigures(
            source=name,
            verdicts=len(rows),
            requests=int(rows["request_id"].nunique()),
            abuse_share=_share(int(rows["is_abuse"].sum()), len(rows)),
            delay_median_days=median,
            delay_p90_days=p90,
            delay_max_days=most,
            changes=changes,
            change_share=_share(changes, len(rows)),
        )

    sources = sorted(frame["source"].unique(), key=lambda s: (s == _NO_SOURCE, str(s)))
    by_source = tuple(figures(str(s), frame[frame["source"] == s]) for s in sources)
    activity = [_max(requests["requested_at"]), _max(tables["orders"]["paid_at"])]
    activity_end = max((a for a in activity if a is not None), default=None)
    last = _max(labels["labeled_at"])
    gap = None
    if activity_end is not None and last is not None:
        gap = max(0.0, (activity_end - last) / DAY)
    return LabelFigures(
        requests=len(requests),
        labelled=len(known),
        coverage=_share(len(known), len(requests)),
        abuse=abuse,
        honest=len(known) - abuse,
        abuse_share=_share(abuse, len(known)),
        overall=figures("all", frame),
        by_source=by_source,
        last_verdict=None if last is None else iso(last),
        activity_end=None if activity_end is None else iso(activity_end),
        days_without_verdicts_at_end=gap,
    )


_FIRST_MONDAY = 4 * DAY  # 1970-01-05, the first Monday after the epoch


def _weeks(requests: pd.DataFrame, verdicts: pd.Series) -> tuple[WeekFigures, ...]:
    if len(requests) == 0:
        return ()
    times = _numbers(requests["requested_at"]).astype(np.int64)
    week = (times - _FIRST_MONDAY) // WEEK  # weeks since the first Monday
    first = int(week.min())
    slot = week - first
    ids = requests["request_id"]
    labelled = ids.isin(verdicts.index).to_numpy(dtype=bool)
    abusive = ids.isin(verdicts.index[verdicts.to_numpy(dtype=bool)]).to_numpy(dtype=bool)
    size = int(slot.max()) + 1
    asked = np.bincount(slot, minlength=size).tolist()
    judged = np.bincount(slot, weights=labelled, minlength=size).astype(np.int64).tolist()
    abuse = np.bincount(slot, weights=abusive, minlength=size).astype(np.int64).tolist()
    return tuple(
        WeekFigures(
            iso(_FIRST_MONDAY + (first + i) * WEEK)[:10],
            asked[i],
            judged[i],
            abuse[i],
            _share(abuse[i], judged[i]),
        )
        for i in range(size)
    )


def _with_order(orders: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """The requests with their order's columns (``order_<name>``; null for an unknown order)."""
    theirs = orders.set_index("order_id")
    rows = theirs.reindex(requests["order_id"].astype(object).to_numpy())
    rows.columns = [f"order_{c}" for c in rows.columns]
    return pd.concat([requests.reset_index(drop=True), rows.reset_index(drop=True)], axis=1)


def _entities(orders: pd.DataFrame, requests: pd.DataFrame) -> tuple[EntityFigures, ...]:
    joined = _with_order(orders, requests)
    out = []
    for entity, column, origin in _ENTITIES:
        asked = joined[column if origin == "request" else f"order_{column}"].dropna()
        counts = pd.DataFrame(
            {
                "requests": asked.astype(str).value_counts(),
                "orders": orders[column].dropna().astype(str).value_counts(),
            }
        ).fillna(0)
        if len(counts) == 0:
            out.append(EntityFigures(entity, column, 0, None, 0, 0, None))
            continue
        ranked = counts.rename_axis("value").reset_index()
        ranked = ranked.sort_values(
            ["requests", "orders", "value"], ascending=[False, False, True], kind="stable"
        )
        busiest, orders_of, requests_of = ranked[["value", "orders", "requests"]].iloc[0]
        out.append(
            EntityFigures(
                entity=entity,
                column=column,
                distinct=len(ranked),
                busiest=str(busiest),
                busiest_orders=int(orders_of),
                busiest_requests=int(requests_of),
                busiest_share=_share(int(requests_of), len(requests)),
            )
        )
    return tuple(out)


def _count(what: str, table: str, mask: np.ndarray, of: int | None = None) -> RowShare:
    whole = len(mask) if of is None else of
    rows = int(mask.sum())
    return RowShare(what, table, rows, whole, _share(rows, whole))


def _refused(tables: Mapping[str, pd.DataFrame], present: set[str]) -> tuple[RowShare, ...]:
    """References ingest refuses, for the parents this directory holds (ingest would also
    look for them in the store)."""
    orders, usage = tables["orders"], tables["usage"]
    requests, labels = tables["refund_requests"], tables["labels"]
    out = []
    if "users" in present and "orders" in present:
        unknown = ~orders["user_id"].isin(tables["users"]["user_id"]).to_numpy(dtype=bool)
        out.append(_count("orders of an unknown user", "orders", unknown))
    if "orders" in present:
        kinds = orders.set_index("order_id")["product_type"]
        if "usage" in present:
            kind = kinds.reindex(usage["order_id"].astype(object).to_numpy())
            out.append(_count("usage of an unknown order", "usage", kind.isna().to_numpy()))
            other = kind.notna() & (kind != ProductType.MEMBERSHIP.value)
            out.append(_count("usage of an order not a membership", "usage", other.to_numpy()))
        if "refund_requests" in present:
            owner = orders.set_index("order_id")["user_id"]
            theirs = owner.reindex(requests["order_id"].astype(object).to_numpy())
            unknown = theirs.isna().to_numpy()
            out.append(_count("refund requests of an unknown order", "refund_requests", unknown))
            other = ~unknown & (theirs.to_numpy() != requests["user_id"].to_numpy())
            out.append(
                _count("refund requests by another user than the order's", "refund_requests", other)
            )
    if "refund_requests" in present and "labels" in present:
        unknown = ~labels["request_id"].isin(requests["request_id"]).to_numpy(dtype=bool)
        out.append(_count("verdicts on an unknown refund request", "labels", unknown))
    return tuple(out)


def _odd(tables: Mapping[str, pd.DataFrame]) -> tuple[RowShare, ...]:
    orders, usage = tables["orders"], tables["usage"]
    requests, labels = tables["refund_requests"], tables["labels"]
    paid = _numbers(orders["paid_at"])
    membership = (orders["product_type"] == ProductType.MEMBERSHIP.value).to_numpy(dtype=bool)
    service_days = _numbers(orders["service_days"])
    out = [
        _count(
            "orders delivered before payment",
            "orders",
            _numbers(orders["delivered_at"]) < paid,
        ),
        _count(
            "orders redeemed or credited before payment",
            "orders",
            _numbers(orders["redeemed_at"]) < paid,
        ),
        _count(
            "memberships without service_days",
            "orders",
            membership & np.isnan(service_days),
            of=int(membership.sum()),
        ),
    ]
    by_order = orders.set_index("order_id")
    used = _numbers(usage["used_at"])
    their = by_order.reindex(usage["order_id"].astype(object).to_numpy())
    start = _numbers(their["paid_at"])
    end = start + _numbers(their["service_days"]) * DAY
    outside = (used < start) | (used >= end)
    out.append(_count("usage days outside the service period", "usage", outside))
    days = usage.groupby("order_id").size()
    limit = by_order["service_days"].reindex(days.index)
    over = (days.to_numpy(dtype=float) > _numbers(limit)).sum()
    out.append(
        RowShare(
            "memberships used on more days than service_days",
            "orders",
            int(over),
            int(membership.sum()),
            _share(int(over), int(membership.sum())),
        )
    )
    joined = _with_order(orders, requests)
    asked = _numbers(joined["requested_at"])
    out.append(
        _count(
            "refund requests before their order's payment",
            "refund_requests",
            asked < _numbers(joined["order_paid_at"]),
        )
    )
    out.append(
        _count(
            "refund requests asking more than the order's amount",
            "refund_requests",
            _numbers(joined["amount"]) > _numbers(joined["order_amount"]),
        )
    )
    requested = pd.Series(asked, index=requests["request_id"].astype(object).to_numpy())
    before = _numbers(labels["labeled_at"]) < requested.reindex(
        labels["request_id"].astype(object).to_numpy()
    ).to_numpy(dtype=float)
    out.append(_count("verdicts dated before their request", "labels", before))
    return tuple(out)


def _missing(orders: pd.DataFrame, requests: pd.DataFrame) -> tuple[RowShare, ...]:
    out = [
        _count(f"orders without {c}", "orders", orders[c].isna().to_numpy()) for c in _ORDER_LINKS
    ]
    out += [
        _count(f"refund requests without {c}", "refund_requests", requests[c].isna().to_numpy())
        for c in _REQUEST_LINKS
    ]
    return tuple(out)


def _features(
    tables: Mapping[str, pd.DataFrame], verdicts: pd.Series, sample: int
) -> FeatureFigures:
    requests = tables["refund_requests"]
    labelled = requests[requests["request_id"].isin(verdicts.index).to_numpy(dtype=bool)]
    order = np.argsort(-_numbers(labelled["requested_at"]), kind="stable")
    chosen = labelled.iloc[order[:sample]].reset_index(drop=True)
    target = verdicts.reindex(chosen["request_id"].astype(object).to_numpy()).to_numpy(dtype=bool)
    abuse = int(target.sum())
    signals: list[FeatureSignal] = []
    if len(chosen):
        names = features.model_features()
        history = History.from_tables({name: tables[name] for name in _TIME_COLUMNS})
        table = features.build_features(history, chosen, names)
        for name in names:
            signals.append(_signal(name, table[name], target))
    return FeatureFigures(
        labelled=len(labelled),
        sampled=len(chosen),
        abuse=abuse,
        honest=len(chosen) - abuse,
        method=NAN_RULE,
        signals=tuple(signals),
    )


def _signal(name: str, values: pd.Series, target: np.ndarray) -> FeatureSignal:
    kind = features.CATALOG[name].type.value
    missing = float(values.isna().mean()) if len(values) else 0.0
    distinct = int(values.nunique(dropna=False))
    auc = single_feature_auc(values, target)
    verdict = None
    if distinct <= 1:
        verdict = NOTHING
    elif auc is not None and (auc >= LEAK_AUC or auc <= 1 - LEAK_AUC):
        verdict = LEAK
    return FeatureSignal(name, kind, auc, missing, distinct, verdict)


# --- warnings ---------------------------------------------------------------------------


def _warnings(check: DataCheck) -> list[str]:
    out: list[str] = []
    labels = check.labels
    if labels.requests == 0:
        out.append("There are no refund requests: there is nothing to train on.")
    elif labels.labelled == 0:
        out.append(
            "No refund request has a verdict: a model learns from verdicts; add the labels table."
        )
    elif labels.abuse < MIN_ABUSE_VERDICTS:
        out.append(
            f"Only {labels.abuse} refund requests have an abuse verdict: too few to train on "
            f"(at least {MIN_ABUSE_VERDICTS}). Export a longer period or more verdicts."
        )
    gap = labels.days_without_verdicts_at_end
    if labels.requests and labels.last_verdict and gap is not None and gap >= LABEL_GAP_DAYS:
        last = labels.last_verdict[:10]
        out.append(
            f"Verdicts stop {gap:.0f} days before the data ends (the last on {last}): recent "
            f"verdicts are missing from the export, and recent requests would all look honest. "
            f"Add them, or train with --until {last}."
        )
    out += _week_warnings(check.weeks)
    out += [
        f"One of the {e.entity} ({e.busiest}) is behind {e.busiest_share:.0%} of the refund "
        f"requests: {_BUSY[e.column]}"
        for e in check.entities
        if e.busiest_share is not None and e.busiest_share > BUSY_SHARE
    ]
    refused = [r for r in check.refused if r.rows]
    if refused:
        listed = "; ".join(f"{r.rows:,} {r.what}" for r in refused)
        out.append(
            f"Ingest will refuse this export unless the store already holds the rows these "
            f"point at: {listed}. Export the missing rows or leave these out."
        )
    if check.currencies.problem:
        out.append(f"Currencies: {check.currencies.problem}. Add a rates file (currency, rate).")
    out += [
        f"{odd.what[0].upper()}{odd.what[1:]}: {odd.rows:,} ({odd.share:.1%}). {_ODD[odd.what]}"
        for odd in check.odd
        if odd.share is not None and odd.share > ODD_SHARE
    ]
    for gone in check.missing:
        if gone.share is not None and gone.share > MISSING_SHARE:
            out.append(
                f"{gone.share:.0%} of {gone.what.replace(' without ', ' lack ')}: the features "
                f"of that link are unknown there. Export it if the source system has it."
            )
    leaks = check.features.leaks
    if leaks:
        names = ", ".join(s.name for s in leaks)
        out.append(
            f"{len(leaks)} feature(s) tell abuse almost perfectly on their own ({names}): check "
            f"that each is known at request time (not filled in after the verdict) before training."
        )
    empty = [s.name for s in check.features.empty if s.name not in _DECISION_FEATURES]
    if empty:
        out.append(
            f"{len(empty)} feature(s) carry nothing in this data (one value or none): "
            f"{_some(empty)}. The model can learn nothing from them; if one should vary "
            f"(a link, a reason, a product type), check the export has its column filled."
        )
    return out


def _some(names: Sequence[str], most: int = 8) -> str:
    """Up to ``most`` names, then how many more (the features section lists them all)."""
    more = f" and {len(names) - most} more (listed under Features)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


_SHARED = (
    "shared or public (an office, a mobile carrier's gateway, a platform's own account): "
    "counts of users and refunds on it are high for everyone on it, so its features tell "
    "little. Check it; if it is not one person's, leave it out of the export (null)."
)
_BUSY = {
    "user_id": "a test or internal account, or one id standing for many buyers (a guest "
    "checkout). Check it and leave it out if it is not a real buyer.",
    "device_id": _SHARED,
    "ip": _SHARED,
    "payment_account": _SHARED,
    "seller_id": "a huge seller, whose refund counts then describe most of the marketplace. "
    "Fine if it really is your main supplier; check it is not a placeholder id.",
    "product_id": "a best seller, whose refund counts then describe most of the marketplace. "
    "Fine if it really is; check it is not a placeholder id.",
}
_DECISION_FEATURES = frozenset(
    name
    for name, feature in features.CATALOG.items()
    if isinstance(feature, Aggregate) and feature.source is Source.DECISIONS
)
"""Counts of the service's own earlier decisions: always 0 in an export, never a warning."""
_UTC = "Timestamps must be UTC (or carry their offset)."
_ODD = {
    "orders delivered before payment": "A code sold already delivered happens; many such "
    "orders usually mean paid_at is another moment (settlement, not payment) or a time-zone "
    f"shift. {_UTC}",
    "orders redeemed or credited before payment": "A code sold already used is true now and "
    "then (and a strong sign); many mean redeemed_at or paid_at is another moment or in "
    f"another time zone. {_UTC}",
    "memberships without service_days": "Their prorated entitlement is unknown, so "
    "over-claimed days cannot be measured: export the membership's length in days.",
    "usage days outside the service period": "Check used_at is in UTC and service_days is "
    "the membership's length in days.",
    "memberships used on more days than service_days": "Check service_days is the "
    "membership's length in days and that usage has one row per day used.",
    "refund requests before their order's payment": "paid_at may be when the payment "
    f"settled rather than when it was made. {_UTC}",
    "refund requests asking more than the order's amount": "A duplicate charge can do it; "
    "many mean the two amounts are in different units or currencies (they must match).",
    "verdicts dated before their request": "labeled_at is probably when the case was opened, "
    "or in another time zone; training reads a verdict from labeled_at on, so it must be "
    "when the verdict became known.",
}


def _week_warnings(weeks: Sequence[WeekFigures]) -> list[str]:
    out: list[str] = []
    judged = [i for i, w in enumerate(weeks) if w.labelled]
    if judged:
        gaps = [
            w.week
            for w in weeks[judged[0] : judged[-1] + 1]
            if w.labelled == 0 and w.requests >= 10
        ]
        if gaps:
            out.append(
                f"No verdict on the requests of the weeks of {', '.join(gaps)}, though weeks "
                f"before and after have some: a gap in the labelling, which would teach the "
                f"model those requests were honest."
            )
    labelled = [w for w in weeks if w.labelled]
    total = sum(w.labelled for w in labelled)
    if total >= 60:
        running, half = 0, 0
        for half, w in enumerate(labelled, start=1):  # noqa: B007 (the index is the result)
            running += w.labelled
            if running >= total / 2:
                break
        early, late = labelled[:half], labelled[half:]
        rates = [
            sum(w.abuse for w in part) / max(sum(w.labelled for w in part), 1)
            for part in (early, late)
        ]
        enough = all(sum(w.labelled for w in part) >= 30 for part in (early, late))
        if enough and rates[0] > 0 and not 0.5 <= rates[1] / rates[0] <= 2:
            out.append(
                f"The abuse rate among verdicts moved from {rates[0]:.0%} (to the week of "
                f"{early[-1].week}) to {rates[1]:.0%} after: abuse changed, or what gets reviewed "
                f"did. Check the weekly table; train on the recent period if the old one no "
                f"longer applies."
            )
    return out


# --- the report -------------------------------------------------------------------------


def _pct(value: float | None, places: int = 1) -> str:
    return "-" if value is None else f"{value:.{places}%}"


def _num(value: float | None, places: int = 1) -> str:
    if value is not None and 0 < abs(value) < 0.1 and places == 1:
        places = 2  # an hour is 0.04 days: not 0.0
    return "-" if value is None else f"{value:,.{places}f}"


def _when(value: str | None) -> str:
    return "-" if value is None else value[:16].replace("T", " ")


def render(check: DataCheck) -> str:
    """The report as text: one section per part of ``check``, warnings last."""
    scope = f"as known before {_when(check.until)}" if check.until else "everything in it"
    lines = [f"Data check ({scope}; data ends {_when(check.data_end)})"]
    for section in (
        _tables_section,
        _labels_section,
        _weeks_section,
        _entities_section,
        _rows_section,
        _features_section,
        _warnings_section,
    ):
        lines += ["", *section(check)]
    return "\n".join(lines) + "\n"


def _tables_section(check: DataCheck) -> list[str]:
    out = ["Tables", f"  {'table':<16} {'rows':>10}  {'first':<16}  last"]
    for t in check.tables:
        if t.present:
            out.append(f"  {t.name:<16} {t.rows:>10,}  {_when(t.first):<16}  {_when(t.last)}")
        else:
            out.append(f"  {t.name:<16} {'(absent)':>10}")
    cur = check.currencies
    if not cur.orders:
        return [*out, "  currencies of orders: none given"]
    listed = ", ".join(f"{c} {n:,}" for c, n in cur.orders.items())
    without = f"; {cur.without_currency:,} orders without" if cur.without_currency else ""
    out.append(f"  currencies of orders: {listed}{without}")
    if cur.problem:
        out.append(f"  rates: {cur.problem}")
    elif cur.rated:
        out.append(f"  rates: cover every currency ({', '.join(cur.rated)})")
    else:
        out.append("  rates: none needed (one currency)")
    return out


def _labels_section(check: DataCheck) -> list[str]:
    lab = check.labels
    out = [
        "Labels",
        f"  {lab.requests:,} refund requests, {lab.labelled:,} with a verdict "
        f"({_pct(lab.coverage)}); abuse in {lab.abuse:,} of them ({_pct(lab.abuse_share)}), "
        f"honest in {lab.honest:,}",
        f"  last verdict {_when(lab.last_verdict)}, "
        f"last request or order {_when(lab.activity_end)}",
        "  days from a request to the source's first verdict on it:",
        f"  {'source':<14} {'verdicts':>9} {'requests':>9} {'abuse':>7} {'median':>8} "
        f"{'p90':>8} {'max':>8} {'changes':>8}",
    ]
    for s in (lab.overall, *lab.by_source):
        out.append(
            f"  {s.source:<14} {s.verdicts:>9,} {s.requests:>9,} {_pct(s.abuse_share, 0):>7} "
            f"{_num(s.delay_median_days):>8} {_num(s.delay_p90_days):>8} "
            f"{_num(s.delay_max_days):>8} {_pct(s.change_share):>8}"
        )
    out.append("  (changes: verdicts that say otherwise than an earlier verdict on the request)")
    return out


def _weeks_section(check: DataCheck) -> list[str]:
    out = [
        "Abuse over time (by week of request; verdicts as known)",
        f"  {'week of':<12} {'requests':>9} {'verdicts':>9} {'abuse':>7} {'abuse rate':>11}",
    ]
    for w in check.weeks:
        out.append(
            f"  {w.week:<12} {w.requests:>9,} {w.labelled:>9,} {w.abuse:>7,} "
            f"{_pct(w.abuse_rate, 0):>11}"
        )
    p90 = check.labels.overall.delay_p90_days
    if p90 is not None and check.weeks:
        out.append(
            f"  (90% of first verdicts come within {p90:.0f} days of the request: the latest "
            f"weeks' verdicts are still arriving)"
        )
    return out


def _entities_section(check: DataCheck) -> list[str]:
    out = [
        "Entities (the busiest: most refund requests)",
        f"  {'entity':<18} {'distinct':>9}  {'busiest':<20} {'orders':>7} {'requests':>9} "
        f"{'share':>7}",
    ]
    for e in check.entities:
        out.append(
            f"  {e.entity:<18} {e.distinct:>9,}  {e.busiest or '-':<20} {e.busiest_orders:>7,} "
            f"{e.busiest_requests:>9,} {_pct(e.busiest_share):>7}"
        )
    return out


def _rows_section(check: DataCheck) -> list[str]:
    out = []
    refused = [r for r in check.refused if r.rows]
    if refused:
        out += ["Rows ingest refuses (unless the store holds what they point at)"]
        out += [*_row_lines(refused), ""]
    out += ["Odd but true (ingest keeps them)", *_row_lines(check.odd), ""]
    return [*out, "Missing links", *_row_lines(check.missing)]


def _row_lines(rows: Sequence[RowShare]) -> list[str]:
    out = [f"  {'':<52} {'rows':>9} {'of':>10} {'share':>7}"]
    out += [f"  {r.what:<52} {r.rows:>9,} {r.of:>10,} {_pct(r.share, 2):>7}" for r in rows]
    return out


def _features_section(check: DataCheck) -> list[str]:
    feats = check.features
    out = [
        f"Features of {feats.sampled:,} labelled requests ({feats.abuse:,} abuse, "
        f"{feats.honest:,} honest; the most recent of {feats.labelled:,})",
        *textwrap.wrap(f"AUC: {feats.method}", 96, initial_indent="  ", subsequent_indent="  "),
    ]
    if not feats.signals:
        return [*out, "  none computed: no labelled request"]
    leaks = feats.leaks
    bound = f">= {LEAK_AUC:g} or <= {1 - LEAK_AUC:.2f}"
    out.append(f"  look like leaks (AUC {bound}): {len(leaks) or 'none'}")
    width = max(len(f.name) for f in feats.signals)
    out += [f"    {f.name:<{width}} AUC {_num(f.auc, 3)}: {LEAK}" for f in leaks]
    empty = feats.empty
    out.append(f"  carry nothing here (one value or none): {len(empty) or 'none'}")
    out += [f"    {f.name}" for f in empty]
    out += ["  strongest alone (by |AUC - 0.5|):"]
    out += [f"    {'feature':<{width}} {'AUC':>6} {'missing':>8}"]
    out += [
        f"    {f.name:<{width}} {_num(f.auc, 3):>6} {_pct(f.missing_share, 0):>8}"
        for f in feats.strongest()
    ]
    return out


def _warnings_section(check: DataCheck) -> list[str]:
    out = ["Warnings"]
    for text in check.warnings:
        out += textwrap.wrap(text, 96, initial_indent="  - ", subsequent_indent="    ")
    return out if check.warnings else [*out, "  none"]
