"""Policy backtests: replay past refund requests through a policy and a model.

Every request is decided as the service would have decided it then: its features are
point in time (``features.build_features``), the model scores them, and
``riskmodel.engine.decide_frame`` applies the policy. Against a second policy, the same
requests and scores go through both, and the requests whose decision changes are listed
with the reason codes each policy gave.

Outcomes come from the simulator's ground truth when there is one, else from the latest
label known for each request (a request without a label counts as honest, as in
training's evaluation). Money is reported in currency units.

Money comes first: what was paid to abuse (approved amounts on abusive requests, and their
share of all the abusive amount asked), the honest amount held (asked by honest requests
reviewed or blocked) and the honest requests blocked, each block put down to the one
reason code that caused it (``block_causes``): a block list, else the first block rule in
the file, else the model's score (``MODEL_SCORE_BLOCK``), so the split adds up to the total.

    >>> result = backtest(history, policy, bundle, against=current)      # doctest: +SKIP
    >>> result.summary["new"]["paid_to_abuse"]                           # doctest: +SKIP
    >>> result.blocks["new"]  # honest and abusive blocks per cause     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import features
from features import FeatureBuilder, History
from riskmodel.domain import Decision
from riskmodel.engine import Scorer, decide_frame
from riskmodel.policy import LIST_KINDS, Policy
from riskmodel.units import DAY, EPOCH
from training.dataset import latest_labels

__all__ = [
    "BLOCK_COLUMNS",
    "ENGINE_CONTEXT",
    "MODEL_BLOCK",
    "Backtest",
    "Replayed",
    "backtest",
    "backtest_of",
    "block_causes",
    "blocks_by_cause",
    "engine_columns",
    "engine_frame",
    "outcomes",
    "replay",
    "summarise",
]

MODEL_BLOCK = "MODEL_SCORE_BLOCK"
"""The cause of a block that no list and no block rule made: the model's score."""

BLOCK_COLUMNS = ("honest_blocked", "honest_blocked_amount", "abuse_blocked", "abuse_blocked_amount")
"""The columns of ``blocks_by_cause``: counts of requests and amounts asked back."""


@dataclass(frozen=True)
class Backtest:
    """Per request decisions (``decisions``, with ``blocked_by``: the code that caused a
    block), the figures per policy (``summary``: "new" and, with ``against``, "current"),
    the blocks per cause and policy (``blocks``, see ``blocks_by_cause``), and the
    requests whose decision changes."""

    decisions: pd.DataFrame
    summary: Mapping[str, Mapping[str, float]]
    changes: pd.DataFrame
    judged_against: str
    model_version: str | None
    blocks: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def engine_frame(
    history: History,
    requests: pd.DataFrame | None = None,
    build: FeatureBuilder = features.build_features,
) -> pd.DataFrame:
    """Point-in-time features of ``requests`` (default: all) plus the engine's request
    fields, in the engine's units (amounts in currency units), indexed by request id.
    ``build`` computes the features (``features.dask.OnCluster`` on a cluster)."""
    requests = history.refund_requests if requests is None else requests
    return engine_columns(build(history, requests, context=ENGINE_CONTEXT))


ENGINE_CONTEXT = (
    "order_service_days",
    "order_payment_account",
    "request_id",
    "order_id",
    "user_id",
    "device_id",
    "ip",
    "channel",
    "amount",
)
"""What ``engine_frame`` asks the feature builder for beside the features: the request's
fields and its order's, from the frame the features were computed on (joining 1M requests
to 10M orders a second time cost a third of the backtest)."""


