"""One refund request in, one decision out, recorded before the answer leaves.

The path, in order (each step reads what the one before produced, nothing flows back):

1. the request in store units (microseconds, cents) and its SHA-256 (``request_hash``);
2. one read of the store (``riskmodel.store.decision_context``) finds a decision already
   stored under the ``request_id``: the same body gets it back (``replayed``), another
   body is a ``Conflict`` (409);
3. or else the order, its rate, the user and the order's other requests: if the user or
   the order is unknown, or the order is another user's, or it was paid after the
   request, the answer is a provisional ``review`` that is **not stored** (the history
   would break its own contract: every stored request's order exists and is its user's);
   the caller streams the missing history and asks again with the same ``request_id``;
4. the online features (from the order and user already read); the champion's score on
   them (contributions only for review and block); the policy
   (``riskmodel.engine.decide_with_scorer``), which also reads every other stored request
   of the order as one of its earlier refunds whatever its time (``order_view``); the
   challenger's score in the shadow. On SQLite, steps 2 to 4 run in the event loop (about
   a millisecond of CPU); on PostgreSQL, whose reads wait on the network, steps 2 and 3
   run on one thread and step 4 on another, so that the loop takes other requests
   meanwhile;
5. the write, by the ``DecisionWriter`` (group commit): the refund request (keyed by
   ``request_id``, so it is counted once in every velocity feature however often it is
   sent) and the decision, committed before the answer leaves; a concurrent twin that
   committed first wins, and this call answers with the twin's decision. A request that
   shares its id or an entity with a decision still being written is decided after that
   write commits, so that it counts it; one whose order gained a request meanwhile (on
   another worker) is decided again (``serving.writer``).

When the store cannot be read the answer is ``review`` with reason ``DEGRADED``, not
stored (``stored: false``). Without a champion the policy decides without a score: review,
``DEGRADED``, stored. Without a policy nothing can be decided: review, not stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

import features
from riskmodel import units
from riskmodel.domain import Order, ProductType, RefundRequest
from riskmodel.engine import (
    Outcome,
    Reason,
    ReasonKind,
    Scorer,
    decide_with_scorer,
    request_fields,
)
from riskmodel.policy import Policy
from riskmodel.store import (
    Misfit,
    OrderRequest,
    Replay,
    RequestContext,
    decision_context,
    reading,
    request_hash,
)
from riskmodel.store.operations import LiveSetting
from serving.errors import AheadOfClock, Conflict
from serving.record import DecisionRecord
from serving.runtime import Models, Runtime
from serving.writer import Write, counted_keys

__all__ = [
    "Answer",
    "decide_one",
    "evaluate",
    "late_hold",
    "order_view",
    "store_row",
    "stored_view",
    "switched",
]

log = logging.getLogger("serving")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def store_row(request: RefundRequest) -> dict[str, Any]:
    """The request as the store keeps it: times in microseconds, money in cents."""
    return {
        "request_id": request.request_id,
        "order_id": request.order_id,
        "user_id": request.user_id,
        "requested_at": units.micros(request.requested_at),
        "amount": units.cents(request.amount),
        "reason": request.reason.value,
        "days_used_claimed": request.days_used_claimed,
        "device_id": request.device_id,
        "ip": request.ip,
        "channel": request.channel,
    }


@dataclass(frozen=True)
class Answer:
    """A decision as the API answers it (``body``), and what the metrics count."""

    body: dict[str, Any]
    degraded: bool

    @property
    def decision(self) -> str:
        return str(self.body["decision"])


async def decide_one(runtime: Runtime, request: RefundRequest) -> Answer:
    """Decide ``request`` (see the module docstring). Raises ``AheadOfClock`` (nothing
    read or stored) and ``Conflict`` only: any other failure is answered as a degraded
    review that is not stored."""
    started = time.perf_counter()
    _check_clock(request, runtime.settings.clock_skew_seconds)
    row = store_row(request)
    engine = runtime.store.available()
    if engine is None:
        answer = _unreachable(runtime, row, runtime.store.problem)
    else:
        try:
            answer = await _decide_in_store(engine, runtime, request, row)
            runtime.store.found()
        except Conflict:
            runtime.metrics.conflicts.inc()
            raise
        except (OperationalError, InterfaceError) as exc:
            runtime.store.lost(exc)
            answer = _unreachable(runtime, row, runtime.store.problem)
        except DBAPIError as exc:
            log.exception("store error while deciding %s", row["request_id"])
            answer = _unreachable(runtime, row, f"store error: {type(exc.orig).__name__}")
        except Exception:
            # A bug must not take the gate down, nor approve: review, loudly logged.
            log.exception("unexpected error while deciding %s", row["request_id"])
            answer = _unreachable(runtime, row, "internal error")
    runtime.note_state()
    runtime.metrics.decisions.labels(
        answer.decision, str(answer.degraded).lower(), str(answer.body["replayed"]).lower()
    ).inc()
    runtime.metrics.decision_seconds.observe(time.perf_counter() - started)
    return answer


def _check_clock(request: RefundRequest, skew_seconds: float) -> None:
    """Refuse a request dated further ahead of the service's clock than callers' clocks
    drift: its features would count the buyer's history up to a time not yet come."""
    ahead = (request.requested_at - datetime.now(UTC)).total_seconds()
    if ahead > skew_seconds:
        message = (
            f"requested_at is {ahead:.0f} seconds ahead of the service's clock (at most "
            f"{skew_seconds:.0f} allowed); send the time the buyer asked, in UTC or with "
            "its offset"
        )
        raise AheadOfClock(message, [{"field": "body.requested_at", "message": message}])


