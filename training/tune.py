"""Threshold tuning: what each review / block pair would do, and the pair to propose.

On an evaluation period (requests with point-in-time features, scored by a model, with
their outcomes), every candidate pair of the thresholds being tuned (the default pair, or
one segment's) is measured as the policy would really apply it: lists, rules, the other
segments, the green channel, allow lists and money checks all take part, because the
decisions come from ``riskmodel.engine.decide_frame``.

How, without deciding every request once per pair: only step 3 of the engine's precedence
reads the thresholds, and a request's final decision is a fixed, monotone function of the
model's verdict there (approve, review or block). Four ``decide_frame`` runs with chosen
scores and probe thresholds give, per request, that function (``g[verdict]``), whether the
tuned pair applies to it (no earlier segment matched) and whether it is in the green
channel. A pair then only decides which verdict each request's score earns, which is a
comparison with the pair; sums over requests come from cumulative sums over score
buckets, so thousands of pairs cost about as much as one replay. The policy's own pair is
always in the grid, and its decisions are checked request by request against the engine's;
the tests check other pairs against ``decide_frame`` on a patched policy.

The proposal, among the pairs that meet every constraint: the most net money held,
abusive amount held (reviewed or blocked) minus ``honest_weight`` times the honest amount
held (0.1 by default: holding 10.00 of honest refunds for a person is worth catching 1.00
of abuse, so the review threshold goes down only while at least about one unit in eleven
of what it adds is abusive); then the least honest money blocked (a block is used where
review capacity runs out, not to save reviews for their own sake); then the fewest
reviews; then the higher thresholds. With ``honest_weight`` 0 the most abusive money is
held, capacity permitting. When no pair meets the constraints, the closest one (least
total relative excess over the limits) is returned with what it misses.

Honest requests blocked can be capped outright (``max_honest_blocks``, a number of
requests, and ``max_honest_block_rate``, a share of the honest requests): no proposed pair
exceeds the ceiling. ``Tuning.blocks(row)`` splits a pair's blocks by the code that caused
each (``training.backtest.block_causes``): lists and block rules block the same requests
whatever the pair, so only the model's share (``MODEL_SCORE_BLOCK``) moves with it.

    >>> period = tuning_period(history, bundle, since="2026-05-01", ground_truth=truth)
    >>> result = tune_period(period, policy, Constraints(max_reviews_per_day=150))
    >>> result.proposal.review, result.proposal.block, result.proposal.feasible
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure

from features import History
from features.policy_fields import load_with_catalogue
from riskmodel.engine import Scorer, decide_frame
from riskmodel.errors import DataError
from riskmodel.policy import Policy
from riskmodel.units import DAY, EPOCH, iso, to_micros
from training.backtest import (
    BLOCK_COLUMNS,
    MODEL_BLOCK,
    block_causes,
    blocks_by_cause,
    engine_frame,
)
from training.dataset import latest_labels, latest_time

__all__ = [
    "Constraints",
    "Period",
    "Proposal",
    "Tuning",
    "Violation",
    "current_pair",
    "grid",
    "patch_policy_text",
    "plot_tuning",
    "propose",
    "tradeoff",
    "tune",
    "tune_period",
    "tuning_period",
    "with_thresholds",
    "write_policy",
]

# Probe pairs: scores 0.25 / 0.6 / 0.9 earn approve / review / block under (0.5, 0.75);
# (0.8, 0.9) keeps 0.6 an approve, which tells the tuned requests from the others.
_PROBE = (0.5, 0.75)
_ELSEWHERE = (0.8, 0.9)
_PROBE_SCORES = (0.25, 0.6, 0.9)


# --- constraints ------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A constraint the proposed pair misses: its value there and the limit."""

    constraint: str
    value: float
    limit: float

    def __str__(self) -> str:
        return f"{self.constraint}: {self.value:.4g} against a limit of {self.limit:.4g}"


@dataclass(frozen=True)
class _Limit:
    name: str
    column: str
    bound: float
    upper: bool  # value <= bound; else value >= bound
    scale: float  # what one unit of relative excess is

    def excess(self, values: np.ndarray) -> np.ndarray:
        gap = values - self.bound if self.upper else self.bound - values
        return np.asarray(np.maximum(gap, 0.0) / max(self.bound, self.scale), dtype=float)


