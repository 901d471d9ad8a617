"""The offline engine: every feature for many requests at once, each as of its request.

Vectorised with numpy. The events of a (source, entity) stream are sorted once by a
composite integer key ``entity_code * (T + 1) + time_rank`` (time ranks among the
stream's distinct times, so the composite never overflows). One ``searchsorted`` per
window then finds, for every request, how many events of its entity fall before its time
and before the start of its window (needles are sorted first: binary searches in order
are an order of magnitude faster than at random). Counts and sums are differences of
prefix sums, in integer cents so exact; a filter is a prefix sum of its indicator over
the same order; "hours since last" reads the latest matching event before the request.

    >>> from features.offline import build_features
    >>> from features.history import History
    >>> build_features(History.empty()).shape[0]
    0
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import CATALOG
from features.history import (
    Events,
    History,
    Sources,
    dense_rank,
    request_entity,
    request_frame,
)
from features.spec import (
    Agg,
    Aggregate,
    Computed,
    Context,
    Entity,
    Feature,
    Source,
    Type,
    window_start,
)
from riskmodel.units import CENTS, HOUR

__all__ = [
    "FeatureBuilder",
    "aggregate_columns",
    "build_features",
    "compute_columns",
    "computed_columns",
    "feature_table",
]


class FeatureBuilder(Protocol):
    """What builds a feature table: ``build_features`` on this machine, or
    ``features.dask.OnCluster`` on a Dask cluster (same answer, elsewhere)."""

    def __call__(
        self,
        history: History,
        requests: pd.DataFrame | None = None,
        names: Sequence[str] | None = None,
        *,
        context: Sequence[str] = (),
    ) -> pd.DataFrame: ...


def build_features(
    history: History,
    requests: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    *,
    context: Sequence[str] = (),
) -> pd.DataFrame:
    """Features of ``requests`` (default: every refund request of ``history``).

    Returns one row per request, indexed by ``request_id`` in the requests' order, with
    one column per feature (catalogue order): float64 for numbers (NaN is null), and
    pandas categoricals with the declared levels for categories. ``context`` adds columns
    of the request frame as they are, after the features (``order_service_days``,
    ``order_payment_account``, ``user_registered_at``...): the engine's inputs that are
    not features, without a second join of the requests to their orders.
    """
    if requests is None:
        requests = history.refund_requests
    chosen = list(CATALOG) if names is None else list(names)
    columns = compute_columns(history, requests, chosen)
    return feature_table(columns, chosen, context)


def feature_table(
    columns: Mapping[str, np.ndarray], chosen: Sequence[str], context: Sequence[str] = ()
) -> pd.DataFrame:
    """The table ``build_features`` returns, from the columns of ``compute_columns`` (the
    request frame, its ``request_id`` included, and the features)."""
    unknown = [name for name in context if name not in columns]
    if unknown:
        raise KeyError(f"not a column of the request frame: {', '.join(unknown)}")
    frame = pd.DataFrame({n: columns[n] for n in [*chosen, *context]})
    for name in chosen:
        feature = CATALOG[name]
        if feature.type is Type.CATEGORY and isinstance(feature, Context):
            # A value outside the declared levels (a new payment method, say) is unknown.
            known = frame[name].where(frame[name].isin(feature.levels))
            frame[name] = pd.Categorical(known, categories=list(feature.levels))
    ids = np.asarray(columns["request_id"], dtype=object)
    frame.index = pd.Index(ids, name="request_id")
    return frame


def compute_columns(
    history: History, requests: pd.DataFrame, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The request frame plus the named features (and what they need), as numpy columns."""
    sources = Sources(history)
    columns = request_frame(requests, history, sources.order_rows(requests))
    wanted = _with_inputs(names)
    aggregates = [f for f in wanted if isinstance(f, Aggregate)]
    columns.update(aggregate_columns(sources, columns, aggregates))
    return computed_columns(columns, wanted)