def engine_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``engine_frame`` of a feature table built with ``context=ENGINE_CONTEXT`` (by
    ``build_features``, or a partition of ``features.dask.build_on_dask``'s)."""
    return table.rename(
        columns={"order_service_days": "service_days", "order_payment_account": "payment_account"}
    )


def block_causes(decided: pd.DataFrame, policy: Policy) -> np.ndarray:
    """Per request (a row of ``decide_frame``'s answer under ``policy``), the reason code
    that made it a block, None when it is not one. One cause per block, the first in the
    engine's precedence: a block list (``LIST_BLOCK_...``, in the engine's order), else the
    first enabled block rule of the file that held, else the model's score
    (``MODEL_SCORE_BLOCK``; an allow list or an approve rule can soften only that one)."""
    rank = {f"LIST_BLOCK_{kind.removesuffix('s').upper()}": i for i, kind in enumerate(LIST_KINDS)}
    for rule in policy.spec.rules:
        if rule.enabled and rule.action is Decision.BLOCK:
            rank.setdefault(rule.code, len(rank))
    rank[MODEL_BLOCK] = len(rank)
    decision = decided["decision"].to_numpy(dtype=object)
    out = np.full(len(decision), None, dtype=object)
    found: dict[tuple[str, ...], str] = {}
    codes = decided["reason_codes"].to_numpy(dtype=object)
    for position in np.flatnonzero(decision == Decision.BLOCK.value):
        row = codes[position]
        cause = found.get(row)
        if cause is None:
            candidates = [code for code in row if code in rank]
            if not candidates:
                raise RuntimeError(
                    f"a block without a block list, a block rule or a model block: {row}"
                )
            cause = found[row] = min(candidates, key=rank.__getitem__)
        out[position] = cause
    return out


def blocks_by_cause(causes: np.ndarray, amount: np.ndarray, is_abuse: np.ndarray) -> pd.DataFrame:
    """Blocked requests per cause (``block_causes``): honest and abusive, counted and by
    amount asked (currency units); most honest requests blocked first. The rows add up to
    the blocks in all."""
    blocked = np.asarray(pd.notna(causes), dtype=bool)
    frame = pd.DataFrame(
        {
            "cause": causes[blocked],
            "honest_blocked": (~is_abuse[blocked]).astype(np.int64),
            "honest_blocked_amount": np.where(is_abuse[blocked], 0.0, amount[blocked]),
            "abuse_blocked": is_abuse[blocked].astype(np.int64),
            "abuse_blocked_amount": np.where(is_abuse[blocked], amount[blocked], 0.0),
        }
    )
    table = frame.groupby("cause", sort=True)[list(BLOCK_COLUMNS)].sum()
    return table.sort_values(["honest_blocked", "abuse_blocked"], ascending=False, kind="stable")


def summarise(
    decided: pd.DataFrame, amount: np.ndarray, is_abuse: np.ndarray, day: np.ndarray
) -> dict[str, float]:
    """Money first (paid to abuse, honest amount held, honest requests blocked), then
    decision rates, abuse caught, honest refunds held, money paid and review load. Shares
    of money are of the amount asked back by abusive (or honest) requests; rates are of
    requests."""
    decision = decided["decision"].to_numpy(dtype=object)
    held = decision != "approve"
    review = decision == "review"
    block = decision == "block"
    honest = ~is_abuse
    paid = decided["approved_cents"].to_numpy(dtype=np.int64) / 100
    per_day = pd.Series(review).groupby(day).sum()
    n = max(len(decision), 1)
    abusive_amount = float(amount[is_abuse].sum())
    honest_amount = float(amount[honest].sum())
    paid_to_abuse = float(paid[is_abuse].sum())
    honest_held_amount = float(amount[held & honest].sum())
    honest_blocked = float((block & honest).sum())
    honest_blocked_amount = float(amount[block & honest].sum())
    return {
        "paid_to_abuse": paid_to_abuse,
        "paid_to_abuse_share": paid_to_abuse / abusive_amount if abusive_amount else 0.0,
        "honest_held_amount": honest_held_amount,
        "honest_held_amount_share": honest_held_amount / honest_amount if honest_amount else 0.0,
        "honest_blocked": honest_blocked,
        "honest_block_rate": honest_blocked / max(honest.sum(), 1),
        "honest_blocked_amount": honest_blocked_amount,
        "honest_blocked_amount_share": (
            honest_blocked_amount / honest_amount if honest_amount else 0.0
        ),
        "abusive_amount": abusive_amount,
        "honest_amount": honest_amount,
        "requests": float(len(decision)),
        "approve_rate": float((decision == "approve").sum() / n),
        "review_rate": float(review.sum() / n),
        "block_rate": float(block.sum() / n),
        "abusive_requests": float(is_abuse.sum()),
        "abuse_caught": float((held & is_abuse).sum()),
        "abuse_caught_share": float((held & is_abuse).sum() / max(is_abuse.sum(), 1)),
        "abuse_caught_amount": float(amount[held & is_abuse].sum()),
        "abuse_blocked": float((block & is_abuse).sum()),
        "honest_requests": float(honest.sum()),
        "honest_held": float((held & honest).sum()),
        "honest_held_share": float((held & honest).sum() / max(honest.sum(), 1)),
        "paid_total": float(paid.sum()),
        "reviews_per_day_mean": float(per_day.mean()) if len(per_day) else 0.0,
        "reviews_per_day_max": float(per_day.max()) if len(per_day) else 0.0,
    }


def backtest(
    history: History,
    policy: Policy,
    scorer: Scorer | None,
    *,
    against: Policy | None = None,
    ground_truth: pd.DataFrame | None = None,
    since: int | None = None,
    until: int | None = None,
    build: FeatureBuilder = features.build_features,
) -> Backtest:
    """Replay the refund requests in [since, until) (store microseconds; default all)
    through ``policy`` (and ``against``), with ``scorer``'s scores (None: no model, so
    every request is a degraded review, as the service would answer). ``build`` computes
    the point-in-time features (``features.dask.OnCluster`` on a cluster)."""
    requests = history.refund_requests
    times = pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64)
    keep = np.ones(len(times), dtype=bool)
    if since is not None:
        keep &= times >= since
    if until is not None:
        keep &= times < until
    requests = requests[keep].reset_index(drop=True)
    frame = engine_frame(history, requests, build)
    replayed = replay(frame, times[keep], policy, scorer, against)
    is_abuse, judged = outcomes(history.labels, frame.index, ground_truth)
    return backtest_of(replayed, policy, against, is_abuse, judged, scorer)