@dataclass(frozen=True)
class Constraints:
    """What a risk manager states. Shares are of money (amount asked back):
    ``max_honest_blocked_share`` of the honest amount, blocked; ``max_honest_held_share``
    of the honest amount, reviewed or blocked; ``min_abuse_caught_share`` of the abusive
    amount, reviewed or blocked. ``reviews_per_day``: "mean" (over the period's days) or
    "max" (the busiest day) for ``max_reviews_per_day``. Hard ceilings on honest requests
    blocked outright, by count: ``max_honest_blocks`` (requests) and
    ``max_honest_block_rate`` (a share of the honest requests).

    At least one of ``max_reviews_per_day`` and ``max_honest_held_share`` is needed:
    without a limit on what is held, reviewing everything catches the most abuse."""

    max_reviews_per_day: float | None = None
    reviews_per_day: str = "mean"
    max_honest_blocked_share: float | None = None
    max_honest_held_share: float | None = None
    min_abuse_caught_share: float | None = None
    max_honest_blocks: int | None = None
    max_honest_block_rate: float | None = None

    def __post_init__(self) -> None:
        if self.reviews_per_day not in ("mean", "max"):
            raise DataError(f"reviews_per_day is 'mean' or 'max', not {self.reviews_per_day!r}")
        if self.max_reviews_per_day is not None and not self.max_reviews_per_day >= 0:
            raise DataError(f"max_reviews_per_day must be >= 0, got {self.max_reviews_per_day}")
        blocks = self.max_honest_blocks
        if blocks is not None and (
            isinstance(blocks, bool) or not isinstance(blocks, int | np.integer) or not blocks >= 0
        ):
            raise DataError(
                "max_honest_blocks is a number of honest requests blocked: a whole number, "
                f"0 or more, got {blocks!r}"
            )
        for name in (
            "max_honest_blocked_share",
            "max_honest_held_share",
            "min_abuse_caught_share",
            "max_honest_block_rate",
        ):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise DataError(f"{name} is a share between 0 and 1, got {value}")
        if self.max_reviews_per_day is None and self.max_honest_held_share is None:
            raise DataError(
                "state a limit on reviews a day (max_reviews_per_day) or on the honest amount "
                "held (max_honest_held_share): without one, reviewing everything catches the "
                "most abuse"
            )

    def limits(self) -> list[_Limit]:
        out = []
        if self.max_reviews_per_day is not None:
            column = f"reviews_per_day_{self.reviews_per_day}"
            out.append(_Limit("max_reviews_per_day", column, self.max_reviews_per_day, True, 1.0))
        if self.max_honest_blocked_share is not None:
            out.append(
                _Limit(
                    "max_honest_blocked_share",
                    "honest_blocked_amount_share",
                    self.max_honest_blocked_share,
                    True,
                    1e-3,
                )
            )
        if self.max_honest_held_share is not None:
            out.append(
                _Limit(
                    "max_honest_held_share",
                    "honest_held_amount_share",
                    self.max_honest_held_share,
                    True,
                    1e-3,
                )
            )
        if self.min_abuse_caught_share is not None:
            out.append(
                _Limit(
                    "min_abuse_caught_share",
                    "abuse_caught_amount_share",
                    self.min_abuse_caught_share,
                    False,
                    1e-3,
                )
            )
        if self.max_honest_blocks is not None:
            out.append(
                _Limit("max_honest_blocks", "honest_blocked", self.max_honest_blocks, True, 1.0)
            )
        if self.max_honest_block_rate is not None:
            out.append(
                _Limit(
                    "max_honest_block_rate",
                    "honest_block_rate",
                    self.max_honest_block_rate,
                    True,
                    1e-3,
                )
            )
        return out

    def describe(self) -> str:
        words = []
        for limit in self.limits():
            if limit.name == "max_reviews_per_day":
                words.append(f"reviews a day ({self.reviews_per_day}) <= {limit.bound:g}")
            elif limit.name == "max_honest_blocks":
                words.append(f"honest requests blocked <= {limit.bound:g}")
            elif limit.name == "max_honest_block_rate":
                words.append(f"honest requests blocked (of honest requests) <= {limit.bound:.3%}")
            else:
                what = limit.name.removeprefix("max_").removeprefix("min_").replace("_", " ")
                sign = "<=" if limit.upper else ">="
                words.append(f"{what} (of amount) {sign} {limit.bound:.2%}")
        return "; ".join(words)


# --- the period -------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """Requests to tune on: the engine's input frame, the model's scores, the outcomes."""

    frame: pd.DataFrame
    scores: np.ndarray
    is_abuse: np.ndarray
    requested_at: np.ndarray  # store microseconds
    judged_against: str
    model_version: str | None

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def amount(self) -> np.ndarray:
        """Amount asked back, currency units."""
        return np.asarray(self.frame["amount"].to_numpy(dtype=float), dtype=float)

    @property
    def day(self) -> np.ndarray:
        return self.requested_at // DAY


