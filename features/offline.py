"""The offline engine: every feature for many requests at once, each as of its request.

Vectorised with numpy. For an aggregate, the events of its stream are sorted by (entity,
time) and given a composite integer key ``entity_code * (T + 1) + time_rank`` (time ranks
among the stream's distinct times, so the composite never overflows). One
``searchsorted`` then finds, for every request, how many events of its entity fall before
its time and before the start of its window; counts and sums are differences of prefix
sums (in integer cents, so exact), "hours since last" reads the event just before.

    >>> from features.offline import build_features
    >>> from features.history import History
    >>> build_features(History.empty()).shape[0]
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import CATALOG
from features.history import Events, History, request_entity, request_frame, source_events
from features.spec import HOUR, Agg, Aggregate, Context, Derived, Entity, Feature, Source, Type

__all__ = ["build_features", "compute_columns"]


def build_features(
    history: History,
    requests: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Features of ``requests`` (default: every refund request of ``history``).

    Returns one row per request, indexed by ``request_id`` in the requests' order, with
    one column per feature (catalogue order): float64 for numbers (NaN is null), and
    pandas categoricals with the declared levels for categories.
    """
    if requests is None:
        requests = history.refund_requests
    chosen = list(CATALOG) if names is None else list(names)
    columns = compute_columns(history, requests, chosen)
    frame = pd.DataFrame({n: columns[n] for n in chosen})
    for name in chosen:
        feature = CATALOG[name]
        if feature.type is Type.CATEGORY and isinstance(feature, Context):
            frame[name] = pd.Categorical(frame[name], categories=list(feature.levels))
    frame.index = pd.Index(requests["request_id"].to_numpy(dtype=object), name="request_id")
    return frame


def compute_columns(
    history: History, requests: pd.DataFrame, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The request frame plus the named features (and what they need), as numpy columns."""
    columns = request_frame(requests, history)
    wanted = _with_inputs(names)
    aggregates = [f for f in wanted if isinstance(f, Aggregate)]
    for (source, entity), group in _groups(aggregates).items():
        stream = _Stream(source_events(history, source, entity))
        keys = request_entity(columns, entity)
        for aggregate in group:
            columns[aggregate.name] = stream.aggregate(aggregate, keys, columns["requested_at"])
    for feature in wanted:
        if isinstance(feature, Context | Derived):
            columns[feature.name] = feature.compute(columns)
    return columns


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


@dataclass
class _Sorted:
    """Events of one stream (after a filter), sorted by composite (entity, time) key."""

    codes: np.ndarray
    times: np.ndarray
    values: np.ndarray
    ranks_of: np.ndarray  # sorted distinct times
    composite: np.ndarray
    prefix: np.ndarray  # prefix sums of values, with a leading 0
    order: np.ndarray  # positions in the filtered stream

    @classmethod
    def build(cls, codes: np.ndarray, times: np.ndarray, values: np.ndarray) -> _Sorted:
        order = np.lexsort((times, codes))
        codes, times, values = codes[order], times[order], values[order]
        distinct = np.unique(times)
        composite = codes * (len(distinct) + 1) + np.searchsorted(distinct, times)
        prefix = np.concatenate([[0], np.cumsum(values, dtype=np.int64)])
        return cls(codes, times, values, distinct, composite, prefix, order)

    def before(self, codes: np.ndarray, times: np.ndarray) -> np.ndarray:
        """For each (code, time): the number of events ordered before (code, time)."""
        ranks = np.searchsorted(self.ranks_of, times, side="left")
        return np.searchsorted(self.composite, codes * (len(self.ranks_of) + 1) + ranks)

    def start(self, codes: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.composite, codes * (len(self.ranks_of) + 1))


class _Stream:
    def __init__(self, events: Events) -> None:
        self.events = events
        self.codes, uniques = pd.factorize(events.key)
        self.index = pd.Index(uniques)
        self._sorted: dict[tuple[str, str] | None, _Sorted] = {}

    def sorted(self, where: tuple[str, str] | None) -> _Sorted:
        if where not in self._sorted:
            keep = (
                np.ones(len(self.codes), dtype=bool)
                if where is None
                else self.events.attributes[where[0]] == where[1]
            )
            built = _Sorted.build(
                self.codes[keep].astype(np.int64),
                self.events.time[keep],
                self.events.value[keep],
            )
            built.order = np.flatnonzero(keep)[built.order]
            self._sorted[where] = built
        return self._sorted[where]

    def aggregate(self, feature: Aggregate, keys: np.ndarray, times: np.ndarray) -> np.ndarray:
        present = pd.notna(keys)
        codes = np.full(len(keys), -1, dtype=np.int64)
        if present.any():
            codes[present] = self.index.get_indexer(keys[present])
        # A key never seen has no events: give it a code past every real one.
        codes[codes < 0] = len(self.index)
        t = times.astype(np.int64)
        s = self.sorted(feature.where)
        hi = s.before(codes, t)
        lo = s.start(codes) if feature.window is None else s.before(codes, t - feature.window)
        result = self._fold(feature, s, lo, hi, t)
        result[~present] = np.nan
        return result

    def _fold(
        self, feature: Aggregate, s: _Sorted, lo: np.ndarray, hi: np.ndarray, t: np.ndarray
    ) -> np.ndarray:
        if len(s.times) == 0:
            empty = feature.agg in (Agg.HOURS_SINCE_LAST, Agg.MAX)
            return np.full(len(hi), np.nan if empty else 0.0)
        if feature.agg is Agg.COUNT:
            count: np.ndarray = (hi - lo).astype(float)
            return count
        if feature.agg is Agg.SUM:
            total: np.ndarray = (s.prefix[hi] - s.prefix[lo]).astype(float)
            return total / 100 if feature.source in (Source.ORDERS, Source.REFUNDS) else total
        if feature.agg is Agg.HOURS_SINCE_LAST:
            last = s.times[np.maximum(hi - 1, 0)]
            hours: np.ndarray = np.where(hi > lo, (t - last) / HOUR, np.nan)
            return hours
        if feature.agg is Agg.MAX:
            return _prefix_max(s, lo, hi)
        return self._distinct(feature, s, lo, hi)

    def _distinct(
        self, feature: Aggregate, s: _Sorted, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        assert feature.of is not None
        of = self.events.attributes[feature.of][s.order]
        codes, _ = pd.factorize(of)  # null -> -1
        sizes = hi - lo
        query = np.repeat(np.arange(len(lo)), sizes)
        offsets = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        value = codes[np.repeat(lo, sizes) + offsets]
        keep = value >= 0
        pairs = np.unique(query[keep] * (int(codes.max(initial=0)) + 1) + value[keep])
        per_query = np.bincount(pairs // (int(codes.max(initial=0)) + 1), minlength=len(lo))
        return per_query.astype(float)


def _prefix_max(s: _Sorted, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Largest value among events [start of key, hi): lifetime windows only."""
    distinct, rank = np.unique(s.values, return_inverse=True)
    span = len(distinct) + 1
    # Offsetting by the key keeps the running maximum from leaking across keys.
    running = np.maximum.accumulate(s.codes * span + rank)
    has = hi > lo
    best = running[np.maximum(hi - 1, 0)] - s.codes[np.maximum(hi - 1, 0)] * span
    out = np.full(len(hi), np.nan)
    out[has] = distinct[best[has]]
    return out
