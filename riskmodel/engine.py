"""The decision engine: a refund request, its features, a model score and a policy -> a decision.

Pure: no I/O, no clock (the caller passes ``decided_at``), no model call inside ``decide``
(the score and contributions come in computed; ``decide_with_scorer`` is the thin helper
that asks a ``Scorer`` for them). ``decide_frame`` is the same procedure over a DataFrame
for backtests, tested equal to ``decide`` row by row.

Inputs, and their units
-----------------------
One flat namespace of fields, which is also what rule conditions read: the features (by
their catalogue names, amounts in currency units) and the request fields of
``REQUEST_FIELDS`` (``request_fields`` builds them from a ``RefundRequest`` and its
``Order``; amounts in currency units as floats, not the store's cents). The engine itself
reads the request fields plus two features: ``order_days_used_seen`` (membership days the
platform saw used) and ``account_age_days``. Money out is exact: ``approved_amount`` is a
``Decimal`` in currency units, ``approved_cents`` the store's integer cents; entitlements
are computed in integer cents (nearest cent, halves up), exactly alike online and in
backtests.

Order of precedence (the one place it is written; ``decide`` follows it step by step)
-----------------------------------------------------------------------------------
1. **Block lists**: the user, device, IP or payment account is on a block list -> block.
2. **Hard block rules**: an enabled rule with action block holds -> block.
3. **Model thresholds per segment**: the first matching segment's pair (else the default);
   score >= block -> block, score >= review -> review, else approve. A green-channel buyer
   (``green_channel.who`` holds and the amount is at most ``max_amount``) has the review
   threshold raised to ``review_threshold`` (never above the block threshold). No score
   (model missing, failing, or not a probability) -> review with reason ``DEGRADED``.
4. **Review rules**: an enabled rule with action review holds -> at least review (a green
   channel buyer skips the ``exempt_rules``; block rules are never exempt). The money
   checks sit here too: an unknown entitlement or nothing left to refund -> review.
5. **Green channel and allow lists**: an allow-list hit (any kind) or an approve rule that
   holds softens *the model's verdict only*, by one step: block -> review, review ->
   approve. It never lifts a block list, a block rule, a review rule, a money check or a
   degraded review: they are evidence or missing data, and when unsure the answer is review.

The decision is the most severe of steps 1-5. Raising the score can only raise step 3, so
the decision is monotone in the score. When the decision is approve, ``approved_amount``
is the amount asked, capped by what is refundable: for a membership whose reason is one of
``prorated.reasons``, ``price * (service_days - max(days_used_seen, min_charged_days)) /
service_days - fee`` (to the nearest cent, never below 0); for anything else, the price
paid. Otherwise it is 0: nothing is paid
before a reviewer decides.

Reason codes (stable; ``docs/policy.md`` lists them)
----------------------------------------------------
``LIST_BLOCK_USER|DEVICE|IP|PAYMENT_ACCOUNT``, ``LIST_ALLOW_...`` (kind list); each rule's
own ``RULE_...`` code (kind rule); ``MODEL_SCORE_REVIEW``, ``MODEL_SCORE_BLOCK`` and
``MODEL_<FEATURE>`` for top contributions (kind model); ``GREEN_CHANNEL``, ``DEGRADED``,
``ENTITLEMENT_UNKNOWN``, ``PRORATED_CAP``, ``AMOUNT_ABOVE_PAID``, ``NOTHING_REFUNDABLE``
(kind policy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

import numpy as np
import pandas as pd

from riskmodel import units
from riskmodel.domain import Decision, Order, ProductType, RefundRequest
from riskmodel.policy.conditions import Kind
from riskmodel.policy.loader import LIST_KINDS, Policy
from riskmodel.policy.schema import Segment

__all__ = [
    "ENGINE_FEATURES",
    "POLICY_CODES",
    "REQUEST_FIELDS",
    "Outcome",
    "Reason",
    "ReasonKind",
    "ReviewAssignment",
    "Scorer",
    "decide",
    "decide_frame",
    "decide_with_scorer",
    "entitlement",
    "request_fields",
    "required_fields",
    "segment_for",
]

REQUEST_FIELDS: Mapping[str, Kind] = {
    "request_id": Kind.STRING,
    "order_id": Kind.STRING,
    "user_id": Kind.STRING,
    "device_id": Kind.STRING,
    "ip": Kind.STRING,
    "channel": Kind.STRING,
    "reason": Kind.STRING,
    "amount": Kind.NUMBER,  # asked back, currency units
    "days_used_claimed": Kind.NUMBER,
    "product_type": Kind.STRING,  # the order's
    "order_amount": Kind.NUMBER,  # price paid, currency units
    "service_days": Kind.NUMBER,  # the order's; null unless a membership
    "payment_account": Kind.STRING,  # the order's
}
"""Request and order fields the engine and conditions read, besides the features."""

ENGINE_FEATURES = ("order_days_used_seen", "account_age_days")
"""Features the engine reads itself (by catalogue name)."""

_LIST_FIELD = {
    "users": "user_id",
    "devices": "device_id",
    "ips": "ip",
    "payment_accounts": "payment_account",
}
_LIST_WORD = {
    "users": "user",
    "devices": "device",
    "ips": "IP",
    "payment_accounts": "payment account",
}
_LIST_CODE = {k: k.removesuffix("s").upper() for k in LIST_KINDS}

POLICY_CODES = (
    "GREEN_CHANNEL",
    "DEGRADED",
    "ENTITLEMENT_UNKNOWN",
    "PRORATED_CAP",
    "AMOUNT_ABOVE_PAID",
    "NOTHING_REFUNDABLE",
)


class ReasonKind(StrEnum):
    RULE = "rule"
    MODEL = "model"
    LIST = "list"
    POLICY = "policy"


@dataclass(frozen=True)
class Reason:
    code: str
    kind: ReasonKind
    message: str
    feature: str | None = None  # model contributions only
    value: float | str | None = None
    contribution: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "kind": self.kind.value, "message": self.message}
        if self.kind is ReasonKind.MODEL and self.feature is not None:
            out |= {"feature": self.feature, "value": self.value, "contribution": self.contribution}
        return out


@dataclass(frozen=True)
class ReviewAssignment:
    queue: str
    due_at: datetime  # UTC

    @property
    def due_at_us(self) -> int:
        """Microseconds since the epoch, the store's unit."""
        return units.micros(self.due_at)