def tuning_period(
    history: History,
    scorer: Scorer,
    *,
    since: datetime | str | int | None = None,
    until: datetime | str | int | None = None,
    ground_truth: pd.DataFrame | None = None,
    maturity_days: float = 30.0,
) -> Period:
    """Requests in [since, until), each scored on its point-in-time features.

    Outcomes are the simulator's ground truth when given (every request counts), else the
    latest label known at the history's end, a request never judged counting as honest;
    then requests younger than ``maturity_days`` at the history's end are left out, since
    their abuse may not be known yet.
    """
    start, end = to_micros(since), to_micros(until)
    if ground_truth is None:
        mature_end = latest_time(history) + 1 - int(maturity_days * DAY)
        end = mature_end if end is None else min(end, mature_end)
    requests = history.refund_requests
    times = pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64)
    keep = np.ones(len(times), dtype=bool)
    if start is not None:
        keep &= times >= start
    if end is not None:
        keep &= times < end
    if not keep.any():
        window = f"[{iso(start) if start is not None else '-'}, {iso(end) if end else '-'})"
        mature = "" if ground_truth is not None else f" with outcomes mature ({maturity_days:g} d)"
        raise DataError(f"no refund request in the tuning period {window}{mature}")
    requests = requests[keep].reset_index(drop=True)
    frame = engine_frame(history, requests)
    scores = np.asarray(scorer.score(frame), dtype=float)
    ids = frame.index.to_numpy(dtype=object)
    if ground_truth is not None:
        truth = ground_truth.set_index("request_id")["is_abuse"].reindex(ids)
        if truth.isna().any():
            missing = ids[truth.isna().to_numpy()]
            raise DataError(
                f"ground truth has no row for {len(missing)} requests, e.g. {missing[0]!r}"
            )
        is_abuse, judged = truth.to_numpy(dtype=bool), "ground truth"
    else:
        verdicts = latest_labels(history.labels).reindex(ids)
        is_abuse, judged = (
            verdicts.fillna(False).to_numpy(dtype=bool),
            "labels (unlabelled as honest)",
        )
    return Period(frame, scores, is_abuse, times[keep], judged, scorer.version)


# --- the policy with other thresholds ---------------------------------------------------


def _check_segment(policy: Policy, segment: str | None) -> None:
    names = [s.name for s in policy.spec.thresholds.segments]
    if segment is not None and segment not in names:
        raise DataError(
            f"policy {policy.version} has no segment {segment!r} (segments: "
            f"{', '.join(names) or 'none'})"
        )


def _pairs(
    policy: Policy,
    pair_for: Callable[[str | None], tuple[float, float]],
    green_review: float | None = None,
) -> Policy:
    spec = policy.spec
    thresholds = spec.thresholds
    segments = [
        s.model_copy(update=dict(zip(("review", "block"), pair_for(s.name), strict=True)))
        for s in thresholds.segments
    ]
    review, block = pair_for(None)
    update: dict[str, Any] = {
        "thresholds": thresholds.model_copy(
            update={"review": review, "block": block, "segments": segments}
        )
    }
    if green_review is not None and spec.green_channel is not None:
        update["green_channel"] = spec.green_channel.model_copy(
            update={"review_threshold": green_review}
        )
    return replace(policy, spec=spec.model_copy(update=update))


def current_pair(policy: Policy, segment: str | None = None) -> tuple[float, float]:
    """The (review, block) pair the policy has for ``segment`` (None: the default)."""
    _check_segment(policy, segment)
    thresholds = policy.spec.thresholds
    if segment is None:
        return thresholds.review, thresholds.block
    found = next(s for s in thresholds.segments if s.name == segment)
    return found.review, found.block


def with_thresholds(
    policy: Policy, review: float, block: float, segment: str | None = None
) -> Policy:
    """``policy`` with the default pair (or ``segment``'s) set to (review, block), in
    memory; everything else, the version and the hash included, stays."""
    _check_segment(policy, segment)
    if not 0.0 <= review < block <= 1.0:
        raise DataError(f"thresholds need 0 <= review < block <= 1, got {review} and {block}")
    original = {s.name: (s.review, s.block) for s in policy.spec.thresholds.segments}
    default = (policy.spec.thresholds.review, policy.spec.thresholds.block)

    def pair_for(name: str | None) -> tuple[float, float]:
        if name == segment:
            return review, block
        return default if name is None else original[name]

    return _pairs(policy, pair_for)


# --- the trade-off table ----------------------------------------------------------------


def grid(step: float = 0.01, include: Sequence[float] = ()) -> np.ndarray:
    """Threshold levels: multiples of ``step`` in (0, 1], plus ``include``, sorted."""
    if not 0.0 < step <= 0.5:
        raise DataError(f"the grid step must be in (0, 0.5], got {step}")
    count = int(np.floor(1.0 / step + 1e-9))
    # From decimal text, so a level equals the float a policy file with that text reads.
    levels = {float(f"{i * step:.6f}") for i in range(1, count + 1)}
    for value in include:
        if not 0.0 <= value <= 1.0:
            raise DataError(f"a threshold level must be in [0, 1], got {value}")
        levels.add(float(value))
    return np.array(sorted(levels), dtype=float)


def _severity(decided: pd.DataFrame) -> np.ndarray:
    decision = decided["decision"].to_numpy(dtype=object)
    return np.where(decision == "block", 2, np.where(decision == "review", 1, 0)).astype(np.int8)


def _has(decided: pd.DataFrame, code: str) -> np.ndarray:
    return np.array([code in codes for codes in decided["reason_codes"]], dtype=bool)


