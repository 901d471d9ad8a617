"""Group commit: the decisions made while one transaction is being committed are written
together in the next, so many answers share one fsync, and the event loop keeps deciding
while a thread waits on the disk.

Every answer still waits for its own commit (nothing is answered before it is durable).
What changes is only who waits: before, the event loop blocked on each commit's fsync,
so the service's throughput was one decision per commit.

A decision must see every earlier decision it could be counted with (the velocity
features). So while a decision is waiting to be written, its request id and the entities
it is counted under (its user, order, device, IP and payment account: the entities the
catalogue counts refund requests, decisions or sightings by, sellers aside, see
``_EXACT``) are *pending*, and a request sharing one of them is decided only after that
write commits (``pending``). Requests that share nothing are decided side by side and
committed as one group. On PostgreSQL a decision's reads run on threads, off the event
loop: the order's context first, then, once nothing related is pending (the payment
account is known only now), the features. Its id, user, order, device and IP are held
pending from before the context is read, so that related requests are decided in the
order they came (a batch's in its order), and all its keys, the payment account added,
from before the features are read until its write takes them over (``holding``). A
related write on the payment account that began and committed while the context was
being read is no longer pending when the read returns, and the read may not hold it: the
decision then reads its context again (``settled_since``).

One more check is made where it can be exact, in the transaction that writes: the
request's order. Features are as of the request's own time, so a decision counts only
the refund requests of its order dated before it. A request that arrives after a later
one of the same order (callers' clocks and queues do not keep order), or at the same
moment on another worker, would count neither, and could be approved as the order's
first refund. So each write first looks at the order's other stored requests; if it holds
more than the decision counted, nothing is written and the caller decides again, counting
them (``Written.siblings``). Writes of one order are serialized across processes for
this: SQLite's group transaction takes the write lock when it begins (``BEGIN
IMMEDIATE``), PostgreSQL's takes an advisory lock per order, in one order, so that two
groups cannot wait on each other. It takes one per user too: a write asks whether its
user was seen on the request's device, IP and payment account before, to count a new
user in the day's tile once (``riskmodel.store.insert_request``), and two workers
writing one user at the same moment would both find none. The day tiles a group adds to
are updated last, in the order of their keys (``riskmodel.store.TileCounts``): they are
shared by every writer, and two groups must not wait on each other there either.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from features import CATALOG
from features.spec import Aggregate, Entity, Source
from riskmodel.store import (
    OrderRequest,
    TileCounts,
    automatic_outcome,
    count_in_tiles,
    insert_decision,
    insert_outcome,
    insert_request,
    order_requests,
    same_request_stored,
    stored_decision,
)
from serving.record import DecisionRecord

__all__ = ["DecisionWriter", "Write", "Written", "counted_entities", "counted_keys"]

log = logging.getLogger("serving")


def counted_entities() -> frozenset[Entity]:
    """The entities a new decision changes a feature of: those the catalogue counts
    refund requests, decisions or sightings by."""
    written = (Source.REFUNDS, Source.DECISIONS, Source.SIGHTINGS)
    return frozenset(
        f.entity for f in CATALOG.values() if isinstance(f, Aggregate) and f.source in written
    )


# Sellers and products are left out: their requests come from many buyers, so waiting on
# them would put much of the traffic in single file (the largest seller had 9% of the
# held-out requests), and their counts run to hundreds, where a decision still being
# written (a few milliseconds) is noise, not a way to hide. The abuse patterns act through
# a user, device, IP or payment account, and for those the count is exact.
_EXACT = counted_entities() - {Entity.SELLER, Entity.PRODUCT}


@dataclass(frozen=True)
class Write:
    """A decided request, ready to be stored: the request (store units) and the decision row.

    ``order`` (its ``seller_id``, ``payment_account``, ``product_id`` and its currency's
    ``rate``) and ``registered_at`` come from the request's order and user, read when it
    was decided (``insert_request`` keeps copies of them).
    """

    request: Mapping[str, Any]
    decision: DecisionRecord
    order: Mapping[str, Any]
    registered_at: int
    order_counted: int  # refund requests of the order the decision counted

    @property
    def payment_account(self) -> str | None:
        account = self.order.get("payment_account")
        return None if account is None else str(account)

    def counted_keys(self) -> frozenset[tuple[str, Any]]:
        return counted_keys(self.request, self.payment_account)


def counted_keys(
    request: Mapping[str, Any], payment_account: str | None
) -> frozenset[tuple[str, Any]]:
    """What a request is counted under: its id and the values of the counted entities
    (the payment account is its order's: None before the order is read)."""
    values = {**request, "payment_account": payment_account}
    found = {("request_id", request["request_id"])}
    found.update((e.value, values[e.value]) for e in _EXACT if values.get(e.value) is not None)
    return frozenset(found)


@dataclass(frozen=True)
class Written:
    """What the store holds for a write's request id once its group committed.

    ``decision``: the decisions row stored under the id: this write's, or, when ``twin``,
    that of a twin decided in another process that committed first. ``conflict``: the id
    was in the history already with other details; nothing was written. ``siblings``:
    the order holds refund requests the decision did not count; nothing was written, and
    the request is to be decided again counting them.
    """

    decision: DecisionRecord | None
    conflict: bool = False
    twin: bool = False
    siblings: tuple[OrderRequest, ...] = ()


def _lock(conn: Connection, group: Iterable[Write]) -> None:
    """Hold the orders and users of ``group`` until the transaction ends, against every
    other writer (see the module docstring). The first statement of the transaction."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    held = {f"order {w.request['order_id']}" for w in group}
    held |= {f"user {w.request['user_id']}" for w in group}
    # One round trip for all of them, taken in the order of their keys.
    conn.exec_driver_sql(
        "SELECT pg_advisory_xact_lock(hashtext(key)) "
        "FROM (SELECT unnest(%s::text[]) AS key ORDER BY 1) AS held",
        (sorted(held),),
    )


def _write_all(conn: Connection, group: list[Write]) -> list[Written]:
    """The group's writes, then their day tiles (in one order: see ``TileCounts``)."""
    tiles = TileCounts()
    written = [_write_one(conn, write, tiles) for write in group]
    count_in_tiles(conn, tiles)
    return written


def _write_one(conn: Connection, write: Write, tiles: TileCounts) -> Written:
    request = write.request
    siblings = order_requests(conn, request)
    if len(siblings) > write.order_counted:
        return Written(None, siblings=siblings)
    inserted = insert_request(
        conn,
        write.request,
        order=write.order,
        registered_at=write.registered_at,
        tiles=tiles,
    )
    if not inserted and not same_request_stored(conn, write.request):
        return Written(None, conflict=True)
    row = write.decision.row()
    if insert_decision(conn, row):
        if (final := automatic_outcome(row)) is not None:
            insert_outcome(conn, final)
        return Written(write.decision)
    # A twin decided in another process committed first: its decision is the answer.
    twin = stored_decision(conn, str(write.request["request_id"]))
    return Written(None if twin is None else DecisionRecord.from_row(twin), twin=True)


# Far more groups than commit during one read of a decision's context.
_RECENT_GROUPS = 1024


@dataclass
class DecisionWriter:
    """Writes decisions in groups on one thread; see the module docstring.

    ``engine()`` gives the store, or None while it is unreachable; ``on_group(size)`` is
    told the size of each group as it starts (a metric).
    """

    engine: Callable[[], Engine | None]
    on_group: Callable[[int], None] = lambda size: None
    _queue: list[tuple[Write, asyncio.Future[Written]]] = field(default_factory=list)
    _pending: dict[tuple[str, Any], asyncio.Future[Written]] = field(default_factory=dict)
    _flushing: bool = False
    _settled: int = 0  # groups settled so far
    # The keys of the groups settled last, each with its number: what a read begun
    # before them may have missed (``settled_since``).
    _recent: deque[tuple[int, frozenset[tuple[str, Any]]]] = field(
        default_factory=lambda: deque(maxlen=_RECENT_GROUPS)
    )
    _thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="decision-writer")
    )

    def pending(self, keys: Iterable[tuple[str, Any]]) -> Awaitable[Written] | None:
        """A write not yet committed that shares one of ``keys`` (to await), or None."""
        for key in keys:
            if (found := self._pending.get(key)) is not None:
                # Shielded: a waiter that goes away must not cancel another's write.
                return asyncio.shield(found)
        return None

    def mark(self) -> int:
        """Where the writes stand now, for ``settled_since``: take it before a read."""
        return self._settled

    def settled_since(self, mark: int, keys: Iterable[tuple[str, Any]]) -> bool:
        """Whether a write sharing one of ``keys`` was committed (or failed) after
        ``mark``: a read begun at ``mark`` off the event loop may not have seen it, and no
        longer finds it pending either. True, to be safe, when ``mark`` is older than
        the groups remembered."""
        if mark == self._settled:
            return False
        if not self._recent or self._recent[0][0] > mark + 1:
            return True
        wanted = frozenset(keys)
        return any(number > mark and not wanted.isdisjoint(held) for number, held in self._recent)

    @contextmanager
    def holding(self, keys: Iterable[tuple[str, Any]]) -> Iterator[None]:
        """``keys`` pending while a decision is made off the event loop (on PostgreSQL):
        a request sharing one waits as for a write. Release them in the step of the loop
        that submits the decision's write, which takes them over."""
        held = frozenset(keys)
        done: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        for key in held:
            self._pending[key] = done
        try:
            yield
        finally:
            for key in held:
                if self._pending.get(key) is done:
                    del self._pending[key]
            done.set_result(Written(None))

    def submit(self, write: Write) -> Awaitable[Written]:
        """Queue ``write``; the future is done once its group committed (or failed).

        Call only when ``pending(write.counted_keys())`` is None, in the same step of the event
        loop as the reads the decision was made from, or as the end of ``holding`` its keys.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Written] = loop.create_future()
        for key in write.counted_keys():
            self._pending[key] = done
        self._queue.append((write, done))
        if not self._flushing:
            self._flushing = True
            # After the requests already runnable in this turn of the loop, so that they
            # join this group rather than wait for the next.
            loop.call_soon(self._flush)
        return asyncio.shield(done)

    def _flush(self) -> None:
        group, self._queue = self._queue, []
        if not group:
            self._flushing = False
            return
        self.on_group(len(group))
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._thread, self._commit, [w for w, _ in group])
        work.add_done_callback(lambda outcome: self._settle(group, outcome))

    def _settle(
        self,
        group: list[tuple[Write, asyncio.Future[Written]]],
        outcome: asyncio.Future[list[Written | BaseException]],
    ) -> None:
        failure = outcome.exception()
        results: list[Written | BaseException] = (
            [failure] * len(group) if failure is not None else outcome.result()
        )
        self._settled += 1
        written = frozenset().union(*(write.counted_keys() for write, _ in group))
        self._recent.append((self._settled, written))
        for (write, done), result in zip(group, results, strict=True):
            for key in write.counted_keys():
                if self._pending.get(key) is done:
                    del self._pending[key]
            if isinstance(result, BaseException):
                done.set_exception(result)
                # Retrieved here too: a caller that went away must not leave it unheard.
                done.add_done_callback(lambda f: f.exception())
            else:
                done.set_result(result)
        self._flush()

    def _commit(self, group: list[Write]) -> list[Written | BaseException]:
        """On the writer thread: the group in one transaction; if a write fails for a
        reason of its own, each write again in its own transaction."""
        engine = self.engine()
        if engine is None:
            raise OperationalError("writing decisions", None, Exception("store unavailable"))
        with engine.connect() as conn:
            try:
                _lock(conn, group)
                written = _write_all(conn, group)
                conn.commit()
                return list(written)
            except (OperationalError, InterfaceError):
                conn.rollback()
                raise  # the store itself: every write of the group fails alike
            except DBAPIError:
                conn.rollback()
                if len(group) == 1:
                    raise
                log.warning("a group of %d decisions failed; writing them one by one", len(group))
            results: list[Written | BaseException] = []
            for write in group:
                try:
                    _lock(conn, [write])
                    results.extend(_write_all(conn, [write]))
                    conn.commit()
                except DBAPIError as exc:
                    conn.rollback()
                    results.append(exc)
            return results

    def close(self) -> None:
        self._thread.shutdown(wait=True)