async def _decide_in_store(
    engine: Engine, runtime: Runtime, request: RefundRequest, row: dict[str, Any]
) -> Answer:
    while True:
        decided = await _decide_when_counted(engine, runtime, request, row)
        if isinstance(decided, Answer):
            return decided
        step, outcome = decided
        written = await runtime.writer.submit(step)
        if not written.siblings:
            break
        # Another worker wrote a request of the order meanwhile: decide again, counting it.
    if written.conflict:
        raise Conflict(
            f"request_id {row['request_id']!r} is already in the history with different "
            "details; use a new request_id for a new request"
        )
    if written.decision is None:
        raise RuntimeError("a decision conflicted but none is stored")
    if written.twin:
        return _replay(written.decision, request_hash(row))
    if outcome.score is not None:
        runtime.metrics.scores.observe(outcome.score)
    degraded = "DEGRADED" in outcome.codes
    return Answer(step.decision.render(stored=True, replayed=False), degraded=degraded)


async def _decide_when_counted(
    engine: Engine,
    runtime: Runtime,
    request: RefundRequest,
    row: dict[str, Any],
) -> Answer | tuple[Write, Outcome]:
    """Steps 2 to 4, once no write the request would be counted with is pending: an
    answer already, or the decision to write."""
    writer = runtime.writer
    while True:
        # A decision on the same id, user, order, device, IP or payment account still
        # being written (or made off the loop): decide once it is, so that this one
        # counts it.
        known = counted_keys(row, None)
        if (related := writer.pending(known)) is not None:
            await _settled(related)
            continue
        policy, now = runtime.policy, datetime.now(UTC)
        if engine.dialect.name == "sqlite":
            with reading(engine) as conn:
                found = _look_up(conn, runtime, row, now)
                if isinstance(found, Answer):
                    return found
                assert policy is not None  # _look_up answers when there is none
                # The account is the order's, known only now.
                keys = counted_keys(row, found.order["payment_account"])
                if (related := writer.pending(keys)) is None:
                    # No await from here to ``submit``: nothing else is decided in between.
                    return _decide(conn, runtime, request, row, found, policy, now)
        else:
            # A server's reads wait on the network: made on a thread, they leave the loop
            # free to take other requests, and several decisions read at once.
            mark = writer.mark()
            # Held from before the read: requests sharing the id, user, order, device or
            # IP are decided in the order they came (a batch's in its order), not in the
            # order their reads happen to end.
            with writer.holding(known):
                found = await asyncio.to_thread(
                    _on_own_connection, engine, _look_up, runtime, row, now
                )
            if isinstance(found, Answer):
                return found
            assert policy is not None
            keys = counted_keys(row, found.order["payment_account"])
            if writer.settled_since(mark, keys):
                # A related write committed while the context was read, which may not hold
                # it (the newest request of the buyer, the order's others): read again.
                continue
            if (related := writer.pending(keys)) is None:
                # Held from here until ``submit`` takes the keys over, in the step of the
                # loop this returns in: a related request waits as for a write.
                with writer.holding(keys):
                    return await asyncio.to_thread(
                        _on_own_connection,
                        engine,
                        _decide,
                        runtime,
                        request,
                        row,
                        found,
                        policy,
                        now,
                    )
        await _settled(related)


