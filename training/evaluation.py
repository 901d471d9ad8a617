"""Models on a period they never saw: batch scoring, evaluation, comparison.

>>> period = evaluation_period(history, since="2026-05-01", ground_truth=truth)  # doctest: +SKIP
>>> compare([candidate, champion], period)          # one Evaluation per model, same requests
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

import features
from features import FeatureBuilder, History
from riskmodel.bundle import ModelBundle
from riskmodel.engine import decide_frame
from riskmodel.errors import DataError
from riskmodel.policy import Policy
from riskmodel.units import DAY, iso, to_micros
from training.backtest import engine_frame
from training.dataset import Examples, evaluation_examples, latest_time
from training.report import Evaluation, evaluate

__all__ = ["compare", "evaluation_period", "score_requests", "scored"]


def score_requests(
    bundle: ModelBundle,
    history: History,
    since: datetime | str | int | None = None,
    policy: Policy | None = None,
    build: FeatureBuilder = features.build_features,
) -> pd.DataFrame:
    """``request_id, score`` for every refund request from ``since`` on, each scored on
    its point-in-time features (what the model would have said at the request's time),
    computed by ``build`` (``features.dask.OnCluster`` on a Dask cluster).

    With a ``policy``, also the decision the engine gives with that score:
    ``decision``, ``approved_amount`` (currency units), ``review_queue`` and
    ``reason_codes`` (space-separated). ``training.cluster_reads.write_scores`` writes the
    same rows from a dataset the cluster reads.
    """
    requests = history.refund_requests
    start = to_micros(since)
    if start is not None:
        keep = (pd.to_numeric(requests["requested_at"]) >= start).to_numpy(dtype=bool)
        requests = requests[keep].reset_index(drop=True)
    if policy is None:
        return scored(build(history, requests), bundle)
    # Review due times are not written, so the decision time does not matter here.
    frame = engine_frame(history, requests, build)
    return scored(frame, bundle, policy, decided_at=datetime.now(UTC))


def scored(
    table: pd.DataFrame,
    bundle: ModelBundle,
    policy: Policy | None = None,
    *,
    decided_at: datetime | None = None,
) -> pd.DataFrame:
    """``score_requests``' rows for the requests of ``table``: a feature table, or with
    a ``policy`` an ``engine_frame`` (decided as at ``decided_at``)."""
    if policy is None:
        return pd.DataFrame(
            {"request_id": table.index.to_numpy(dtype=object), "score": bundle.score(table)}
        )
    scores = bundle.score(table)
    decided = decide_frame(table, scores, policy, decided_at=decided_at or datetime.now(UTC))
    return pd.DataFrame(
        {
            "request_id": table.index.to_numpy(dtype=object),
            "score": scores,
            "decision": decided["decision"].to_numpy(dtype=object),
            "approved_amount": decided["approved_cents"].to_numpy(dtype="int64") / 100,
            "review_queue": decided["review_queue"].to_numpy(dtype=object),
            "reason_codes": [" ".join(codes) for codes in decided["reason_codes"]],
        }
    )


def evaluation_period(
    history: History,
    since: datetime | str | int | None = None,
    until: datetime | str | int | None = None,
    ground_truth: pd.DataFrame | None = None,
    maturity_days: float = 30.0,
) -> Examples:
    """Requests in [since, until) with their outcomes, as evaluation examples.

    Against ground truth every request counts. Against labels, requests whose outcome is
    not mature by the history's end (``maturity_days``) are left out: their abuse may not
    be known yet, and counting them honest would flatter no one fairly.
    """
    start, end = to_micros(since), to_micros(until)
    if ground_truth is None:
        mature_end = latest_time(history) + 1 - int(maturity_days * DAY)
        end = mature_end if end is None else min(end, mature_end)
        if start is not None and end <= start:
            raise DataError(
                f"no request since {iso(start)} is mature ({maturity_days:g} days) in this "
                "history; evaluate on an earlier period or give the ground truth"
            )
    examples = evaluation_examples(history, start, end)
    return examples if ground_truth is None else examples.with_ground_truth(ground_truth)


def compare(bundles: Sequence[ModelBundle], examples: Examples) -> list[Evaluation]:
    """Each model on the same requests, first one first."""
    return [evaluate(bundle, examples) for bundle in bundles]
