"""``riskmodel score`` and ``riskmodel backtest`` with ``--dask --from DIR``: a history
no one machine holds.

The workers read the dataset directory and compute the point-in-time features
(``features.dask.build_on_dask``). Each partition of requests comes back to the client in
the requests' order and is scored and decided there by the functions the single machine
uses: ``training.evaluation.scored`` (appended to the scores' file),
``training.backtest.replay`` (kept: a few values a request, for the backtest's figures).
The client holds the model, the policies and one partition of features, never the
history nor every request's features. The model and the policies stay on the client: a
partition of features is what moves, as it does for ``features build --dask``.

Dask is an optional extra: this module imports it, so only the ``--dask`` branch of the
command imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from dask.delayed import Delayed
from distributed import Client

from features.dask import Tables, build_on_dask, each_partition, write_partitions
from riskmodel.bundle import ModelBundle
from riskmodel.engine import Scorer
from riskmodel.policy import Policy
from riskmodel.units import to_micros
from training.backtest import (
    ENGINE_CONTEXT,
    Backtest,
    Replayed,
    backtest_of,
    engine_columns,
    outcomes,
    replay,
)
from training.evaluation import scored

__all__ = ["backtest_on_dask", "write_scores"]


def write_scores(
    client: Client,
    tables: Tables,
    bundle: ModelBundle,
    path: Path,
    *,
    since: datetime | str | int | None = None,
    policy: Policy | None = None,
    checks: Sequence[Delayed] = (),
) -> int:
    """Write the rows ``training.evaluation.score_requests`` gives for ``tables``' history
    to the CSV file at ``path``, byte for byte the file ``riskmodel score`` writes on one
    machine. ``checks`` and failures as ``features.dask.write_partitions``: never a
    partial file. Returns the requests scored."""
    requests = None
    start = to_micros(since)
    if start is not None:
        every = tables.refund_requests
        requests = every[every["requested_at"] >= start]
    table = build_on_dask(tables, requests, context=() if policy is None else ENGINE_CONTEXT)
    decided_at = datetime.now(UTC)

    def rows(part: pd.DataFrame) -> pd.DataFrame:
        frame = part if policy is None else engine_columns(part)
        return scored(frame, bundle, policy, decided_at=decided_at)

    @contextmanager
    def csv(path: Path) -> Iterator[Callable[[pd.DataFrame], None]]:
        with path.open("w", newline="") as file:
            written = [False]

            def write(part: pd.DataFrame) -> None:
                rows(part).to_csv(file, index=False, header=not written[0], float_format="%.6f")
                written[0] = True

            # Every partition is written, an empty one too: the header is always there.
            yield write

    return write_partitions(client, table, path, csv, checks, what="the scoring")


def backtest_on_dask(
    client: Client,
    tables: Tables,
    policy: Policy,
    scorer: Scorer | None,
    *,
    against: Policy | None = None,
    ground_truth: pd.DataFrame | None = None,
    since: int | None = None,
    until: int | None = None,
    checks: Sequence[Delayed] = (),
) -> Backtest:
    """``training.backtest.backtest`` of ``tables``' history, figure for figure. The
    client keeps a few values of each request (its decisions, time, amount and score)
    and, without ``ground_truth``, the labels."""
    requests = every = tables.refund_requests
    if since is not None:
        requests = requests[requests["requested_at"] >= since]
    if until is not None:
        requests = requests[requests["requested_at"] < until]
    asked = None if requests is every else requests
    table = build_on_dask(tables, asked, context=(*ENGINE_CONTEXT, "requested_at"))
    parts: list[Replayed] = []

    def use(part: pd.DataFrame) -> None:
        if len(part):
            times = part["requested_at"].to_numpy(dtype=np.int64)
            frame = engine_columns(part.drop(columns="requested_at"))
            parts.append(replay(frame, times, policy, scorer, against))

    each_partition(client, table, use, checks, what="the backtest")
    if not parts:  # as on one machine: an empty period decides nothing, and says so
        empty = engine_columns(table._meta.drop(columns="requested_at"))
        parts.append(replay(empty, np.zeros(0, dtype=np.int64), policy, scorer, against))
    replayed = Replayed.joined(parts)
    labels = tables.labels.compute() if ground_truth is None else tables.labels._meta
    is_abuse, judged = outcomes(labels, replayed.ids, ground_truth)
    return backtest_of(replayed, policy, against, is_abuse, judged, scorer)