@dataclass(frozen=True)
class Outcome:
    request_id: str
    decision: Decision
    score: float | None
    approved_amount: Decimal  # currency units, two decimals; 0 unless approve
    reasons: tuple[Reason, ...]
    review: ReviewAssignment | None
    model_version: str | None
    policy_version: str
    policy_hash: str  # SHA-256 of the policy file (and its list files)
    decided_at: datetime  # UTC

    @property
    def approved_cents(self) -> int:
        return units.cents(self.approved_amount)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.reasons)


class Scorer(Protocol):
    """What the engine needs of a model bundle (``riskmodel.bundle.ModelBundle`` is one)."""

    @property
    def version(self) -> str: ...  # read-only: a frozen bundle satisfies it

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Calibrated P(abuse) per row."""
        ...

    def contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per-feature raw contributions, columns = feature names."""
        ...

    def score_one(self, row: Mapping[str, object]) -> float: ...

    def contributions_one(self, row: Mapping[str, object]) -> dict[str, float]: ...


def request_fields(request: RefundRequest, order: Order) -> dict[str, object]:
    """The ``REQUEST_FIELDS`` of a request and its order, amounts in currency units."""
    return {
        "request_id": request.request_id,
        "order_id": request.order_id,
        "user_id": request.user_id,
        "device_id": request.device_id,
        "ip": request.ip,
        "channel": request.channel,
        "reason": request.reason.value,
        "amount": float(request.amount),
        "days_used_claimed": request.days_used_claimed,
        "product_type": order.product_type.value,
        "order_amount": float(order.amount),
        "service_days": order.service_days,
        "payment_account": order.payment_account,
    }


