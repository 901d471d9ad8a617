"""How long the ``riskmodel`` command takes to start, beside two references.

Times, over several runs each in a fresh subprocess, ``riskmodel --help``,
``riskmodel serve --help`` and one real light command (``riskmodel keys list`` on an
empty keys file), beside ``python -c pass`` (the interpreter alone) and
``python -c "import pandas"`` (one heavy library) measured in the same run, so that the
ratios read the same on a fast or a slow machine. Prints the median and the fastest run
of each. Figures only: nothing is asserted (``tests/test_cli_startup.py`` holds the
behaviour: ``--help`` imports none of the heavy libraries).

    python benchmarks/startup.py
    python benchmarks/startup.py --runs 15
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _riskmodel() -> list[str]:
    # The console script installed beside this interpreter is what a person types.
    script = Path(sys.executable).with_name("riskmodel")
    found = str(script) if script.is_file() else shutil.which("riskmodel")
    return [found] if found else [sys.executable, "-m", "riskmodel.cli"]


def _seconds(argv: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (7)")
    args = parser.parse_args()

    riskmodel = _riskmodel()
    with tempfile.TemporaryDirectory() as tmp:
        keys = str(Path(tmp) / "api_keys.json")
        commands = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ('python -c "import pandas"', [sys.executable, "-c", "import pandas"]),
            ("riskmodel --help", [*riskmodel, "--help"]),
            ("riskmodel serve --help", [*riskmodel, "serve", "--help"]),
            ("riskmodel keys list", [*riskmodel, "keys", "list", "--api-keys", keys]),
        ]
        _seconds(commands[0][1], 2)  # the interpreter and the disk cache warmed first
        figures = {label: _seconds(argv, args.runs) for label, argv in commands}

    pandas = statistics.median(figures['python -c "import pandas"'])
    print(f"start-up, {args.runs} runs each: median and fastest, and the median against")
    print("importing pandas, measured in the same run")
    for label, times in figures.items():
        median = statistics.median(times)
        print(
            f"  {label:<28}{median:7.3f} s {min(times):7.3f} s"
            f"  {median / pandas:5.2f} x import pandas"
        )


if __name__ == "__main__":
    main()