@dataclass(frozen=True)
class _Rows:
    """Per request, what the pair cannot change and what it can."""

    fixed: np.ndarray  # bool: the decision does not depend on the tuned pair
    fixed_severity: np.ndarray  # the decision under the policy as it stands
    by_verdict: tuple[np.ndarray, np.ndarray, np.ndarray]  # severity if the model says 0/1/2
    capped: np.ndarray  # bool: green channel and score below its review threshold
    payable_cents: np.ndarray
    fixed_cause: np.ndarray  # the cause of a block no pair changes, else None


def _decompose(period: Period, policy: Policy, segment: str | None) -> _Rows:
    frame, scores = period.frame, period.scores
    n = len(frame)

    def decided(probe: Policy, values: np.ndarray) -> pd.DataFrame:
        return decide_frame(frame, values, probe, decided_at=EPOCH)  # due times: not reported

    as_is = decided(policy, scores)
    # One probe policy: the tuned pair at _PROBE, every other pair at _ELSEWHERE and no
    # green-channel lift. Score 0.6 then reviews exactly the requests the tuned pair
    # decides, which tells them apart; on those, 0.25 / 0.6 / 0.9 earn approve / review /
    # block from the model, whatever else holds.
    probe = _pairs(policy, lambda name: _PROBE if name == segment else _ELSEWHERE, 0.0)
    runs = [decided(probe, np.full(n, s)) for s in _PROBE_SCORES]
    tuned = _has(runs[1], "MODEL_SCORE_REVIEW")
    with np.errstate(invalid="ignore"):
        valid = (scores >= 0.0) & (scores <= 1.0)
    tuned &= valid  # no score: a degraded review whatever the pair
    green = _has(as_is, "GREEN_CHANNEL")
    lift = policy.spec.green_channel.review_threshold if policy.spec.green_channel else 0.0
    with np.errstate(invalid="ignore"):
        capped = tuned & green & ~(scores >= lift)
    severities = (_severity(runs[0]), _severity(runs[1]), _severity(runs[2]))
    payable = runs[0]["approved_cents"].to_numpy(dtype=np.int64)
    # A block the pair cannot change: an untuned request's, or one that a list or a block
    # rule makes even when the model approves. Its cause is the same under every pair.
    fixed_cause = block_causes(as_is, policy)
    fixed_cause[~(~tuned | (severities[0] == 2))] = None
    return _Rows(~tuned, _severity(as_is), severities, capped, payable, fixed_cause)


def _verdicts(rows: _Rows, bucket: np.ndarray, i: int, j: int) -> np.ndarray:
    """The model's verdict per request under levels i < j (the engine's step 3)."""
    above = (bucket > i).astype(np.int8) + (bucket > j).astype(np.int8)
    # A green-channel score below the lifted review threshold reviews nowhere: the
    # engine raises review to min(max(review, lift), block).
    return np.where(rows.capped, 2 * (bucket > j), above).astype(np.int8)


def _severity_at(rows: _Rows, bucket: np.ndarray, i: int, j: int) -> np.ndarray:
    verdict = _verdicts(rows, bucket, i, j)
    chosen = np.choose(verdict, rows.by_verdict)
    return np.where(rows.fixed, rows.fixed_severity, chosen).astype(np.int8)


def _weights(
    severity: np.ndarray, abuse: np.ndarray, cents: np.ndarray, payable: np.ndarray
) -> dict[str, np.ndarray]:
    held, review, block, approve = severity >= 1, severity == 1, severity == 2, severity == 0
    honest = ~abuse
    return {
        "reviews": review * 1.0,
        "blocks": block * 1.0,
        "abuse_caught": (held & abuse) * 1.0,
        "abuse_caught_cents": np.where(held & abuse, cents, 0) * 1.0,
        "abuse_blocked": (block & abuse) * 1.0,
        "abuse_blocked_cents": np.where(block & abuse, cents, 0) * 1.0,
        "honest_held": (held & honest) * 1.0,
        "honest_held_cents": np.where(held & honest, cents, 0) * 1.0,
        "honest_blocked": (block & honest) * 1.0,
        "honest_blocked_cents": np.where(block & honest, cents, 0) * 1.0,
        "paid_to_abuse_cents": np.where(approve & abuse, payable, 0) * 1.0,
        "paid_cents": np.where(approve, payable, 0) * 1.0,
    }


def tradeoff(
    period: Period,
    policy: Policy,
    *,
    segment: str | None = None,
    levels: np.ndarray | Sequence[float] | None = None,
) -> pd.DataFrame:
    """One row per candidate pair (``review`` < ``block``, both from ``levels``; default
    ``grid()``), with what the policy would decide on ``period`` with that pair in place
    of the default one (or ``segment``'s). The policy's own pair is always a row
    (``current`` True). Money is in currency units; shares of money are of the honest
    (or abusive) amount asked. The money columns come first: paid to abuse, honest amount
    held, honest requests blocked (``honest_block_rate``: of the honest requests)."""
    return _tradeoff(period, policy, segment, levels)[0]