def required_fields(policy: Policy) -> frozenset[str]:
    """Every field ``decide`` reads under ``policy``: request fields, engine features and
    the fields of every enabled condition."""
    names = set(_LIST_FIELD.values()) | set(REQUEST_FIELDS) | set(ENGINE_FEATURES)
    spec = policy.spec
    for rule in spec.rules:
        if rule.enabled:
            names |= rule.when.fields
    for queue in spec.review.queues:
        if queue.when is not None:
            names |= queue.when.fields
    if spec.green_channel is not None and spec.green_channel.enabled:
        names |= spec.green_channel.who.fields
    return frozenset(names)


# --- one request --------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


@dataclass(frozen=True)
class _Money:
    """What may be paid (cents) and the policy reasons saying why, before the decision."""

    payable: int
    reasons: tuple[Reason, ...]
    review: bool  # a money check wants a person


def _money_check(row: Mapping[str, Any], policy: Policy) -> _Money:
    amount = _number(row.get("amount"))
    if amount is None:
        return _unknown_money("the amount asked is missing")
    asked = units.cents(amount)
    terms = policy.spec.prorated
    product = _text(row.get("product_type"))
    reason = _text(row.get("reason"))
    price = _number(row.get("order_amount"))
    if price is None:
        return _unknown_money("the order's price is unknown")
    price_cents = units.cents(price)
    if product == ProductType.MEMBERSHIP.value and reason in {r.value for r in terms.reasons}:
        days = _number(row.get("service_days"))
        seen = _number(row.get("order_days_used_seen"))
        if days is None or days < 1 or seen is None:
            return _unknown_money("the membership's service days or usage are unknown")
        entitled = entitlement(price_cents, int(days), int(seen), policy)
        if asked > entitled:
            charged = max(int(seen), terms.min_charged_days)
            text = (
                f"asked {units.money(asked)}, the prorated entitlement is "
                f"{units.money(entitled)} (price {units.money(price_cents)}, {charged} of "
                f"{int(days)} days charged as used, "
                f"fee {terms.fee:.2f}); at most {units.money(entitled)} can be paid"
            )
            return _finish(entitled, asked, Reason("PRORATED_CAP", ReasonKind.POLICY, text))
        return _finish(asked, asked, None)
    if asked > price_cents:
        paid = units.money(price_cents)
        text = f"asked {units.money(asked)}, more than the {paid} paid for the order"
        return _finish(price_cents, asked, Reason("AMOUNT_ABOVE_PAID", ReasonKind.POLICY, text))
    return _finish(asked, asked, None)


