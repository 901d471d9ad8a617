"""Review service levels: what waits in each queue and for how long, and how many cases
were decided within their deadline, overall and per reviewer.

    >>> from riskmodel.store import open_store
    >>> levels = service_levels(open_store("sqlite://"), now=0)
    >>> levels.waiting, levels.decided.decided
    ([], 0)

The same figures are Prometheus gauges on ``/metrics`` (``LevelsCollector``), read at
scrape time and kept for ``CACHE_SECONDS``, so that scrapes every few seconds by several
Prometheus servers cost one query a while. Deadlines met are counted over the last
``WINDOW_DAYS`` of verdicts and appeal decisions (``outcomes`` of kind ``verdict`` and
``appeal``; ``late`` is recorded with each).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, case, func, select
from sqlalchemy.exc import DBAPIError

from riskmodel import units
from riskmodel.store.schema import outcomes
from serving.console.queue import Filters, open_cases

__all__ = [
    "CACHE_SECONDS",
    "WINDOW_DAYS",
    "Decided",
    "Levels",
    "LevelsCollector",
    "Waiting",
    "service_levels",
]

log = logging.getLogger("serving")

WINDOW_DAYS = 30
CACHE_SECONDS = 15.0


@dataclass(frozen=True)
class Waiting:
    queue: str
    cases: int
    overdue: int
    oldest_entered_at: int  # microseconds: when the oldest case entered the queue


@dataclass(frozen=True)
class Decided:
    who: str | None  # a reviewer; None: everyone
    decided: int
    within_deadline: int

    @property
    def share(self) -> float | None:
        return None if self.decided == 0 else self.within_deadline / self.decided


@dataclass(frozen=True)
class Levels:
    waiting: list[Waiting]
    decided: Decided
    per_reviewer: list[Decided]
    since: int  # microseconds: the start of the window of ``decided``


def service_levels(engine: Engine, *, now: int) -> Levels:
    """The queues' waiting cases and the deadlines met over the last ``WINDOW_DAYS``."""
    cases = open_cases(Filters())
    waiting = (
        select(
            cases.c.queue,
            func.count(),
            func.sum(case((cases.c.due_at < now, 1), else_=0)),
            func.min(cases.c.entered_at),
        )
        .group_by(cases.c.queue)
        .order_by(cases.c.queue)
    )
    since = now - WINDOW_DAYS * units.DAY
    met = func.sum(case((outcomes.c.late.is_(False), 1), else_=0))
    decided = (
        select(outcomes.c.decided_by, func.count(), met)
        .where(outcomes.c.kind.in_(("verdict", "appeal")), outcomes.c.decided_at >= since)
        .group_by(outcomes.c.decided_by)
        .order_by(outcomes.c.decided_by)
    )
    with engine.begin() as conn:
        queues = [
            Waiting(str(q), int(n), int(late or 0), int(oldest))
            for q, n, late, oldest in conn.execute(waiting).all()
        ]
        people = [Decided(who, int(n), int(ok or 0)) for who, n, ok in conn.execute(decided).all()]
    overall = Decided(None, sum(p.decided for p in people), sum(p.within_deadline for p in people))
    return Levels(queues, overall, people, since)


def _now() -> int:
    return units.micros(datetime.now(UTC))


class LevelsCollector(Collector):
    """The service levels as gauges, read from the store at scrape time (at most once
    every ``CACHE_SECONDS``); nothing when the store cannot be read."""

    def __init__(self, engine: Callable[[], Engine | None]) -> None:
        self._engine = engine
        self._kept: tuple[float, Levels | None] = (0.0, None)

    def _levels(self) -> Levels | None:
        at, kept = self._kept
        if kept is not None and time.monotonic() - at < CACHE_SECONDS:
            return kept
        engine = self._engine()
        if engine is None:
            return None
        try:
            found = service_levels(engine, now=_now())
        except DBAPIError as exc:
            log.warning("review service levels not read: %s", exc.orig or exc)
            return None
        self._kept = (time.monotonic(), found)
        return found

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering the collector must not read the store.
        yield from self._families(None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._families(self._levels())

    def _families(self, levels: Levels | None) -> Iterator[GaugeMetricFamily]:
        waiting = GaugeMetricFamily(
            "riskmodel_review_waiting", "Cases awaiting a decision, by queue", labels=["queue"]
        )
        overdue = GaugeMetricFamily(
            "riskmodel_review_overdue",
            "Cases awaiting a decision past their deadline, by queue",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "riskmodel_review_oldest_seconds",
            "Age of the oldest case awaiting a decision, by queue",
            labels=["queue"],
        )
        decided = GaugeMetricFamily(
            "riskmodel_review_decided",
            f"Verdicts and appeal decisions of the last {WINDOW_DAYS} days",
        )
        share = GaugeMetricFamily(
            "riskmodel_review_within_deadline_ratio",
            f"Share of the last {WINDOW_DAYS} days' verdicts and appeal decisions made "
            "within their deadline",
        )
        if levels is not None:
            now = _now()
            for queue in levels.waiting:
                waiting.add_metric([queue.queue], queue.cases)
                overdue.add_metric([queue.queue], queue.overdue)
                oldest.add_metric([queue.queue], (now - queue.oldest_entered_at) / units.SECOND)
            decided.add_metric([], levels.decided.decided)
            if levels.decided.share is not None:
                share.add_metric([], levels.decided.share)
        yield from (waiting, overdue, oldest, decided, share)