@dataclass(frozen=True)
class Replayed:
    """Requests decided by a policy (``new``) and the one compared (``current``), with
    their ids, times (store microseconds), amounts (currency units) and scores: what a
    backtest keeps of each request once its features are gone."""

    ids: pd.Index
    times: np.ndarray
    amount: np.ndarray
    new: pd.DataFrame
    current: pd.DataFrame | None

    @classmethod
    def joined(cls, parts: Sequence[Replayed]) -> Replayed:
        """The parts as one, in their order (each part's requests in theirs)."""
        if len(parts) == 1:
            return parts[0]
        currents = [part.current for part in parts if part.current is not None]
        return cls(
            ids=pd.Index(np.concatenate([part.ids.to_numpy(dtype=object) for part in parts])),
            times=np.concatenate([part.times for part in parts]),
            amount=np.concatenate([part.amount for part in parts]),
            new=pd.concat([part.new for part in parts]),
            current=pd.concat(currents) if len(currents) == len(parts) else None,
        )


def replay(
    frame: pd.DataFrame,
    times: np.ndarray,
    policy: Policy,
    scorer: Scorer | None,
    against: Policy | None = None,
) -> Replayed:
    """The requests of ``frame`` (an ``engine_frame``; ``times`` their ``requested_at``)
    scored and decided by ``policy`` and ``against``."""
    scores = None if scorer is None else np.asarray(scorer.score(frame), dtype=float)

    def decided(by: Policy) -> pd.DataFrame:
        # Due times are not reported; one decision time keeps the replay deterministic.
        return decide_frame(frame, scores, by, decided_at=EPOCH)[list(_KEPT)]

    new, current = decided(policy), None if against is None else decided(against)
    amount = frame["amount"].to_numpy(dtype=float)
    return Replayed(frame.index, np.asarray(times, dtype=np.int64), amount, new, current)


_KEPT = ("decision", "score", "approved_cents", "reason_codes")
"""What a backtest reads of ``decide_frame``'s answer: a cluster's client keeps these for
every request replayed, so no more."""


def outcomes(
    labels: pd.DataFrame, ids: pd.Index, ground_truth: pd.DataFrame | None
) -> tuple[np.ndarray, str]:
    """Whether each request was abusive, and by what that is judged: the ground truth
    when there is one, else the latest label of each request (none: honest)."""
    if ground_truth is not None:
        truth = ground_truth.set_index("request_id")["is_abuse"]
        found = truth.reindex(ids.to_numpy(dtype=object))
        return found.fillna(False).to_numpy(dtype=bool), "ground truth"
    verdicts = latest_labels(labels).reindex(ids.to_numpy(dtype=object))
    return verdicts.fillna(False).to_numpy(dtype=bool), "labels (unlabelled as honest)"


def backtest_of(
    replayed: Replayed,
    policy: Policy,
    against: Policy | None,
    is_abuse: np.ndarray,
    judged: str,
    scorer: Scorer | None,
) -> Backtest:
    """The backtest of ``replayed`` requests, whose outcomes are ``is_abuse``."""
    new, amount = replayed.new, replayed.amount
    day = replayed.times // DAY
    summary = {"new": summarise(new, amount, is_abuse, day)}
    causes = block_causes(new, policy)
    blocks = {"new": blocks_by_cause(causes, amount, is_abuse)}
    decisions = pd.DataFrame(
        {
            "requested_at": replayed.times,
            "amount": amount,
            "is_abuse": is_abuse,
            "score": new["score"].to_numpy(dtype=float),
            "decision": new["decision"].to_numpy(dtype=object),
            "approved_amount": new["approved_cents"].to_numpy(dtype=np.int64) / 100,
            "reason_codes": new["reason_codes"].to_numpy(dtype=object),
            "blocked_by": causes,
        },
        index=replayed.ids,
    )
    changes = decisions.iloc[:0]
    current = replayed.current
    if against is not None and current is not None:
        summary["current"] = summarise(current, amount, is_abuse, day)
        current_causes = block_causes(current, against)
        blocks["current"] = blocks_by_cause(current_causes, amount, is_abuse)
        decisions["current_decision"] = current["decision"].to_numpy(dtype=object)
        decisions["current_reason_codes"] = current["reason_codes"].to_numpy(dtype=object)
        decisions["current_blocked_by"] = current_causes
        changed = decisions["decision"].to_numpy(dtype=object) != decisions[
            "current_decision"
        ].to_numpy(dtype=object)
        changes = decisions[changed]
    version = None if scorer is None else scorer.version
    return Backtest(decisions, summary, changes, judged, version, blocks)
