"""Evaluation measures, as plain functions of outcomes, scores, amounts and days.

``y`` is 1 for abuse and 0 for honest; ``score`` is the calibrated probability. Measures
that are undefined on the data given (an AUC with one class) are None, never a made-up
number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

__all__ = [
    "amount_caught_at_top",
    "daily_precision_at_k",
    "money_at_thresholds",
    "ranking_metrics",
    "recall_at_fpr",
    "recall_by_pattern",
    "reliability",
    "top_share_threshold",
]


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(np.sum(y)) < len(y)


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float = 0.01) -> float | None:
    """The largest share of abuse caught while flagging at most ``fpr`` of honest requests."""
    if not _both_classes(y):
        return None
    false_pos, true_pos, _ = roc_curve(y, score)
    return float(true_pos[false_pos <= fpr].max())


def ranking_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    both = _both_classes(y)
    return {
        "roc_auc": float(roc_auc_score(y, score)) if both else None,
        "average_precision": float(average_precision_score(y, score)) if both else None,
        "recall_at_1pct_fpr": recall_at_fpr(y, score, 0.01),
        "brier": float(brier_score_loss(y, score, pos_label=1)) if len(y) else None,
        "abuse_rate": float(np.mean(y)) if len(y) else None,
        "mean_score": float(np.mean(score)) if len(y) else None,
    }


def top_share_threshold(score: np.ndarray, share: float) -> float:
    """The score above which lie the top ``share`` of requests."""
    if not len(score):
        return 1.0
    return float(np.quantile(score, 1 - share, method="higher"))


def amount_caught_at_top(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, share: float = 0.05
) -> dict[str, float | None]:
    """Reviewing the top ``share`` of requests by score: the abusive amount it catches and
    the honest amount it holds, each as a share of its total."""
    k = int(np.ceil(share * len(score)))
    top = np.zeros(len(score), dtype=bool)
    top[np.argsort(-score, kind="stable")[:k]] = True
    abusive, honest = amount * (y == 1), amount * (y == 0)
    return {
        "share_reviewed": share,
        "abusive_amount_caught": _share(abusive[top].sum(), abusive.sum()),
        "honest_amount_held": _share(honest[top].sum(), honest.sum()),
        "abuse_recall": _share(np.sum(top & (y == 1)), np.sum(y == 1)),
    }


def _share(part: float, whole: float) -> float | None:
    return float(part / whole) if whole > 0 else None


def daily_precision_at_k(
    y: np.ndarray, score: np.ndarray, day: np.ndarray, capacity: int
) -> dict[str, Any]:
    """Each day, reviewers look at the ``capacity`` highest-scored requests: the precision
    and the abuse caught, per day and on average."""
    frame = pd.DataFrame({"y": y, "score": score, "day": day})
    frame = frame.sort_values(["day", "score"], ascending=[True, False], kind="stable")
    top = frame.groupby("day", sort=True).head(capacity)
    per_day = top.groupby("day", sort=True)["y"].agg(["mean", "sum", "size"])
    total_abuse = frame.groupby("day", sort=True)["y"].sum()
    caught = float(per_day["sum"].sum())
    return {
        "capacity_per_day": capacity,
        "days": len(per_day),
        "mean_precision": float(per_day["mean"].mean()) if len(per_day) else None,
        "abuse_caught": _share(caught, float(total_abuse.sum())),
        "per_day": {
            str(d): {"reviewed": int(r["size"]), "abusive": int(r["sum"])}
            for d, r in per_day.iterrows()
        },
    }


def money_at_thresholds(
    y: np.ndarray,
    score: np.ndarray,
    amount: np.ndarray,
    day: np.ndarray,
    thresholds: Sequence[float],
) -> list[dict[str, float | None]]:
    """At each candidate threshold: abusive amount caught, honest amount held (absolute
    and as shares), requests flagged and the review load per day."""
    days = max(len(np.unique(day)), 1)
    abusive, honest = amount * (y == 1), amount * (y == 0)
    rows = []
    for threshold in thresholds:
        flagged = score >= threshold
        rows.append(
            {
                "threshold": float(threshold),
                "flagged": int(flagged.sum()),
                "flagged_per_day": float(flagged.sum() / days),
                "precision": _share(float(np.sum(flagged & (y == 1))), float(flagged.sum())),
                "recall": _share(float(np.sum(flagged & (y == 1))), float(np.sum(y == 1))),
                "abusive_amount_caught": float(abusive[flagged].sum()),
                "abusive_amount_caught_share": _share(abusive[flagged].sum(), abusive.sum()),
                "honest_amount_held": float(honest[flagged].sum()),
                "honest_amount_held_share": _share(honest[flagged].sum(), honest.sum()),
            }
        )
    return rows


def reliability(y: np.ndarray, score: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed abuse rate in bins of equal count (the reliability curve)."""
    if not len(y):
        return []
    order = np.argsort(score, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, len(order))):
        rows.append(
            {
                "mean_score": float(score[chunk].mean()),
                "observed_rate": float(y[chunk].mean()),
                "count": len(chunk),
            }
        )
    return rows


def recall_by_pattern(
    pattern: np.ndarray, truth: np.ndarray, score: np.ndarray, threshold: float
) -> dict[str, dict[str, float | int]]:
    """Per ground-truth pattern: requests, and the share flagged at ``threshold`` (recall
    for an abuse pattern, honest requests held for an honest one)."""
    out: dict[str, dict[str, float | int]] = {}
    flagged = score >= threshold
    for name in sorted(set(pattern.tolist())):
        rows = pattern == name
        out[str(name)] = {
            "abusive": bool(truth[rows].all()),
            "requests": int(rows.sum()),
            "flagged_share": float(flagged[rows].mean()),
        }
    return out