def _tradeoff(
    period: Period,
    policy: Policy,
    segment: str | None,
    levels: np.ndarray | Sequence[float] | None,
) -> tuple[pd.DataFrame, _Rows]:
    now = current_pair(policy, segment)
    if levels is None:
        levels = grid(include=now)
    else:
        outside = [float(x) for x in levels if not 0.0 <= float(x) <= 1.0]
        if outside:
            raise DataError(f"threshold levels must be in [0, 1], got {outside[0]}")
        levels = np.array(sorted({float(x) for x in levels} | set(now)), dtype=float)
    rows = _decompose(period, policy, segment)
    if rows.fixed.all():
        which = "the default pair" if segment is None else f"segment {segment!r}"
        raise DataError(
            f"{which} of policy {policy.version} decides none of the {len(period):,} "
            "requests of the period (each matches an earlier segment, or has no score): "
            "nothing to tune"
        )
    count = len(levels)
    with np.errstate(invalid="ignore"):
        bucket = np.searchsorted(levels, np.nan_to_num(period.scores, nan=-1.0), side="right")
    abuse = period.is_abuse
    cents = np.rint(period.amount * 100).astype(np.int64)
    _, day = np.unique(period.day, return_inverse=True)
    days = int(day.max()) + 1 if len(day) else 1
    i, j = np.triu_indices(count, k=1)

    current_i, current_j = (
        int(np.searchsorted(levels, now[0])),
        int(np.searchsorted(levels, now[1])),
    )
    check = _severity_at(rows, bucket, current_i, current_j)
    if not np.array_equal(check, rows.fixed_severity):
        raise RuntimeError(
            "the trade-off table disagrees with the engine on the policy's own thresholds "
            f"for {int((check != rows.fixed_severity).sum())} requests"
        )

    fixed = rows.fixed
    free = ~fixed & ~rows.capped
    capped = ~fixed & rows.capped
    per_verdict = [_weights(s, abuse, cents, rows.payable_cents) for s in rows.by_verdict]
    base = _weights(rows.fixed_severity, abuse, cents, rows.payable_cents)
    # A free request in bucket k earns verdict 0 when k <= i, 1 when i < k <= j and 2 when
    # k > j; a capped one (green channel, below the lift) 0 when k <= j, else 2. So each
    # pair's sum splits at i and j into differences of cumulative sums per verdict.
    totals: dict[str, np.ndarray] = {}
    for name in base:
        total = np.full(len(i), base[name][fixed].sum())
        c = [_cumulative(bucket[free], w[name][free], count) for w in per_verdict]
        total += c[0][i] + c[1][j] - c[1][i] + c[2][count] - c[2][j]
        c = [_cumulative(bucket[capped], w[name][capped], count) for w in per_verdict]
        total += c[0][j] + c[2][count] - c[2][j]
        totals[name] = total
    daily = np.zeros((days, len(i)))
    daily += np.bincount(day[fixed], base["reviews"][fixed], minlength=days)[:, None]
    c = [
        _cumulative_by_day(bucket[free], day[free], w["reviews"][free], count, days)
        for w in per_verdict
    ]
    daily += c[0][:, i] + c[1][:, j] - c[1][:, i] + c[2][:, [count]] - c[2][:, j]
    c = [
        _cumulative_by_day(bucket[capped], day[capped], w["reviews"][capped], count, days)
        for w in per_verdict
    ]
    daily += c[0][:, j] + c[2][:, [count]] - c[2][:, j]
    table = _table(levels, i, j, (current_i, current_j), totals, daily, abuse, cents)
    return table, rows


def _cumulative(bucket: np.ndarray, weight: np.ndarray, count: int) -> np.ndarray:
    """c[k]: the weight of requests whose score is below level k (bucket <= k)."""
    return np.cumsum(np.bincount(bucket, weight, minlength=count + 1))


def _cumulative_by_day(
    bucket: np.ndarray, day: np.ndarray, weight: np.ndarray, count: int, days: int
) -> np.ndarray:
    flat = np.bincount(day * (count + 1) + bucket, weight, minlength=days * (count + 1))
    return np.cumsum(flat.reshape(days, count + 1), axis=1)


