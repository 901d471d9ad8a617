"""How long a change of what is live takes to reach every worker of a running service.

    python benchmarks/serve.py --sections fixed --rate-seconds 5   # the set-up, once
    python benchmarks/live_reach.py                                 # two workers on SQLite
    python benchmarks/live_reach.py --workers 4

Serves a copy of the serve benchmark's store with ``riskmodel serve --workers N``, then,
three times each: a reload of a policy file whose version changed, and the kill switch
turned on and off. After each change it asks ``/readyz`` on new connections (the kernel
spreads them over the workers) until 30 answers in a row show the change; the time to the
first of those is the time to reach every worker. The followers look every second
(``serving.live.FOLLOW_SECONDS``): that is the reference the figures read against.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from serving.auth import Role, create_key
from serving.live import FOLLOW_SECONDS

ROOT = Path(__file__).resolve().parents[1]
_IN_A_ROW = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> dict[str, Any]:
    # A new connection each time, so that every worker is asked.
    with httpx.Client(timeout=10) as client:
        answer: dict[str, Any] = client.get(f"{url}/readyz").json()
        return answer


def _reach(url: str, holds: Callable[[dict[str, Any]], bool], started: float) -> float:
    """Seconds from ``started`` until ``_IN_A_ROW`` answers in a row hold."""
    row, first = 0, None
    while row < _IN_A_ROW:
        if holds(_ready(url)):
            first = time.monotonic() if row == 0 else first
            row += 1
        else:
            row = 0
        if time.monotonic() - started > 30:
            raise SystemExit("the change did not reach every worker within 30 s")
    assert first is not None
    return first - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench-serve")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bench: Path = args.dir
    if not (bench / "base.db").is_file():
        raise SystemExit(f"no set-up in {bench}: run python benchmarks/serve.py first")
    work = Path(tempfile.mkdtemp(prefix="live-reach-"))
    try:
        store = work / "store.db"
        shutil.copy(bench / "base.db", store)
        policy = work / "policy.yaml"
        original = (bench / "policy.yaml").read_text()
        policy.write_text(original)
        keys = work / "api_keys.json"
        admin = {"Authorization": f"Bearer {create_key(keys, 'reach', [Role.ADMIN])}"}
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "riskmodel.cli", "serve", "--port", str(port),
                   "--workers", str(args.workers), "--database-url", f"sqlite:///{store}",
                   "--registry", str(bench / "registry"), "--policy", str(policy),
                   "--api-keys", str(keys), "--log-level", "warning"]  # fmt: skip
        server = subprocess.Popen(command, env=os.environ)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if _ready(url).get("ready"):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.3)
            print(f"{args.workers} workers on SQLite; followers look every {FOLLOW_SECONDS:g} s")
            reloads, switches = [], []
            for i in range(args.repeat):
                version = f"reach-{i}"
                policy.write_text(original.replace("version: starter-3", f"version: {version}"))
                started = time.monotonic()
                done = httpx.post(f"{url}/v1/admin/reload", headers=admin, timeout=60)
                done.raise_for_status()
                reloads.append(_reach(url, lambda r, v=version: r["policy_version"] == v, started))
                for mode in ("review", "off"):
                    started = time.monotonic()
                    httpx.post(
                        f"{url}/v1/admin/switch",
                        content=json.dumps({"mode": mode, "reason": "reach benchmark"}),
                        headers={**admin, "Content-Type": "application/json"},
                        timeout=60,
                    ).raise_for_status()
                    switches.append(_reach(url, lambda r, m=mode: r["switch"] == m, started))
            print("reload reaches every worker:  " + "  ".join(f"{s:.2f} s" for s in reloads))
            print("switch reaches every worker:  " + "  ".join(f"{s:.2f} s" for s in switches))
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
