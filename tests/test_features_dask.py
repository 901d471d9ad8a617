"""Features on a Dask cluster equal the single-machine engine's, value for value.

On the session's local cluster (``conftest.dask_client``): two single-threaded worker
processes, which ran the property test about a third faster than two threads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.history import History, load_history
from features.offline import build_features
from features.policy_fields import load_with_catalogue
from riskmodel.cli import main
from riskmodel.policy import STARTER_POLICY
from training.backtest import backtest

from .exports import as_folders
from .histories import histories

distributed = pytest.importorskip("distributed")

import dask.dataframe as dd  # noqa: E402

from features.dask import OnCluster, Tables, build_on_dask, write_partitions  # noqa: E402

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


@pytest.fixture(scope="module")
def client(dask_client: distributed.Client) -> distributed.Client:
    return dask_client


def _on_cluster(client: distributed.Client, history: History, parts: int) -> pd.DataFrame:
    built = build_on_dask(Tables.from_history(history, parts), partitions=parts)
    frames: list[pd.DataFrame] = client.gather(client.compute(built.to_delayed()))
    return pd.concat(frames)


@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), parts=st.sampled_from([1, 2, 3]))
def test_random_histories_give_the_single_machine_table(
    client: distributed.Client, history: History, parts: int
) -> None:
    # Same columns, values, dtypes (categoricals' levels too) and row order.
    pd.testing.assert_frame_equal(_on_cluster(client, history, parts), build_features(history))


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(history=histories(), data=st.data())
def test_some_requests_some_features_and_context_columns(
    client: distributed.Client, history: History, data: st.DataObject
) -> None:
    requests = history.refund_requests
    chosen = data.draw(st.lists(st.sampled_from(range(len(requests))), min_size=1, max_size=5))
    asked = requests.iloc[chosen].reset_index(drop=True)  # repeats and any order
    names = ["user_abuse_rate_30d", "days_used_underclaimed", "device_users_seen"]
    context = ("order_service_days", "order_payment_account")
    expected = build_features(history, asked, names, context=context)
    got = OnCluster(client, partitions=2)(history, asked, names, context=context)
    pd.testing.assert_frame_equal(got, expected)


def test_a_folder_per_table_reads_as_the_files(tmp_path: Path) -> None:
    folders = as_folders(SAMPLE, tmp_path / "folders", 3)
    one, other = load_history(SAMPLE), load_history(folders)
    for name in ("users", "orders", "usage", "refund_requests", "labels", "rates"):
        pd.testing.assert_frame_equal(getattr(other, name), getattr(one, name))


def test_the_command_on_a_cluster_writes_the_single_machine_table(
    client: distributed.Client, tmp_path: Path
) -> None:
    folders = as_folders(SAMPLE, tmp_path / "folders", 3)
    alone, spread = tmp_path / "alone.parquet", tmp_path / "spread.parquet"
    assert main(["features", "build", "--from", str(SAMPLE), "--out", str(alone)]) == 0
    address = client.scheduler.address
    command = ["features", "build", "--from", str(folders), "--out", str(spread)]
    assert main([*command, "--dask", address]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(spread), pd.read_parquet(alone))


def test_a_failed_build_leaves_no_table(
    client: distributed.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = as_folders(SAMPLE, tmp_path / "folders", 3)
    # A bad row in the last file of the orders: found by a worker, mid-build.
    last = folders / "orders" / "part-2.parquet"
    orders = pd.read_parquet(last)
    orders.loc[orders.index[-1], "amount"] = -5
    orders.to_parquet(last)
    out = tmp_path / "features.parquet"
    out.write_bytes(b"the table of an earlier build")
    command = ["features", "build", "--from", str(folders), "--out", str(out)]
    assert main([*command, "--dask", client.scheduler.address]) == 1
    assert "failed on the cluster, nothing written" in capsys.readouterr().err
    assert out.read_bytes() == b"the table of an earlier build"  # untouched
    assert not out.with_suffix(".parquet.partial").exists()


def test_a_full_disk_is_reported_as_a_full_disk_not_as_the_cluster(
    client: distributed.Client, tmp_path: Path
) -> None:
    """What fails writing a partition on the command's machine is said as it is; the
    file is removed all the same."""
    table = dd.from_pandas(pd.DataFrame({"x": range(10)}), npartitions=3)
    out = tmp_path / "out.parquet"

    @contextmanager
    def full(path: Path) -> Iterator[Callable[[pd.DataFrame], None]]:
        path.write_bytes(b"the first partition")

        def write(part: pd.DataFrame) -> None:
            raise OSError(28, "No space left on device")

        yield write

    with pytest.raises(OSError, match="No space left on device"):
        write_partitions(client, table, out, full)
    assert not out.exists()


@pytest.mark.parametrize("table", ["orders", "usage"])
def test_a_key_repeated_across_files_fails_the_build_and_names_it(
    client: distributed.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str
) -> None:
    # Each file is valid alone; together they hold a row twice, which every feature
    # reading the table would count twice. A repeated order also breaks the build further
    # on; a repeated day of use does not, and only the check stops it.
    folders = as_folders(SAMPLE, tmp_path / "folders", 3)
    again = pd.read_parquet(folders / table / "part-0.parquet").iloc[[5]]
    last = folders / table / "part-2.parquet"
    pd.concat([pd.read_parquet(last), again]).to_parquet(last)
    out = tmp_path / "features.parquet"
    command = ["features", "build", "--from", str(folders), "--out", str(out)]
    assert main([*command, "--dask", client.scheduler.address]) == 1
    err = capsys.readouterr().err
    key = f"order_id='{again['order_id'].iloc[0]}'"
    if table == "usage":
        key += f", used_at='{pd.Timestamp(again['used_at'].iloc[0]).isoformat()}'"
    assert f"{table}: duplicate key ({key}) across its files" in err
    assert not out.exists()
    assert not out.with_suffix(".parquet.partial").exists()


def test_neither_the_command_nor_the_package_imports_dask() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import features, training\n"
        "from riskmodel.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['features', 'build', '--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['backtest', '--help'])\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


class RefundCountScorer:
    """A stand-in model: the more refunds in 30 days, the riskier."""

    version = "count-1"

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.clip(frame["user_refunds_30d"].to_numpy(dtype=float) / 6, 0.0, 1.0)


def test_a_backtest_on_the_cluster_decides_as_on_one_machine(client: distributed.Client) -> None:
    history = load_history(SAMPLE)
    policy = load_with_catalogue(STARTER_POLICY)
    scorer = RefundCountScorer()
    alone = backtest(history, policy, scorer)  # type: ignore[arg-type]
    spread = backtest(history, policy, scorer, build=OnCluster(client))  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(spread.decisions, alone.decisions)
    assert spread.summary == alone.summary
    assert alone.summary["new"]["block_rate"] > 0  # something to get wrong


def _worker_pids(client: distributed.Client) -> dict[str, int]:
    return client.run(os.getpid)  # type: ignore[no-any-return]


def test_a_worker_killed_mid_build_gives_the_whole_table_or_none(tmp_path: Path) -> None:
    folders = as_folders(SAMPLE, tmp_path / "folders", 3)
    alone = tmp_path / "alone.parquet"
    assert main(["features", "build", "--from", str(SAMPLE), "--out", str(alone)]) == 0
    out = tmp_path / "spread.parquet"
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            local_directory=tmp_path / "dask",
        ) as cluster,
        distributed.Client(cluster) as watcher,
    ):
        pids = _worker_pids(watcher)
        command = ["features", "build", "--from", str(folders), "--out", str(out)]
        result: list[int] = []
        build = threading.Thread(
            target=lambda: result.append(main([*command, "--dask", cluster.scheduler_address]))
        )
        build.start()
        # Kill a worker once it holds finished pieces of the build: they are lost with it.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(watcher.has_what().values()):
            time.sleep(0.01)
        held = {address: len(keys) for address, keys in watcher.has_what().items()}
        victim = max(held, key=lambda address: held[address])
        assert held[victim] > 0
        assert build.is_alive(), "the build ended before the kill"
        os.kill(pids[victim], signal.SIGKILL)
        build.join(timeout=120)
    assert result, "the command did not end"
    print(f"killed a worker holding {held[victim]} pieces; the command answered {result[0]}")
    if result[0] == 0:  # the cluster ran the lost pieces again
        pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(alone))
    else:
        assert result[0] == 1
        assert not out.exists()
    assert not out.with_suffix(".parquet.partial").exists()
