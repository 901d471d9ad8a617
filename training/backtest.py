"""Policy backtests: replay past refund requests through a policy and a model.

Every request is decided as the service would have decided it then: its features are
point in time (``features.build_features``), the model scores them, and
``riskmodel.engine.decide_frame`` applies the policy. Against a second policy, the same
requests and scores go through both, and the requests whose decision changes are listed
with the reason codes each policy gave.

Outcomes come from the simulator's ground truth when there is one, else from the latest
label known for each request (a request without a label counts as honest, as in
training's evaluation). Money is reported in currency units.

    >>> result = backtest(history, policy, bundle, against=current)      # doctest: +SKIP
    >>> result.summary["new"]["abuse_caught_amount"]                     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

import features
from features import History
from riskmodel.engine import Scorer, decide_frame
from riskmodel.policy import Policy
from training.dataset import latest_labels

__all__ = ["Backtest", "backtest", "engine_frame", "summarise"]

_DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Backtest:
    """Per request decisions (``decisions``), the figures per policy (``summary``: "new"
    and, with ``against``, "current"), and the requests whose decision changes."""

    decisions: pd.DataFrame
    summary: Mapping[str, Mapping[str, float]]
    changes: pd.DataFrame
    judged_against: str
    model_version: str | None


def engine_frame(history: History, requests: pd.DataFrame | None = None) -> pd.DataFrame:
    """Point-in-time features of ``requests`` (default: all) plus the engine's request
    fields, in the engine's units (amounts in currency units), indexed by request id."""
    requests = history.refund_requests if requests is None else requests
    # The order's columns come with the features: joining 1M requests to 10M orders again
    # cost a third of the backtest.
    frame = features.build_features(
        history, requests, context=("order_service_days", "order_payment_account")
    )
    frame = frame.rename(
        columns={"order_service_days": "service_days", "order_payment_account": "payment_account"}
    )
    for name in ("request_id", "order_id", "user_id", "device_id", "ip", "channel"):
        frame[name] = requests[name].to_numpy(dtype=object)
    frame["amount"] = pd.to_numeric(requests["amount"]).to_numpy(dtype=float) / 100
    return frame


def _outcomes(
    history: History, ids: pd.Index, ground_truth: pd.DataFrame | None
) -> tuple[np.ndarray, str]:
    if ground_truth is not None:
        truth = ground_truth.set_index("request_id")["is_abuse"]
        found = truth.reindex(ids.to_numpy(dtype=object))
        return found.fillna(False).to_numpy(dtype=bool), "ground truth"
    verdicts = latest_labels(history.labels).reindex(ids.to_numpy(dtype=object))
    return verdicts.fillna(False).to_numpy(dtype=bool), "labels (unlabelled as honest)"


def summarise(
    decided: pd.DataFrame, amount: np.ndarray, is_abuse: np.ndarray, day: np.ndarray
) -> dict[str, float]:
    """Decision rates, abuse caught, honest refunds held, money paid and review load."""
    decision = decided["decision"].to_numpy(dtype=object)
    held = decision != "approve"
    review = decision == "review"
    block = decision == "block"
    honest = ~is_abuse
    paid = decided["approved_cents"].to_numpy(dtype=np.int64) / 100
    per_day = pd.Series(review).groupby(day).sum()
    n = max(len(decision), 1)
    return {
        "requests": float(len(decision)),
        "approve_rate": float((decision == "approve").sum() / n),
        "review_rate": float(review.sum() / n),
        "block_rate": float(block.sum() / n),
        "abusive_requests": float(is_abuse.sum()),
        "abuse_caught": float((held & is_abuse).sum()),
        "abuse_caught_share": float((held & is_abuse).sum() / max(is_abuse.sum(), 1)),
        "abuse_caught_amount": float(amount[held & is_abuse].sum()),
        "abuse_blocked": float((block & is_abuse).sum()),
        "paid_to_abuse": float(paid[is_abuse].sum()),
        "honest_requests": float(honest.sum()),
        "honest_held": float((held & honest).sum()),
        "honest_held_share": float((held & honest).sum() / max(honest.sum(), 1)),
        "honest_held_amount": float(amount[held & honest].sum()),
        "honest_blocked_amount": float(amount[block & honest].sum()),
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
) -> Backtest:
    """Replay the refund requests in [since, until) (store microseconds; default all)
    through ``policy`` (and ``against``), with ``scorer``'s scores (None: no model, so
    every request is a degraded review, as the service would answer)."""
    requests = history.refund_requests
    times = pd.to_numeric(requests["requested_at"]).to_numpy(dtype=np.int64)
    keep = np.ones(len(times), dtype=bool)
    if since is not None:
        keep &= times >= since
    if until is not None:
        keep &= times < until
    requests = requests[keep].reset_index(drop=True)
    frame = engine_frame(history, requests)
    scores = None if scorer is None else np.asarray(scorer.score(frame), dtype=float)
    # Due times are not reported; one decision time keeps the replay deterministic.
    moment = datetime(1970, 1, 1, tzinfo=UTC)
    new = decide_frame(frame, scores, policy, decided_at=moment)
    is_abuse, judged = _outcomes(history, frame.index, ground_truth)
    amount = frame["amount"].to_numpy(dtype=float)
    day = times[keep] // _DAY_US
    summary = {"new": summarise(new, amount, is_abuse, day)}
    decisions = pd.DataFrame(
        {
            "requested_at": times[keep],
            "amount": amount,
            "is_abuse": is_abuse,
            "score": new["score"].to_numpy(dtype=float),
            "decision": new["decision"].to_numpy(dtype=object),
            "approved_amount": new["approved_cents"].to_numpy(dtype=np.int64) / 100,
            "reason_codes": new["reason_codes"].to_numpy(dtype=object),
        },
        index=frame.index,
    )
    changes = decisions.iloc[:0]
    if against is not None:
        current = decide_frame(frame, scores, against, decided_at=moment)
        summary["current"] = summarise(current, amount, is_abuse, day)
        decisions["current_decision"] = current["decision"].to_numpy(dtype=object)
        decisions["current_reason_codes"] = current["reason_codes"].to_numpy(dtype=object)
        changed = decisions["decision"].to_numpy(dtype=object) != decisions[
            "current_decision"
        ].to_numpy(dtype=object)
        changes = decisions[changed]
    version = None if scorer is None else scorer.version
    return Backtest(decisions, summary, changes, judged, version)