def entitlement(price_cents: int, days: int, seen: int, policy: Policy) -> int:
    """What a membership of ``days`` days bought for ``price_cents`` pays back when ``seen``
    of its days were used: the unused days' share of the price, at least the policy's
    minimum of charged days counted as used, less its fee, in cents."""
    terms = policy.spec.prorated
    charged = max(seen, terms.min_charged_days)
    remaining = max(days - charged, 0)
    fee = units.cents(terms.fee)
    # Nearest cent, halves up, in integers: the same on every row and in numpy.
    return max((2 * price_cents * remaining + days) // (2 * days) - fee, 0)


def _finish(payable: int, asked: int, capped: Reason | None) -> _Money:
    payable = max(payable, 0)
    reasons = () if capped is None else (capped,)
    if payable <= 0 < asked:
        nothing = Reason(
            "NOTHING_REFUNDABLE",
            ReasonKind.POLICY,
            "nothing is refundable under the policy's terms; a reviewer decides",
        )
        return _Money(0, (*reasons, nothing), True)
    return _Money(payable, reasons, False)


def _unknown_money(why: str) -> _Money:
    text = f"cannot tell what is refundable: {why}"
    return _Money(0, (Reason("ENTITLEMENT_UNKNOWN", ReasonKind.POLICY, text),), True)


def segment_for(row: Mapping[str, Any], policy: Policy) -> Segment | None:
    """The first of ``policy``'s threshold segments the request (its ``amount``,
    ``product_type`` and ``account_age_days``) falls in; None: the default thresholds."""
    amount = _number(row.get("amount"))
    product = _text(row.get("product_type"))
    age = _number(row.get("account_age_days"))
    for segment in policy.spec.thresholds.segments:
        if segment.product_types is not None and product not in {
            p.value for p in segment.product_types
        }:
            continue
        if segment.amount_from is not None and not (
            amount is not None and amount >= float(segment.amount_from)
        ):
            continue
        if segment.amount_below is not None and not (
            amount is not None and amount < float(segment.amount_below)
        ):
            continue
        if segment.account_age_below_days is not None and not (
            age is None or age < segment.account_age_below_days
        ):
            continue
        return segment
    return None


def _green(row: Mapping[str, Any], policy: Policy) -> bool:
    green = policy.spec.green_channel
    if green is None or not green.enabled:
        return False
    amount = _number(row.get("amount"))
    return amount is not None and amount <= float(green.max_amount) and green.who.evaluate(row)


def _valid_score(score: float | None) -> float | None:
    if score is None:
        return None
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if 0.0 <= value <= 1.0 else None  # NaN fails both comparisons


def _soften(decision: Decision) -> Decision:
    return Decision.REVIEW if decision is Decision.BLOCK else Decision.APPROVE


def decide(
    request: Mapping[str, Any],
    features: Mapping[str, Any],
    score: float | None,
    policy: Policy,
    *,
    decided_at: datetime,
    contributions: Mapping[str, float] | None = None,
    model_version: str | None = None,
    holds: Sequence[Reason] = (),
    rules_only: bool = False,
) -> Outcome:
    """Decide one refund request (see the module docstring for the precedence).

    ``request``: the ``REQUEST_FIELDS`` (``request_fields`` builds them); ``features``:
    feature name -> value (NaN or None for null); ``score``: the calibrated probability of
    abuse, None when no model could give one; ``contributions``: feature -> raw model
    contribution, turned into the top ``explanations.top_contributions`` reasons.
    ``holds``: reasons from outside the policy that make the decision a review at least
    (the live service's: a request dated before what it already holds of the buyer); no
    allow list or approve rule lightens them. ``rules_only``: the model is not asked (the
    kill switch): the lists, rules and money checks decide, and the reason
    ``RULES_ONLY`` says so; not a degraded decision.
    """
    row: dict[str, Any] = {**features, **request}
    spec = policy.spec
    reasons: list[Reason] = []
    missing = sorted(required_fields(policy) - row.keys())

    # Step 1 and the allow lists of step 5: every hit is a reason.
    blocked = allowed = False
    for side, lists in (("BLOCK", policy.blocked), ("ALLOW", policy.allowed)):
        for kind in LIST_KINDS:
            value = _text(row.get(_LIST_FIELD[kind]))
            if value is not None and value in lists[kind]:
                word = _LIST_WORD[kind]
                verb = "blocked" if side == "BLOCK" else "allowed"
                reasons.append(
                    Reason(
                        f"LIST_{side}_{_LIST_CODE[kind]}",
                        ReasonKind.LIST,
                        f"the {word} {value!r} is on the {verb} list",
                    )
                )
                blocked |= side == "BLOCK"
                allowed |= side == "ALLOW"

    # Steps 2, 4 and 5: rules, in file order.
    green = _green(row, policy)
    exempt = set(spec.green_channel.exempt_rules) if green and spec.green_channel else set()
    block_rule = review_rule = approve_rule = False
    rule_queue: str | None = None
    for rule in spec.rules:
        if not rule.enabled or not rule.when.evaluate(row):
            continue
        message = rule.message
        if rule.name in exempt:
            message += " (not applied: trusted buyer, green channel)"
        elif rule.action is Decision.BLOCK:
            block_rule = True
        elif rule.action is Decision.REVIEW:
            review_rule = True
            if rule_queue is None and rule.queue is not None:
                rule_queue = rule.queue
        else:
            approve_rule = True
        reasons.append(Reason(rule.code, ReasonKind.RULE, message))

    # Step 3: the model against the segment's thresholds.
    segment = segment_for(row, policy)
    review_at = spec.thresholds.review if segment is None else segment.review
    block_at = spec.thresholds.block if segment is None else segment.block
    if green and spec.green_channel is not None:
        review_at = min(max(review_at, spec.green_channel.review_threshold), block_at)
        reasons.append(
            Reason(
                "GREEN_CHANNEL",
                ReasonKind.POLICY,
                f"trusted frequent buyer: lighter checks (model review threshold {review_at:g})",
            )
        )
    valid = None if rules_only else _valid_score(score)
    degraded = (valid is None and not rules_only) or bool(missing)
    if rules_only:
        verdict = Decision.APPROVE
        reasons.append(
            Reason(
                "RULES_ONLY",
                ReasonKind.POLICY,
                "decided by the policy's rules and lists alone: the model is switched off",
            )
        )
    elif valid is None:
        verdict = Decision.REVIEW
    elif valid >= block_at and block_at < 1.0:
        verdict = Decision.BLOCK
    elif valid >= review_at:
        verdict = Decision.REVIEW
    else:
        verdict = Decision.APPROVE
    if valid is not None and verdict is not Decision.APPROVE:
        where = "default thresholds" if segment is None else f"segment {segment.name}"
        limit = block_at if verdict is Decision.BLOCK else review_at
        reasons.append(
            Reason(
                f"MODEL_SCORE_{verdict.value.upper()}",
                ReasonKind.MODEL,
                f"risk score {valid:.3f} is at or above the {verdict.value} threshold "
                f"{limit:g} ({where})",
            )
        )
    if degraded:
        if missing:
            why = f"missing input(s): {', '.join(missing)}"
            verdict = Decision.most_severe(verdict, Decision.REVIEW)
        elif score is None:
            why = "no model score"
        else:
            why = f"the model score {score!r} is not a probability"
        reasons.append(
            Reason("DEGRADED", ReasonKind.POLICY, f"degraded: {why}; a reviewer decides")
        )

    money = _money_check(row, policy)
    reasons.extend(money.reasons)

    # Step 5: softening touches the model's verdict only, and never a degraded one.
    if (allowed or approve_rule) and not degraded:
        verdict = _soften(verdict)

    reasons.extend(holds)
    decision = Decision.most_severe(
        Decision.BLOCK if blocked or block_rule else Decision.APPROVE,
        verdict,
        Decision.REVIEW if review_rule or money.review or holds else Decision.APPROVE,
    )
    reasons.extend(_model_reasons(contributions, row, policy))
    review = None
    if decision is Decision.REVIEW:
        queue = rule_queue or _route(row, policy)
        hours = next(q.deadline_hours for q in spec.review.queues if q.name == queue)
        review = ReviewAssignment(queue, _utc(decided_at) + timedelta(hours=hours))
    paid = money.payable if decision is Decision.APPROVE else 0
    return Outcome(
        request_id=str(row.get("request_id")),
        decision=decision,
        score=valid,
        approved_amount=Decimal(paid) / units.CENTS,
        reasons=tuple(reasons),
        review=review,
        model_version=model_version,
        policy_version=policy.version,
        policy_hash=policy.sha256,
        decided_at=_utc(decided_at),
    )


def _route(row: Mapping[str, Any], policy: Policy) -> str:
    for queue in policy.spec.review.queues:
        if queue.when is not None and queue.when.evaluate(row):
            return queue.name
    return policy.spec.review.default_queue


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("decided_at must be timezone-aware")
    return moment.astimezone(UTC)


def _model_reasons(
    contributions: Mapping[str, float] | None, row: Mapping[str, Any], policy: Policy
) -> list[Reason]:
    """The features that pushed the score up most, as sentences a reviewer reads."""
    top = policy.spec.explanations.top_contributions
    if not contributions or top == 0:
        return []
    pushing = [(name, float(c)) for name, c in contributions.items() if float(c) > 0]
    pushing.sort(key=lambda item: (-item[1], item[0]))
    out = []
    for name, contribution in pushing[:top]:
        value = row.get(name)
        shown: float | str | None = _number(value) if not isinstance(value, str) else value
        known = policy.fields.get(name)
        what = known.doc if known is not None and known.doc else name.replace("_", " ")
        out.append(
            Reason(
                f"MODEL_{name.upper()}",
                ReasonKind.MODEL,
                f"{what[0].upper()}{what[1:]}: {_show(shown)}; this raised the risk score "
                f"({contribution:+.2f})",
                feature=name,
                value=shown,
                contribution=contribution,
            )
        )
    return out


def _show(value: float | str | None) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, str):
        return value
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def decide_with_scorer(
    scorer: Scorer | None,
    request: Mapping[str, Any],
    features: Mapping[str, Any],
    policy: Policy,
    *,
    decided_at: datetime,
    holds: Sequence[Reason] = (),
    rules_only: bool = False,
) -> Outcome:
    """``decide`` with the score (and, for review and block only, the contributions) asked
    of ``scorer``. A missing scorer or one that fails gives a degraded review: the service
    never approves blindly. ``rules_only``: the scorer is not asked (see ``decide``)."""
    if rules_only:
        return decide(
            request, features, None, policy, decided_at=decided_at, holds=holds, rules_only=True
        )
    score: float | None
    try:
        score = None if scorer is None else float(scorer.score_one(features))
    except Exception:  # a broken bundle must not take the decision down: review it
        score = None
    version = None if scorer is None else scorer.version
    outcome = decide(
        request,
        features,
        score,
        policy,
        decided_at=decided_at,
        model_version=version,
        holds=holds,
    )
    if scorer is None or outcome.decision is Decision.APPROVE or outcome.score is None:
        return outcome
    # Exact contributions cost about a millisecond a row: only where a person reads them.
    try:
        contributions = scorer.contributions_one(features)
    except Exception:
        return outcome
    return decide(
        request,
        features,
        score,
        policy,
        decided_at=decided_at,
        contributions=contributions,
        model_version=version,
        holds=holds,
    )


