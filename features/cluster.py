"""The ``--dask`` option of the commands that build features, and the builder it names.

Dask is an optional extra: nothing here imports it until a command is given an address,
so ``riskmodel --help`` and the service never pay for it (``docs/dask.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from features.offline import FeatureBuilder, build_features
from riskmodel.errors import DataError

__all__ = ["add_dask_option", "feature_builder", "on_dask"]


def add_dask_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="compute on the Dask cluster at ADDRESS (tcp://host:8786), or on a new local one "
        "of N workers (local:N); needs the dask extra (docs/dask.md)",
    )


@contextmanager
def feature_builder(address: str | None) -> Iterator[FeatureBuilder]:
    """``build_features`` without an address; with one, the same on that Dask cluster,
    whose client (and local cluster, for ``local:N``) closes on leaving."""
    if address is None:
        yield build_features
        return
    dask = on_dask(address)
    client = dask.connect(address)
    try:
        yield dask.OnCluster(client)
    finally:
        client.close()


def on_dask(address: str) -> ModuleType:
    """``features.dask``, imported now, or a clear error if the extra is missing."""
    try:
        import features.dask
    except ImportError as exc:
        raise DataError(
            f"--dask {address}: Dask is not installed; install the dask extra "
            "(pip install 'refund-risk[dask]')"
        ) from exc
    return features.dask
