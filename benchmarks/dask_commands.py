"""``riskmodel score`` and ``backtest`` with ``--dask`` at scale: the client's memory and
the time, beside one machine.

    python benchmarks/dask_commands.py [--command score|backtest] [--size 300k/3M]
                                       [--old-tree DIR] [--policy FILE]

Writes (once) the partitioned dataset of ``benchmarks/dask_scale.py`` for the size, trains
a small model on ``data/sample`` into a scratch registry (scoring reads only the
catalogue's features, so any model of this catalogue scores any history), then runs, each
as the command a user types, one after the other:

- the command (``score``, or ``backtest`` of the starter policy against itself with its
  review threshold lowered) with ``--from DIR`` on one machine: the reference of the
  same run;
- the same with ``--dask ADDRESS`` against a local cluster of 2 single-threaded workers
  limited to 6 GB each, started here;
- with ``--old-tree``, the same command from another checkout (an older build) against the
  same cluster, so that old and new read as a ratio on one machine at one time.

For each it prints the wall time, the command's own peak resident memory (on a cluster:
the client's) and the workers' peaks, sampled every 0.2 s, and whether the file is the
one machine's byte for byte (for ``backtest``, the report and the changed requests).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dask_scale import (
    GB,
    ROOT,
    _label,
    _Sampler,
    local_cluster,
    parse_size,
    worker_pids,
    write_dataset,
)

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"


def _riskmodel(tree: Path, *argv: str) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(tree)!r}); "
            "from riskmodel.cli import main; sys.exit(main(sys.argv[1:]))", *argv]  # fmt: skip


def _outputs(command: str, into: Path) -> tuple[list[str], list[Path]]:
    """The command's options that write its files into ``into``, and those files."""
    into.mkdir()
    if command == "score":
        return ["--out", str(into / "scores.csv")], [into / "scores.csv"]
    report, changes = into / "report", into / "changes.csv"
    files = [report / "report.json", report / "report.md", changes]
    return ["--out", str(report), "--changes", str(changes)], files


def _run(
    title: str,
    argv: list[str],
    cwd: Path,
    workers: dict[str, int],
    files: list[Path],
    reference: list[Path] | None = None,
) -> dict[str, Any]:
    """``argv`` as a child process, its memory and the workers' sampled as it runs; whether
    the files it wrote are ``reference``'s, byte for byte."""
    started = time.perf_counter()
    child = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with _Sampler({"command": child.pid, **workers}) as sampler:
        output, _ = child.communicate()
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"{title} failed ({child.returncode}):\n{output.decode()}")
    return {
        "title": title,
        "seconds": seconds,
        "command_gb": sampler.peaks["command"] / GB,
        "worker_gb": [sampler.peaks[name] / GB for name in sorted(workers)],
        "same": reference is None
        or all(f.read_bytes() == r.read_bytes() for f, r in zip(files, reference, strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--command", choices=["score", "backtest"], default="score")
    parser.add_argument("--size", default="300k/3M", help="requests/orders")
    parser.add_argument("--old-tree", type=Path, help="a checkout of an older build to compare")
    parser.add_argument(
        "--policy", type=Path, help="the policy: score decides with it, backtest tries it"
    )
    args = parser.parse_args()
    requests, orders = parse_size(args.size)
    directory = ROOT / _label(requests, orders).replace("/", "-")
    stats = write_dataset(directory, requests, orders)
    print(
        f"dataset {directory.name}: {stats['rows']['refund_requests']:,} requests, "
        f"{stats['rows']['orders']:,} orders, {stats['files_per_table']} files a table; "
        f"{os.cpu_count()} CPUs"
    )
    from distributed import Client

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        registry = work / "registry"
        train = ["train", "--from", str(SAMPLE), "--registry", str(registry)]
        subprocess.run(
            _riskmodel(REPO, *train, "--maturity-days", "20", "--promote", "champion"),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        common = [args.command, "--from", str(directory), "--registry", str(registry)]
        policy = None if args.policy is None else args.policy.resolve()
        if args.command == "backtest":
            starter = REPO / "riskmodel" / "policy" / "starter.yaml"
            if policy is None:
                policy = work / "lower.yaml"
                text = starter.read_text().replace("  review: 0.30\n", "  review: 0.10\n", 1)
                policy.write_text(text)
            common += ["--against", str(starter)]
        if policy is not None:
            common += ["--policy", str(policy)]
        with local_cluster() as cluster, Client(cluster) as client:
            workers = worker_pids(client)
            address = cluster.scheduler_address
            runs = []
            options, alone = _outputs(args.command, work / "alone")
            argv = _riskmodel(REPO, *common, *options)
            runs.append(_run("one machine", argv, REPO, {}, alone))
            trees = [("this build", REPO)]
            if args.old_tree:
                trees.append((f"old build ({args.old_tree.name})", args.old_tree.resolve()))
            for title, tree in trees:
                options, files = _outputs(args.command, work / f"run-{len(runs)}")
                argv = _riskmodel(tree, *common, *options, "--dask", address)
                runs.append(_run(f"{title}, cluster", argv, tree, workers, files, alone))
                client.restart()  # each run's workers start from nothing
                workers = worker_pids(client)
    reference = runs[0]
    print(f"{args.command}:")
    print(f"{'run':<32} {'seconds':>8} {'x one':>6} {'command GB':>11} {'workers GB':>13}  files")
    for run in runs:
        same = "the same" if run["same"] else "DIFFERS"
        peaks = " / ".join(f"{gb:.2f}" for gb in run["worker_gb"]) or "-"
        print(
            f"{run['title']:<32} {run['seconds']:>8.1f} "
            f"{run['seconds'] / reference['seconds']:>6.2f} {run['command_gb']:>11.2f} "
            f"{peaks:>13}  {same}"
        )


if __name__ == "__main__":
    main()