# --- many requests ------------------------------------------------------------------------


def _num_col(frame: pd.DataFrame, name: str) -> np.ndarray:
    series = frame[name]
    if isinstance(series.dtype, pd.CategoricalDtype) or not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        values = series.to_numpy(dtype=object)
        return np.array([np.nan if (n := _number(v)) is None else n for v in values], dtype=float)
    return np.asarray(series.to_numpy(dtype=float, na_value=np.nan), dtype=float)


def _text_col(frame: pd.DataFrame, name: str) -> np.ndarray:
    series = frame[name]
    values = np.array(series.to_numpy(dtype=object), dtype=object)  # a copy: written below
    null = np.asarray(series.isna().to_numpy(), dtype=bool)
    if pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(
        series.dtype, pd.CategoricalDtype
    ):
        values = np.array([str(_number(v)) for v in values], dtype=object)
    values[null] = None
    return values


def _isin(values: np.ndarray, entries: frozenset[str]) -> np.ndarray:
    if not entries:
        return np.zeros(len(values), dtype=bool)
    return np.asarray(pd.Series(values, dtype=object).isin(list(entries)).to_numpy(), dtype=bool)


def _cents_col(values: np.ndarray) -> np.ndarray:
    return np.asarray(np.rint(np.nan_to_num(values) * units.CENTS), dtype=np.int64)