def _on_own_connection(
    engine: Engine, step: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kw: _P.kwargs
) -> _T:
    """``step`` on a connection of its own, for a thread: none is held from one thread's
    step to the next, or decisions holding connections would wait for threads that wait
    for connections. Its reads are each a transaction of their own: no snapshot is
    shared by them under READ COMMITTED, and BEGIN and COMMIT cost two round trips."""
    with reading(engine, each_alone=True) as conn:
        return step(conn, *args, **kw)


async def _settled(related: Awaitable[Any]) -> None:
    """Wait for a related write; its failure is its own caller's to report."""
    with contextlib.suppress(Exception):
        await related


def _look_up(
    conn: Connection, runtime: Runtime, row: dict[str, Any], now: datetime
) -> Answer | RequestContext:
    """Steps 2 and 3, one read of the store: an answer already (a replay, a provisional
    review), or what the decision reads of the store."""
    found = decision_context(conn, row)
    if isinstance(found, Replay):
        return _replay(DecisionRecord.from_row(found.decision), request_hash(row))
    if runtime.policy is None:
        why = runtime.policy_problem or "no policy loaded"
        message = f"degraded: {why}; {_NOT_STORED}"
        return _provisional(row, None, runtime.models, "DEGRADED", message, now)
    if isinstance(found, Misfit):
        return _provisional(row, runtime.policy, runtime.models, found.code, found.message, now)
    return found


_NOT_STORED = "not stored; ask again with the same request_id"


def _replay(stored: DecisionRecord, digest: str) -> Answer:
    if stored.request_hash != digest:
        raise Conflict(
            f"request_id {stored.request_id!r} was already decided for a different "
            "request; use a new request_id for a new request"
        )
    return Answer(stored.render(stored=True, replayed=True), degraded=False)


def _provisional(
    row: Mapping[str, Any],
    policy: Policy | None,
    models: Models,
    code: str,
    message: str,
    now: datetime,
) -> Answer:
    """A review made without what a decision needs, and not stored."""
    version = None if models.champion is None else models.champion.version
    record = DecisionRecord.provisional(row["request_id"], policy, version, code, message, now)
    return Answer(record.render(stored=False, replayed=False), degraded=code == "DEGRADED")


def _unreachable(runtime: Runtime, row: Mapping[str, Any], why: str | None) -> Answer:
    message = f"degraded: {why or 'the store is unavailable'}; no decision made; {_NOT_STORED}"
    return _provisional(row, runtime.policy, runtime.models, "DEGRADED", message, datetime.now(UTC))


def _decide(
    conn: Connection,
    runtime: Runtime,
    request: RefundRequest,
    row: dict[str, Any],
    context: RequestContext,
    policy: Policy,
    now: datetime,
) -> tuple[Write, Outcome]:
    """Step 4: the outcome (``evaluate``) and the decision to write."""
    models = runtime.models
    switch = runtime.live.get("switch")
    outcome, values, view = evaluate(
        conn,
        request,
        row,
        context,
        policy,
        models.champion,
        holds=late_hold(row, context, runtime.settings.late_hours) + switched(switch),
        rules_only=switch is not None and switch.value == "rules",
        now=now,
    )
    order = context.order
    write = Write(
        request=row,
        decision=DecisionRecord.of(outcome, request_hash(row), _shadow(models, values, runtime)),
        # What the store keeps of the order on the request.
        order={
            "seller_id": order["seller_id"],
            "payment_account": order["payment_account"],
            "product_id": order["product_id"],
            "rate": context.rate,
        },
        registered_at=int(context.user["registered_at"]),
        order_counted=int(view.get("order_earlier_refunds", values["order_earlier_refunds"])),
    )
    return write, outcome


def evaluate(
    conn: Connection,
    request: RefundRequest,
    row: Mapping[str, Any],
    context: RequestContext,
    policy: Policy,
    champion: Scorer | None,
    *,
    holds: Sequence[Reason],
    rules_only: bool,
    now: datetime,
    later_stored: bool = True,
) -> tuple[Outcome, dict[str, Any], dict[str, float]]:
    """Features, score and policy: the outcome, the features and the order's view.

    The model scores the features as of the request's time, exactly as offline. The
    policy reads what the store holds whatever its time: a request dated before others
    of its buyer that arrived first must not dodge the counts by its date
    (``stored_view``; not with ``later_stored`` false), nor be decided as its order's
    first refund (``order_view``; ``serving.writer`` checks again as it writes).
    ``holds``: reviews from outside the policy (``late_hold``, ``switched``);
    ``rules_only``: the kill switch's rules without the model. Also what
    ``serving.replay`` decides again with.
    """
    values = features.online_features(conn, row, context=context)
    stored = stored_view(conn, row, context) if later_stored else {}
    view = order_view(values, context.others, int(row["amount"]))
    fields = {**stored, **request_fields(request, _order(context)), **view}
    outcome = decide_with_scorer(
        champion, fields, values, policy, decided_at=now, holds=holds, rules_only=rules_only
    )
    return outcome, values, view


