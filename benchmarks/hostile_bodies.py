"""What a hostile body costs the service: time to answer, size of the answer, the server's
memory, and how long ``/healthz`` waits meanwhile.

    python benchmarks/serve.py --sections fixed --rate-seconds 5   # the set-up, once
    python benchmarks/hostile_bodies.py

Serves the serve benchmark's store, model, policy and key (``data/bench-serve``) with
``uvicorn`` and ``serving.app:create_app`` in a process of its own, then sends, one at a
time:

- ``batch of 260,000 {}``: ``{"requests": [{}, {}, ...]}``, 780 KB, under the 1 MiB body
  limit;
- ``rows of 100,000 {}`` to ``/v1/events/users``;
- the batch again without a key;
- and, for reference in the same run, one decision that is refused as ``ahead_of_clock``
  (a request fully validated and answered without touching the store): what an ordinary
  small call costs on this machine today.

Each line prints the status, the seconds to answer, the answer's size, the server's
resident memory after it (from ``/proc``) and the slowest ``/healthz`` answer seen while
it was running (probed every 50 ms from a thread). Nothing is written to the store.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from serving.auth import Role, create_key

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start(bench: Path, keys: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RISKMODEL_DATABASE_URL": f"sqlite:///{bench / 'base.db'}",
        "RISKMODEL_REGISTRY": str(bench / "registry"),
        "RISKMODEL_POLICY": str(bench / "policy.yaml"),
        "RISKMODEL_API_KEYS": str(keys),
    }
    code = (
        "import uvicorn; uvicorn.run('serving.app:create_app', factory=True, "
        f"host='127.0.0.1', port={port}, log_level='warning')"
    )
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("the server stopped while starting")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not start within 120 s")


class _Probe:
    """``/healthz`` every 50 ms on a thread; the slowest answer while running."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self._stop = url, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

        self._first = threading.Event()

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(f"{self.url}/healthz")
                self.worst = max(self.worst, time.perf_counter() - started)
                self._first.set()
                self._stop.wait(0.05)

    def __enter__(self) -> _Probe:
        self._thread.start()
        self._first.wait()  # connected and answered once before the case starts
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "data" / "bench-serve")
    args = parser.parse_args()
    bench: Path = args.dir
    if not (bench / "registry").is_dir():
        raise SystemExit(f"no set-up in {bench}: run python benchmarks/serve.py first")
    keys = Path(tempfile.mkdtemp()) / "api_keys.json"
    key = create_key(keys, "hostile-bodies", [Role.DECIDE, Role.INGEST])
    headers = {"Authorization": f"Bearer {key}"}

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(bench, keys, port)
    try:
        _wait_ready(url, server)
        ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        small = {
            "request_id": "hostile-reference",
            "order_id": "o-none",
            "user_id": "u-none",
            "requested_at": ahead,
            "amount": "10.00",
            "reason": "not_as_described",
        }
        cases = [
            ("one small request (reference)", "/v1/decisions", json.dumps(small), headers),
            (
                "batch of 260,000 {}",
                "/v1/decisions:batch",
                _compact({"requests": [{}] * 260_000}),
                headers,
            ),
            (
                "rows of 100,000 {}",
                "/v1/events/users",
                _compact({"rows": [{}] * 100_000}),
                headers,
            ),
            (
                "batch of 260,000 {}, no key",
                "/v1/decisions:batch",
                _compact({"requests": [{}] * 260_000}),
                {},
            ),
        ]
        print(f"server RSS at start {_rss_mb(server.pid):,.0f} MB")
        print(f"{'case':32} {'body':>9} {'status':>6} {'seconds':>8} {'answer':>10} "
              f"{'RSS after':>10} {'worst /healthz':>15}")  # fmt: skip
        with httpx.Client(timeout=120) as client:
            for label, path, content, auth in cases:
                with _Probe(url) as probe:
                    started = time.perf_counter()
                    response = client.post(
                        f"{url}{path}",
                        content=content,
                        headers={**auth, "Content-Type": "application/json"},
                    )
                    seconds = time.perf_counter() - started
                print(
                    f"{label:32} {len(content) / 1024:>7,.0f} KB {response.status_code:>6} "
                    f"{seconds:>8.3f} {len(response.content) / 1024:>7,.1f} KB "
                    f"{_rss_mb(server.pid):>7,.0f} MB {probe.worst * 1000:>12.1f} ms"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