def decide_frame(
    frame: pd.DataFrame,
    scores: np.ndarray | Sequence[float] | None,
    policy: Policy,
    *,
    decided_at: datetime,
) -> pd.DataFrame:
    """``decide`` for every row of ``frame`` at once (backtests).

    ``frame`` holds the request fields and features as columns (``required_fields``);
    ``scores`` one per row (NaN or None: no score; None for the whole argument: no
    model). Returns a frame on the same index: ``decision``, ``score`` (NaN when
    degraded), ``approved_cents`` (int64, store cents), ``review_queue`` (None unless
    review), ``review_due_at`` (microseconds, -1 unless review) and ``reason_codes`` (a
    tuple per row, the codes ``decide`` gives without the per-feature model reasons).
    """
    missing = sorted(required_fields(policy) - set(frame.columns))
    if missing:
        raise KeyError(f"the frame lacks column(s) {', '.join(missing)}")
    n = len(frame)
    spec = policy.spec
    hits: list[tuple[str, np.ndarray]] = []

    blocked = np.zeros(n, dtype=bool)
    allowed = np.zeros(n, dtype=bool)
    for side, lists, into in (
        ("BLOCK", policy.blocked, blocked),
        ("ALLOW", policy.allowed, allowed),
    ):
        for kind in LIST_KINDS:
            hit = _isin(_text_col(frame, _LIST_FIELD[kind]), lists[kind])
            into |= hit
            hits.append((f"LIST_{side}_{_LIST_CODE[kind]}", hit))

    amount = _num_col(frame, "amount")
    green = np.zeros(n, dtype=bool)
    if spec.green_channel is not None and spec.green_channel.enabled:
        green = (
            ~np.isnan(amount)
            & (amount <= float(spec.green_channel.max_amount))
            & spec.green_channel.who.evaluate_frame(frame)
        )
    exempt = set(spec.green_channel.exempt_rules) if spec.green_channel else set()
    block_rule = np.zeros(n, dtype=bool)
    review_rule = np.zeros(n, dtype=bool)
    approve_rule = np.zeros(n, dtype=bool)
    rule_queue = np.full(n, None, dtype=object)
    for rule in spec.rules:
        if not rule.enabled:
            continue
        hit = rule.when.evaluate_frame(frame)
        hits.append((rule.code, hit))
        applies = hit & ~green if rule.name in exempt else hit
        if rule.action is Decision.BLOCK:
            block_rule |= applies
        elif rule.action is Decision.REVIEW:
            if rule.queue is not None:
                rule_queue[applies & (rule_queue == None)] = rule.queue  # noqa: E711
            review_rule |= applies
        else:
            approve_rule |= applies

    review_at = np.full(n, spec.thresholds.review)
    block_at = np.full(n, spec.thresholds.block)
    product = _text_col(frame, "product_type")
    age = _num_col(frame, "account_age_days")
    for segment in reversed(spec.thresholds.segments):  # the first match wins: it goes last
        match = np.ones(n, dtype=bool)
        if segment.product_types is not None:
            match &= _isin(product, frozenset(p.value for p in segment.product_types))
        with np.errstate(invalid="ignore"):
            if segment.amount_from is not None:
                match &= amount >= float(segment.amount_from)
            if segment.amount_below is not None:
                match &= amount < float(segment.amount_below)
            if segment.account_age_below_days is not None:
                match &= np.isnan(age) | (age < segment.account_age_below_days)
        review_at = np.where(match, segment.review, review_at)
        block_at = np.where(match, segment.block, block_at)
    if spec.green_channel is not None:
        lighter = np.minimum(np.maximum(review_at, spec.green_channel.review_threshold), block_at)
        review_at = np.where(green, lighter, review_at)
    hits.append(("GREEN_CHANNEL", green))

    score = np.full(n, np.nan) if scores is None else np.asarray(scores, dtype=float)
    if score.shape != (n,):
        raise ValueError(f"{score.shape[0]} scores for {n} rows")
    with np.errstate(invalid="ignore"):
        valid = (score >= 0.0) & (score <= 1.0)
        blocks = (score >= block_at) & (block_at < 1.0)
        verdict = np.where(blocks, 2, np.where(score >= review_at, 1, 0))
    verdict = np.where(valid, verdict, 1)
    hits.append(("MODEL_SCORE_REVIEW", valid & (verdict == 1)))
    hits.append(("MODEL_SCORE_BLOCK", valid & (verdict == 2)))
    hits.append(("DEGRADED", ~valid))

    payable, money_review, money_hits = _money_frame(frame, amount, product, policy)
    hits += money_hits

    soften = (allowed | approve_rule) & valid
    verdict = np.where(soften, np.maximum(verdict - 1, 0), verdict)
    severity = np.maximum.reduce(
        [np.where(blocked | block_rule, 2, 0), verdict, np.where(review_rule | money_review, 1, 0)]
    )
    names = np.array([d.value for d in (Decision.APPROVE, Decision.REVIEW, Decision.BLOCK)])
    is_review = severity == 1
    queue = rule_queue.copy()
    routed = np.full(n, spec.review.default_queue, dtype=object)
    for q in reversed(spec.review.queues):
        if q.when is not None:
            routed = np.where(q.when.evaluate_frame(frame), q.name, routed)
    queue = np.where(queue == None, routed, queue)  # noqa: E711
    queue[~is_review] = None
    hours = {q.name: q.deadline_hours for q in spec.review.queues}
    start = units.micros(_utc(decided_at))
    due = np.full(n, -1, dtype=np.int64)
    for name, h in hours.items():
        # As the one-row path: the deadline as a timedelta (hours may be fractional).
        due[is_review & (queue == name)] = units.micros(units.moment(start) + timedelta(hours=h))
    return pd.DataFrame(
        {
            "decision": names[severity],
            "score": np.where(valid, score, np.nan),
            "approved_cents": np.where(severity == 0, payable, 0).astype(np.int64),
            "review_queue": pd.Series(queue, index=frame.index, dtype=object),
            "review_due_at": due,
            "reason_codes": pd.Series(_code_tuples(hits, n), index=frame.index, dtype=object),
        },
        index=frame.index,
    )