def _order(context: RequestContext) -> Order:
    """The request's order as the engine reads it."""
    order = context.order
    return Order.model_construct(
        order_id=order["order_id"],
        user_id=order["user_id"],
        product_type=ProductType(order["product_type"]),
        amount=Decimal(int(order["amount"])) / units.CENTS,
        paid_at=units.moment(order["paid_at"]),
        service_days=order["service_days"],
        payment_account=order["payment_account"],
    )


def stored_view(
    conn: Connection, row: Mapping[str, Any], context: RequestContext
) -> dict[str, Any]:
    """The features as the policy reads them when the store holds requests of the buyer
    (its user, order, device, IP or payment account) dated at or after this one: every
    stored request, decision, outcome and sighting counts whatever its date
    (``online_features(everything=True)``), so that dating requests backwards cannot
    dodge a velocity or linked-account count. Empty when nothing stored is dated after
    it: offline, where requests replay in time order, it always is.
    """
    if context.newest is None or context.newest < int(row["requested_at"]):
        return {}
    return features.online_features(conn, row, context=context, everything=True)


def late_hold(row: Mapping[str, Any], context: RequestContext, late_hours: float) -> list[Reason]:
    """A review reason when the request is dated more than ``late_hours`` before a request
    of its buyer that the store already holds (``RequestContext.newest``): its features as
    of that date would miss the buyer's later use and requests (days of a membership used
    since, say); none otherwise."""
    if context.newest is None:
        return []
    before = (context.newest - int(row["requested_at"])) / units.HOUR
    if before <= late_hours:
        return []
    return [
        Reason(
            "DATED_BEFORE_STORED",
            ReasonKind.POLICY,
            f"the request is dated {before:.1f} hours before a request of the same user, "
            "order, device, IP or payment account that the service already holds; a person "
            "checks the dates",
        )
    ]


def switched(setting: LiveSetting | None) -> list[Reason]:
    """The kill switch's review reason, when it sends every decision to review."""
    if setting is None or setting.value != "review":
        return []
    why = f": {setting.reason}" if setting.reason else ""
    return [
        Reason(
            "KILL_SWITCH",
            ReasonKind.POLICY,
            f"the kill switch sends every decision to review (set by {setting.changed_by}{why})",
        )
    ]


def order_view(
    values: Mapping[str, Any], others: Sequence[OrderRequest], amount: int
) -> dict[str, float]:
    """The order features as the policy reads them when the store holds more of the order
    than the features counted (a request dated after this one that arrived first): every
    stored request of the order counts as an earlier refund, those the features did not
    count as unanswered, and the money paid or approved on any of them as gone out. Empty
    when the features counted everything: offline, where requests replay in time order,
    it always is. ``amount``: the request's, in cents.

    Handed to the engine with the request's fields, which the policy reads over the
    features; the models score the features themselves.
    """
    view: dict[str, float] = {}
    counted = values["order_earlier_refunds"]
    if len(others) > counted:
        view["order_earlier_refunds"] = float(len(others))
        view["order_earlier_refund_amount"] = sum(o.amount for o in others) / units.CENTS
        view["order_refunds_unanswered"] = values["order_refunds_unanswered"] + (
            len(others) - counted
        )
    paid = sum(o.paid for o in others) / units.CENTS
    approved = sum(o.approved for o in others) / units.CENTS
    if max(paid, approved) > values["order_refund_out_all"]:
        paid = max(values["order_refund_paid_all"], paid)
        approved = max(values["order_refund_approved_all"], approved)
        gone = max(paid, approved)
        left = round(values["order_amount"] - gone, 2)
        view["order_refund_paid_all"] = paid
        view["order_refund_approved_all"] = approved
        view["order_refund_out_all"] = gone
        view["order_refund_left"] = left
        view["request_amount_over_left"] = float(amount > units.cents(left))
    return view


def _shadow(models: Models, values: Mapping[str, Any], runtime: Runtime) -> str | None:
    challenger = models.challenger
    if challenger is None:
        return None
    try:
        score = float(challenger.score_one(values))
    except Exception as exc:  # the shadow must never touch the answer
        return json.dumps({"model_version": challenger.version, "error": str(exc)[:200]})
    runtime.metrics.shadow_scores.observe(score)
    return json.dumps({"model_version": challenger.version, "score": score})