def _table(
    levels: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    current: tuple[int, int],
    totals: dict[str, np.ndarray],
    daily: np.ndarray,
    abuse: np.ndarray,
    cents: np.ndarray,
) -> pd.DataFrame:
    n = max(len(abuse), 1)
    abusive, honest = max(int(abuse.sum()), 1), max(int((~abuse).sum()), 1)
    abusive_cents = max(int(cents[abuse].sum()), 1)
    honest_cents = max(int(cents[~abuse].sum()), 1)
    t = {k: np.rint(v).astype(np.int64) for k, v in totals.items()}
    reviews = np.rint(daily).astype(np.int64)
    return pd.DataFrame(
        {
            "review": levels[i],
            "block": levels[j],
            "current": (i == current[0]) & (j == current[1]),
            "paid_to_abuse": t["paid_to_abuse_cents"] / 100,
            "paid_to_abuse_share": t["paid_to_abuse_cents"] / abusive_cents,
            "honest_held_amount": t["honest_held_cents"] / 100,
            "honest_held_amount_share": t["honest_held_cents"] / honest_cents,
            "honest_blocked": t["honest_blocked"],
            "honest_block_rate": t["honest_blocked"] / honest,
            "honest_blocked_amount": t["honest_blocked_cents"] / 100,
            "honest_blocked_amount_share": t["honest_blocked_cents"] / honest_cents,
            "requests": len(abuse),
            "approve_rate": (len(abuse) - t["reviews"] - t["blocks"]) / n,
            "review_rate": t["reviews"] / n,
            "block_rate": t["blocks"] / n,
            "reviews": t["reviews"],
            "reviews_per_day_mean": reviews.mean(axis=0),
            "reviews_per_day_max": reviews.max(axis=0).astype(float),
            "abuse_caught": t["abuse_caught"],
            "abuse_caught_share": t["abuse_caught"] / abusive,
            "abuse_caught_amount": t["abuse_caught_cents"] / 100,
            "abuse_caught_amount_share": t["abuse_caught_cents"] / abusive_cents,
            "abuse_blocked": t["abuse_blocked"],
            "abuse_blocked_amount": t["abuse_blocked_cents"] / 100,
            "honest_held": t["honest_held"],
            "honest_held_share": t["honest_held"] / honest,
            "paid_total": t["paid_cents"] / 100,
        }
    )


# --- the proposal -----------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    """The proposed pair (or, when ``feasible`` is False, the closest one) and its row;
    ``violations`` what it misses; ``best`` the best value any pair gives, per constraint."""

    feasible: bool
    row: pd.Series
    violations: tuple[Violation, ...]
    best: dict[str, float]
    candidates: int  # pairs meeting every constraint

    @property
    def review(self) -> float:
        return float(self.row["review"])

    @property
    def block(self) -> float:
        return float(self.row["block"])


def _preference(table: pd.DataFrame, honest_weight: float) -> np.ndarray:
    """Row positions, most preferred first (see the module docstring)."""
    # In cents, so that pairs holding the same requests tie exactly.
    abuse = np.rint(table["abuse_caught_amount"].to_numpy(dtype=float) * 100)
    honest = np.rint(table["honest_held_amount"].to_numpy(dtype=float) * 100)
    keys = (
        -table["block"].to_numpy(),
        -table["review"].to_numpy(),
        table["reviews"].to_numpy(),
        table["honest_blocked_amount"].to_numpy(),
        honest,
        -(abuse - honest_weight * honest),
    )
    return np.lexsort(keys)


def propose(table: pd.DataFrame, constraints: Constraints, honest_weight: float = 0.1) -> Proposal:
    """The preferred pair of ``table`` meeting ``constraints``, else the closest (see the
    module docstring for the preference and ``honest_weight``)."""
    if len(table) == 0:
        raise DataError("no threshold pair to choose from")
    if not honest_weight >= 0:
        raise DataError(f"honest_weight must be 0 or more, got {honest_weight}")
    limits = constraints.limits()
    excess = np.zeros(len(table))
    best: dict[str, float] = {}
    for limit in limits:
        values = table[limit.column].to_numpy(dtype=float)
        excess += limit.excess(values)
        best[limit.name] = float(values.min() if limit.upper else values.max())
    order = _preference(table, honest_weight)
    feasible = excess[order] == 0
    if feasible.any():
        chosen = int(order[np.argmax(feasible)])
    else:
        # The least excess; among equals, the preferred. A stable sort keeps that order.
        chosen = int(order[np.argsort(excess[order], kind="stable")[0]])
    row = table.iloc[chosen]
    violations = tuple(
        Violation(limit.name, float(row[limit.column]), limit.bound)
        for limit in limits
        if limit.excess(np.array([float(row[limit.column])]))[0] > 0
    )
    return Proposal(bool(feasible.any()), row, violations, best, int((excess == 0).sum()))


@dataclass(frozen=True)
class Tuning:
    """A trade-off table over pairs, the policy's own pair and the proposal."""

    table: pd.DataFrame
    proposal: Proposal
    constraints: Constraints
    honest_weight: float
    segment: str | None
    policy_version: str
    model_version: str | None
    judged_against: str
    start: str
    end: str
    days: int
    abusive: int
    abusive_amount: float
    honest_amount: float
    honest: int
    fixed_blocks: pd.DataFrame  # blocks no pair changes, per cause (BLOCK_COLUMNS)

    @property
    def current(self) -> pd.Series:
        return self.table[self.table["current"]].iloc[0]

    def blocks(self, row: pd.Series) -> pd.DataFrame:
        """The blocks of one row of ``table``, per cause (``BLOCK_COLUMNS``), adding up to
        the row's: the lists' and block rules' (the same for every pair) and the model's
        (``MODEL_SCORE_BLOCK``, what the row has beyond them). Most honest blocks first."""
        others = self.fixed_blocks.drop(MODEL_BLOCK, errors="ignore")
        model = {
            column: float(row[column]) - float(others[column].sum()) for column in BLOCK_COLUMNS
        }
        causes = [*(str(cause) for cause in others.index), MODEL_BLOCK]
        values = others[list(BLOCK_COLUMNS)].to_numpy(dtype=float).tolist()
        values.append([model[c] for c in BLOCK_COLUMNS])
        table = pd.DataFrame(values, index=pd.Index(causes, name="cause"), columns=BLOCK_COLUMNS)
        for column in ("honest_blocked_amount", "abuse_blocked_amount"):
            table[column] = table[column].round(2)
        for column in ("honest_blocked", "abuse_blocked"):
            table[column] = table[column].round().astype(np.int64)
        table = table[(table["honest_blocked"] > 0) | (table["abuse_blocked"] > 0)]
        return table.sort_values(
            ["honest_blocked", "abuse_blocked"], ascending=False, kind="stable"
        )

    @property
    def tuned(self) -> str:
        return "the default pair" if self.segment is None else f"segment {self.segment!r}"


