"""The ``--dask`` option of the commands that build features, and the builder it names.

Dask is an optional extra: nothing here imports it until a command is given an address,
so ``riskmodel --help`` and the service never pay for it (``docs/dask.md``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from features.offline import FeatureBuilder, build_features
from riskmodel.errors import DataError

__all__ = ["add_dask_option", "feature_builder", "on_dask", "tables_on_dask"]


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


@contextmanager
def tables_on_dask(
    address: str, directory: Path | None, database_url: str | None = None
) -> Iterator[tuple[Any, Any, list[Any]]]:
    """A client of the cluster at ``address`` (closed on leaving), the history's tables
    and the checks to run beside the work on them (``features.dask.repeated_keys``).

    From a dataset ``directory`` the workers read the files, and the checks find a key
    repeated across them; without one, the store at ``database_url`` is read here and
    sent to the cluster (no checks: the store's keys are unique).
    """
    from features.history import load_history

    dask = on_dask(address)
    client = dask.connect(address)
    try:
        if directory is not None:
            tables = dask.Tables.read(str(directory))
            yield client, tables, dask.repeated_keys(tables)
        elif database_url is not None:
            yield client, dask.Tables.from_history(load_history(database_url)), []
        else:
            raise ValueError("a dataset directory or a database URL is needed")
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