def _money_frame(
    frame: pd.DataFrame, amount: np.ndarray, product: np.ndarray, policy: Policy
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, np.ndarray]]]:
    terms = policy.spec.prorated
    price = _num_col(frame, "order_amount")
    days = _num_col(frame, "service_days")
    seen = _num_col(frame, "order_days_used_seen")
    reason = _text_col(frame, "reason")
    asked = _cents_col(amount)
    price_cents = _cents_col(price)
    prorated = (product == ProductType.MEMBERSHIP.value) & _isin(
        reason, frozenset(r.value for r in terms.reasons)
    )
    with np.errstate(invalid="ignore"):
        unknown = np.isnan(amount) | np.isnan(price)
        unknown |= prorated & (np.isnan(days) | ~(days >= 1) | np.isnan(seen))
    safe_days = np.where(unknown | ~prorated, 1, np.nan_to_num(days)).astype(np.int64)
    safe_seen = np.nan_to_num(seen).astype(np.int64)
    charged = np.maximum(safe_seen, terms.min_charged_days)
    remaining = np.maximum(safe_days - charged, 0)
    nearest = (2 * price_cents * remaining + safe_days) // (2 * safe_days)
    entitled = np.maximum(nearest - units.cents(terms.fee), 0)
    cap = np.where(prorated, entitled, price_cents)
    over = ~unknown & (asked > cap)
    payable = np.where(unknown, 0, np.maximum(np.minimum(asked, cap), 0))
    nothing = ~unknown & (payable <= 0) & (asked > 0)
    hits = [
        ("ENTITLEMENT_UNKNOWN", unknown),
        ("PRORATED_CAP", over & prorated),
        ("AMOUNT_ABOVE_PAID", over & ~prorated),
        ("NOTHING_REFUNDABLE", nothing),
    ]
    return np.where(nothing, 0, payable), unknown | nothing, hits


def _code_tuples(hits: list[tuple[str, np.ndarray]], n: int) -> np.ndarray:
    """Per row, the tuple of codes whose mask is set, in ``hits`` order. Rows share few
    distinct combinations, so each combination's tuple is built once."""
    out = np.empty(n, dtype=object)
    if n == 0:
        return out
    matrix = np.column_stack([mask for _, mask in hits]) if hits else np.zeros((n, 0), bool)
    packed = np.packbits(matrix, axis=1)
    keys = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1])))[:, 0]
    uniques, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    codes = [code for code, _ in hits]
    combos = np.empty(len(uniques), dtype=object)
    for i, row in enumerate(first):
        combos[i] = tuple(c for c, m in zip(codes, matrix[row], strict=True) if m)
    out[:] = combos[inverse.ravel()]
    return out