def tune_period(
    period: Period,
    policy: Policy,
    constraints: Constraints,
    *,
    segment: str | None = None,
    levels: np.ndarray | Sequence[float] | None = None,
    honest_weight: float = 0.1,
) -> Tuning:
    """The trade-off table of ``period`` and the proposal under ``constraints``."""
    table, rows = _tradeoff(period, policy, segment, levels)
    amount = period.amount
    return Tuning(
        table=table,
        proposal=propose(table, constraints, honest_weight),
        constraints=constraints,
        honest_weight=honest_weight,
        segment=segment,
        policy_version=policy.version,
        model_version=period.model_version,
        judged_against=period.judged_against,
        start=iso(int(period.requested_at.min())),
        end=iso(int(period.requested_at.max())),
        days=len(np.unique(period.day)),
        abusive=int(period.is_abuse.sum()),
        abusive_amount=float(amount[period.is_abuse].sum()),
        honest_amount=float(amount[~period.is_abuse].sum()),
        honest=int((~period.is_abuse).sum()),
        fixed_blocks=blocks_by_cause(rows.fixed_cause, amount, period.is_abuse),
    )


def tune(
    history: History,
    policy: Policy,
    scorer: Scorer,
    constraints: Constraints,
    *,
    since: datetime | str | int | None = None,
    until: datetime | str | int | None = None,
    ground_truth: pd.DataFrame | None = None,
    maturity_days: float = 30.0,
    segment: str | None = None,
    levels: np.ndarray | Sequence[float] | None = None,
    honest_weight: float = 0.1,
) -> Tuning:
    """``tuning_period`` then ``tune_period``: everything from the history."""
    _check_segment(policy, segment)
    period = tuning_period(
        history,
        scorer,
        since=since,
        until=until,
        ground_truth=ground_truth,
        maturity_days=maturity_days,
    )
    return tune_period(
        period, policy, constraints, segment=segment, levels=levels, honest_weight=honest_weight
    )


# --- a patched copy of the policy file --------------------------------------------------