def aggregate_columns(
    sources: Sources,
    columns: Mapping[str, np.ndarray],
    aggregates: Sequence[Aggregate],
    *,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """The point-in-time aggregates of the requests in ``columns`` (``requested_at`` and
    each aggregate's entity, as ``request_frame`` names them) over ``sources``' events.

    The kernel both engines of many requests run: ``compute_columns`` on a whole history,
    ``features.dask`` on each partition of one entity's events and requests.
    """
    times = columns["requested_at"].astype(np.int64)
    by_time = np.argsort(times)  # one order of the requests for every stream
    groups = _groups(list(aggregates))
    keys = {e: _Keys(request_entity(columns, e), times) for e in {e for _, e in groups}}

    def fold(source: Source) -> dict[str, np.ndarray]:
        """Every aggregate of one source (its time ranking is its own: no shared state)."""
        out: dict[str, np.ndarray] = {}
        for (of, entity), group in groups.items():
            if of is not source:
                continue
            needs = {a.where[0] for a in group if a.where} | {a.of for a in group if a.of}
            events = sources.events(source, entity, sorted(needs), keys[entity].values)
            stream = _Stream(events, keys[entity], times, by_time)
            for aggregate in group:
                out[aggregate.name] = stream.aggregate(aggregate)
        return out

    # Sources in parallel threads: sorting, hashing and searching release the GIL, so
    # two cores make it about half again as fast. Largest sources first.
    order = sorted({s for s, _ in groups}, key=lambda s: _WEIGHT.get(s, 0), reverse=True)
    out: dict[str, np.ndarray] = {}
    workers = min(_THREADS if threads is None else threads, len(order) or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(fold, order):
            out.update(result)
    return out


def computed_columns(
    columns: dict[str, np.ndarray], wanted: Sequence[Feature]
) -> dict[str, np.ndarray]:
    """``columns`` with every context, ratio and derived feature of ``wanted`` added, in
    catalogue order (each reads only features before it)."""
    for feature in wanted:
        if isinstance(feature, Computed):
            columns[feature.name] = feature.compute(columns)
    return columns


# Two: each thread holds a source's sorted streams, and two kept 1M requests over 10M orders
# under 7 GB; more would trade memory for little on the machines this is sized for.
_THREADS = min(2, os.cpu_count() or 1)
# Rough work per source on a marketplace's history, to start the largest first.
_WEIGHT = {
    Source.SIGHTINGS: 6,
    Source.ORDERS: 5,
    Source.USAGE: 4,
    Source.REFUNDS: 3,
    Source.ABUSE: 2,
    Source.VERDICTS: 2,
    Source.DECISIONS: 1,
    Source.OUTCOMES: 1,
}


def _with_inputs(names: Sequence[str]) -> list[Feature]:
    """The features named and, before them, every feature they read (catalogue order)."""
    needed: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in needed or name not in CATALOG:
            continue
        needed.add(name)
        stack.extend(CATALOG[name].inputs)
    return [f for n, f in CATALOG.items() if n in needed]


def _groups(features: list[Aggregate]) -> dict[tuple[Source, Entity], list[Aggregate]]:
    groups: dict[tuple[Source, Entity], list[Aggregate]] = {}
    for feature in features:
        groups.setdefault((feature.source, feature.entity), []).append(feature)
    return groups


class _Keys:
    """The distinct values one entity takes among the requests, and each request's code.

    Shared by every stream of the entity. An event whose key no request has cannot change
    any feature, so streams drop such events before sorting anything.
    """

    def __init__(self, keys: np.ndarray, times: np.ndarray) -> None:
        asked = pa.array(keys, type=pa.string(), from_pandas=True)
        self.values = pc.unique(asked.drop_null())
        code = pc.index_in(asked, value_set=self.values).to_numpy(zero_copy_only=False)
        self.present = ~np.isnan(code)
        # A request without the entity gets a code no event has: it finds nothing.
        self.query = np.where(self.present, code, len(self.values)).astype(np.int64)
        # Sorted by (key, time), every window's needles come out already in order.
        self.by_key = np.lexsort((times, self.query))


NOW = 0
"""``_Stream.position``'s bound at the request's own time (a window is never empty)."""


class _Stream:
    """Events of one (source, entity), sorted, and the requests that query them."""

    def __init__(
        self,
        events: Events,
        keys: _Keys,
        times: np.ndarray,
        by_time: np.ndarray,
    ) -> None:
        codes = events.code
        query = keys.query
        self.present = keys.present
        self.distinct_times, time_rank = events.distinct_times, events.time_rank
        self.span = len(self.distinct_times) + 1
        composite = codes * self.span + time_rank
        # Events tied on (key, time) are counted all or none by every aggregate, so their
        # order does not matter, and numpy's unstable sort is several times faster.
        self.order = np.argsort(composite)
        self.composite = composite[self.order]
        self.times = events.time[self.order]
        self.values = events.value[self.order]
        self.codes = codes[self.order]
        self.events = events
        self.query = query
        self.t = times
        self.by_time = by_time
        self.by_key = keys.by_key
        self._positions: dict[int | None, np.ndarray] = {}
        self._prefix: dict[tuple[str, tuple[str, str] | None], np.ndarray] = {}

    def position(self, window: int | None) -> np.ndarray:
        """Per request: events ordered before (its key, its window's start); None: its
        key's start; ``NOW``: its own time."""
        if window not in self._positions:
            if window is None:
                needles = self.query * self.span
            else:
                times = self.t[self.by_time]
                # Day-aligned starts keep the requests' order by time.
                bound = times if window == NOW else window_start(times, window)
                rank = np.empty(len(self.t), dtype=np.int64)
                rank[self.by_time] = np.searchsorted(self.distinct_times, bound)
                needles = self.query * self.span + rank
            found = np.empty(len(needles), dtype=np.int64)
            found[self.by_key] = np.searchsorted(self.composite, needles[self.by_key])
            self._positions[window] = found
        return self._positions[window]

    def _indicator(self, where: tuple[str, str] | None) -> np.ndarray | None:
        if where is None:
            return None
        column, wanted = where
        # A comparison, not a factorisation: filters test one value of a few.
        matched = self.events.attributes[column].eq(wanted).fillna(False)
        indicator: np.ndarray = matched.to_numpy(dtype=bool)[self.order]
        return indicator

    def prefix(self, kind: str, where: tuple[str, str] | None) -> np.ndarray:
        """Prefix sums of event counts ("count") or values ("sum") passing ``where``."""
        if (kind, where) not in self._prefix:
            base = np.ones(len(self.values), dtype=np.int64) if kind == "count" else self.values
            indicator = self._indicator(where)
            if indicator is not None:
                base = base * indicator
            self._prefix[kind, where] = np.concatenate([[0], np.cumsum(base, dtype=np.int64)])
        return self._prefix[kind, where]

    def aggregate(self, feature: Aggregate) -> np.ndarray:
        hi = self.position(NOW)
        lo = self.position(feature.window)
        if len(self.times) == 0:
            empty = feature.agg in (Agg.HOURS_SINCE_LAST, Agg.MAX)
            result = np.full(len(hi), np.nan if empty else 0.0)
        elif feature.agg in (Agg.COUNT, Agg.SUM):
            prefix = self.prefix("count" if feature.agg is Agg.COUNT else "sum", feature.where)
            result = (prefix[hi] - prefix[lo]).astype(float)
            if feature.in_currency:
                result = result / CENTS
        elif feature.agg is Agg.HOURS_SINCE_LAST:
            result = self._hours_since_last(feature, lo, hi)
        elif feature.agg is Agg.MAX:
            result = self._prefix_max(lo, hi)
        else:
            result = self._distinct(feature, lo, hi)
        result[~self.present] = np.nan
        return result

    def _hours_since_last(self, feature: Aggregate, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        index = np.arange(len(self.times))
        indicator = self._indicator(feature.where)
        marks = index if indicator is None else np.where(indicator, index, -1)
        latest = np.maximum.accumulate(marks)[np.maximum(hi - 1, 0)]
        found = (hi > lo) & (latest >= lo)
        last = self.times[np.maximum(latest, 0)]
        hours: np.ndarray = np.where(found, (self.t - last) / HOUR, np.nan)
        return hours

    def _prefix_max(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Largest value among a key's events before the request (whole history only)."""
        distinct, rank = dense_rank(self.values)
        span = len(distinct) + 1
        # Offsetting by the key keeps the running maximum from leaking across keys.
        running = np.maximum.accumulate(self.codes * span + rank)
        at = np.maximum(hi - 1, 0)
        best = running[at] - self.codes[at] * span
        out = np.full(len(hi), np.nan)
        has = hi > lo
        out[has] = distinct[best[has]]
        return out

    def _distinct(self, feature: Aggregate, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        assert feature.of is not None
        sizes = hi - lo
        query = np.repeat(np.arange(len(lo)), sizes)
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        rows = self.order[np.repeat(lo, sizes) + offsets]
        # Only the events inside some request's window are coded: a small part of a long
        # history, and hashing every device of 10M orders cost more than all the rest.
        value = pd.factorize(self.events.attributes[feature.of].take(rows))[0]  # null: -1
        keep = value >= 0
        span = int(value.max(initial=0)) + 1
        # Sort-based distinct: numpy's hash-based unique was ten times slower here.
        pairs = np.sort(query[keep] * span + value[keep])
        first = np.ones(len(pairs), dtype=bool)
        first[1:] = pairs[1:] != pairs[:-1]
        pairs = pairs[first]
        return np.bincount(pairs // span, minlength=len(lo)).astype(float)
