"""Trees boosted on a Dask cluster by LightGBM's own Dask module (``riskmodel train --dask``).

Only the boosting moves. The client cuts the trees' rows (train period and fresh verdicts,
with their weights) into one piece per worker; ``lightgbm.dask.DaskLGBMClassifier`` grows
the trees with LightGBM's data-parallel learner, every split chosen on histograms summed
over all workers; the fitted Booster comes back to the client, where the calibration, the
report and the registry are as on one machine. The trees are not bit-for-bit the ones a
single machine grows (each worker bins the features it is given from its own piece, and
bagging draws rows per worker), so the metrics agree within a tolerance, not exactly. Nor
is a cluster run repeatable: LightGBM ranks the workers in an order that changes from run
to run, and the rank decides which worker's piece bins which feature. On the sample (500
rows a worker) that moved the test period's average precision by up to 0.065 (0.125 when
the rounds were chosen on a validation period of a few abusive requests); with large
shuffled pieces (LightGBM bins from up to 200,000 rows of each) the bins hardly depend on
which piece they come from.

Early stopping: LightGBM's Dask interface does not support it (4.7.0, the installed
version; lightgbm-org/LightGBM issues 3712 and 4493): each worker would judge its own
slice of the validation period and one that stops alone leaves the others waiting on the
network (issue 6351). So the cluster boosts ``max_rounds`` rounds, and the client replays
the early-stopping rule afterwards on the whole validation period: the same metric, the
same patience (``early_stopping_rounds``), the first best round kept (``best_iteration``),
as ``lightgbm.early_stopping`` would have chosen. The cost is the rounds boosted past the
stop: set ``--max-rounds`` near where single-machine runs stop.

Dask is an optional extra: this module imports it, so only the ``--dask`` branches import
this module.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import dask.array as da
import lightgbm
import numpy as np
from distributed import Client
from lightgbm.dask import DaskLGBMClassifier
from sklearn.metrics import average_precision_score

from training.model import TrainConfig, TreeData

__all__ = ["BoostOnCluster", "best_rounds"]


@dataclass(frozen=True)
class BoostOnCluster:
    """A ``training.model.Boost`` that grows the trees on the cluster of ``client``."""

    client: Client

    def __call__(self, data: TreeData, config: TrainConfig) -> lightgbm.Booster:
        params = config.lightgbm_params(rows=len(data.train[1]))
        # Each worker boosts with its own threads: LightGBM's Dask module sets them.
        del params["num_threads"]
        model = DaskLGBMClassifier(client=self.client, n_estimators=config.max_rounds, **params)
        matrix, label, weight = self._pieces(data, config.seed)
        with warnings.catch_warnings():
            # The classifier always hands its n_jobs to the Dask module, which always says
            # it ignores it (it gives each worker its own threads): nothing to act on.
            warnings.filterwarnings("ignore", "Parameter n_jobs will be ignored", UserWarning)
            model.fit(
                matrix,
                label,
                sample_weight=weight,
                feature_name=data.names,
                categorical_feature=data.categorical,
            )
        booster: lightgbm.Booster = model.to_local().booster_
        if config.early_stopping_rounds:
            booster.best_iteration = best_rounds(booster, data.valid, config)
        return booster

    def _pieces(self, data: TreeData, seed: int) -> tuple[da.Array, ...]:
        """The trees' matrix, labels and weights as Dask arrays of one chunk per worker,
        sent to the cluster.

        Rows are shuffled first: each worker bins the features it is given from its own
        piece, so every piece should look like the whole period, not one stretch of it."""
        rows = len(data.train[1])
        workers = max(1, min(len(self.client.nthreads()), rows))
        chunks = np.array_split(np.random.default_rng(seed).permutation(rows), workers)
        arrays = (data.train[0], data.train[1].astype(float), data.weights.astype(float))
        return tuple(self._sent([array[c] for c in chunks]) for array in arrays)

    def _sent(self, pieces: list[np.ndarray]) -> da.Array:
        """``pieces`` as one Dask array, each piece a chunk held by a worker: scattered,
        not written into the task graph, which would be as large as the data and go
        through the scheduler. Not hashed: equal pieces (weights of 1) stay apart."""
        futures = self.client.scatter(pieces, hash=False)
        return da.concatenate(
            [
                da.from_delayed(future, shape=piece.shape, dtype=piece.dtype)
                for future, piece in zip(futures, pieces, strict=True)
            ]
        )


def best_rounds(
    booster: lightgbm.Booster, valid: tuple[np.ndarray, np.ndarray], config: TrainConfig
) -> int:
    """The number of rounds ``lightgbm.early_stopping`` would keep had it watched
    ``config.stopping_metric`` on ``valid`` while ``booster`` grew: the first round with
    the best score, looking no further than ``config.early_stopping_rounds`` past it."""
    matrix, label = valid
    margin = np.zeros(len(label))
    best, best_round = np.inf, 0
    for i in range(booster.current_iteration()):
        margin += booster.predict(matrix, start_iteration=i, num_iteration=1, raw_score=True)
        loss = _loss(config.stopping_metric, label, margin)
        if loss < best:
            best, best_round = loss, i
        elif i - best_round >= config.early_stopping_rounds:
            break
    return best_round + 1


def _loss(metric: str, label: np.ndarray, margin: np.ndarray) -> float:
    """``metric`` as a number to minimise (average precision negated)."""
    if metric == "average_precision":
        return -float(average_precision_score(label, margin))
    # log(1 + e^m) - y m: the binary log-loss of the margin, without overflow.
    return float(np.mean(np.logaddexp(0.0, margin) - label * margin))
