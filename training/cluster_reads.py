"""``riskmodel score --dask --from DIR``: the scores of a history no one machine holds.

The workers read the dataset directory and compute the point-in-time features
(``features.dask.build_on_dask``); each partition of requests comes back to the client in
the requests' order, is scored there (and decided, with a policy) by the functions the
single machine uses (``training.evaluation.scored``), and is appended to the file. The
client holds the model, the policy and one partition of features, never the history nor
every request's features. The model and the policy stay on the client: a partition of
features is what moves, as it does for ``features build --dask``.

Dask is an optional extra: this module imports it, so only the ``--dask`` branch of the
command imports this module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from dask.delayed import Delayed
from distributed import Client

from features.dask import Tables, build_on_dask, write_partitions
from riskmodel.bundle import ModelBundle
from riskmodel.policy import Policy
from riskmodel.units import to_micros
from training.backtest import ENGINE_CONTEXT, engine_columns
from training.evaluation import SCORE_COLUMNS, scored

__all__ = ["write_scores"]


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

            yield write
            if not written[0]:  # no partition at all: the header alone, as on one machine
                columns = SCORE_COLUMNS[:2] if policy is None else SCORE_COLUMNS
                pd.DataFrame(columns=list(columns)).to_csv(file, index=False)

    return write_partitions(client, table, path, csv, checks, what="the scoring")