def patch_policy_text(
    text: str,
    review: float,
    block: float,
    segment: str | None = None,
    version: str | None = None,
) -> str:
    """The policy file's text with the default pair (or ``segment``'s) replaced, and the
    version if given. Only those scalars' characters change: comments, order, quoting
    and layout elsewhere stay as they were."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise DataError(f"the policy is not valid YAML: {exc}") from None
    thresholds = _child(root, "thresholds")
    owner = thresholds
    if segment is not None:
        segments = _child(thresholds, "segments") if thresholds is not None else None
        items = segments.value if isinstance(segments, yaml.SequenceNode) else []
        found = [s for s in items if _scalar(_child(s, "name")) == segment]
        owner = found[0] if found else None
    if owner is None:
        raise DataError(f"the policy file has no thresholds for {segment or 'the default'}")
    edits: list[tuple[yaml.Node, str]] = []
    for key, value in (("review", review), ("block", block)):
        node = _child(owner, key)
        if not isinstance(node, yaml.ScalarNode):
            raise DataError(f"the policy file has no plain {key} threshold to replace")
        edits.append((node, repr(float(value))))
    if version is not None:
        node = _child(root, "version")
        if not isinstance(node, yaml.ScalarNode):
            raise DataError("the policy file has no version to replace")
        edits.append((node, f'"{version}"' if _needs_quotes(version) else version))
    # From the end backwards, so earlier offsets stay right.
    for node, replacement in sorted(edits, key=lambda e: -e[0].start_mark.index):
        text = text[: node.start_mark.index] + replacement + text[node.end_mark.index :]
    return text


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _scalar(node: yaml.Node | None) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _needs_quotes(text: str) -> bool:
    return bool(yaml.safe_load(text) != text)


def write_policy(
    source: str | Path,
    out: str | Path,
    review: float,
    block: float,
    *,
    segment: str | None = None,
    version: str | None = None,
) -> Policy:
    """Write ``source`` with the pair replaced to ``out`` (see ``patch_policy_text``),
    then load it as the service would and check it holds that pair and nothing else new.
    List files named by the policy are read from beside ``out``: copy them along."""
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise DataError(f"{out}: write the tuned policy to a new file, not over {source}")
    before = load_with_catalogue(source)
    expected = with_thresholds(before, review, block, segment).spec  # refuses a bad pair
    if version is not None:
        expected = expected.model_copy(update={"version": version})
    text = patch_policy_text(source.read_text(encoding="utf-8"), review, block, segment, version)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    try:
        after = load_with_catalogue(partial)
        if after.spec.thresholds != expected.thresholds or after.version != expected.version:
            raise DataError(f"{out}: the patched policy does not read back as intended")
    except Exception:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)
    return replace(after, source=str(out))


# --- the plot ---------------------------------------------------------------------------


def plot_tuning(tuning: Tuning, path: str | Path) -> Path:
    """A PNG: every pair's abuse caught against its review load, then the review and the
    block threshold each moved alone around the proposal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table, proposal, current = tuning.table, tuning.proposal.row, tuning.current
    load = f"reviews_per_day_{tuning.constraints.reviews_per_day}"
    figure = Figure(figsize=(17, 5), layout="constrained")
    frontier, by_review, by_block = figure.subplots(1, 3)

    excess = np.zeros(len(table))
    for limit in tuning.constraints.limits():
        excess += limit.excess(table[limit.column].to_numpy(dtype=float))
    ok = excess == 0
    frontier.scatter(
        table[load][~ok],
        table["abuse_caught_amount_share"][~ok],
        s=4,
        c="lightgrey",
        label="misses a constraint",
    )
    frontier.scatter(
        table[load][ok],
        table["abuse_caught_amount_share"][ok],
        s=4,
        c="tab:green",
        label="meets the constraints",
    )
    frontier.scatter(
        [current[load]],
        [current["abuse_caught_amount_share"]],
        marker="X",
        s=90,
        c="black",
        label=f"current {current['review']:g}/{current['block']:g}",
    )
    frontier.scatter(
        [proposal[load]],
        [proposal["abuse_caught_amount_share"]],
        marker="*",
        s=180,
        c="tab:red",
        label=f"proposed {proposal['review']:g}/{proposal['block']:g}",
    )
    if tuning.constraints.max_reviews_per_day is not None:
        frontier.axvline(tuning.constraints.max_reviews_per_day, color="tab:red", linestyle=":")
    frontier.set_xlabel(f"reviews per day ({tuning.constraints.reviews_per_day})")
    frontier.set_ylabel("share of abusive amount held")
    frontier.set_title("Every review / block pair")
    frontier.legend(fontsize="small", loc="lower right")

    row = table[table["block"] == proposal["block"]].sort_values("review")
    by_review.plot(row["review"], row["abuse_caught_amount_share"], label="abusive amount held")
    by_review.plot(row["review"], row["honest_held_amount_share"], label="honest amount held")
    by_review.set_xlabel(f"review threshold (block {proposal['block']:g})")
    by_review.set_ylabel("share of amount")
    load_axis = by_review.twinx()
    load_axis.plot(
        row["review"], row[load], color="tab:purple", linestyle="--", label="reviews per day"
    )
    load_axis.set_ylabel("reviews per day (dashed)")
    by_review.axvline(proposal["review"], color="tab:red", linestyle=":")
    by_review.legend(fontsize="small", loc="center right")
    by_review.set_title("Moving the review threshold")

    col = table[table["review"] == proposal["review"]].sort_values("block")
    # One point when the review threshold sits at the top of the grid: show it.
    by_block.plot(
        col["block"],
        col["honest_blocked_amount_share"],
        marker=".",
        markersize=4,
        label="honest amount blocked",
    )
    by_block.plot(
        col["block"],
        col["abuse_blocked"] / max(tuning.abusive, 1),
        label="abusive requests blocked",
    )
    if tuning.constraints.max_honest_blocked_share is not None:
        by_block.axhline(
            tuning.constraints.max_honest_blocked_share, color="tab:red", linestyle=":"
        )
    by_block.set_xlabel(f"block threshold (review {proposal['review']:g})")
    by_block.set_ylabel("share")
    block_load = by_block.twinx()
    block_load.plot(col["block"], col[load], color="tab:purple", linestyle="--")
    block_load.set_ylabel("reviews per day (dashed)")
    by_block.axvline(proposal["block"], color="tab:red", linestyle=":")
    by_block.legend(fontsize="small", loc="center right")
    by_block.set_title("Moving the block threshold")
    figure.suptitle(
        f"Policy {tuning.policy_version}, {tuning.tuned}; model {tuning.model_version}; "
        f"{tuning.start[:10]} to {tuning.end[:10]}, outcomes from {tuning.judged_against}"
    )
    figure.savefig(path, dpi=100)
    return path
