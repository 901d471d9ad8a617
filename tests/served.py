"""A real ``riskmodel serve`` process on a free port, over a SQLite store holding the
conftest's tiny history, for the tests of the refund pipeline's client and of
back-pressure; and ``Scripted``, a tiny HTTP server of the test's own that answers as it is
told (slowly, busy, with canned bodies).

No tests here; ``tests/test_client.py`` and ``tests/test_pressure.py`` import it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from riskmodel import store
from tests.test_serving_fixtures import load_tiny, make_settings

START_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """``riskmodel serve`` on ``port`` over the store at ``root``; ``start`` and ``kill``
    it as often as a test likes (the store and the keys stay)."""

    root: Path
    database_url: str
    keys: dict[str, str]
    options: list[str]
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    def start(self, *, wait: bool = True) -> None:
        command = [sys.executable, "-m", "riskmodel.cli", "serve", "--port", str(self.port),
                   *self.options, "--log-level", "warning"]  # fmt: skip
        self.process = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            assert self.process.poll() is None, "serve exited"
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"riskmodel serve not ready within {START_SECONDS:g} s")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as a crash or an OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def decision_count(self, prefix: str) -> int:
        """Decisions stored for request ids that begin with ``prefix``."""
        engine = store.open_store(self.database_url, create=False)
        try:
            with engine.connect() as conn:
                query = select(func.count()).where(store.decisions.c.request_id.startswith(prefix))
                return int(conn.execute(query).scalar_one())
        finally:
            engine.dispose()

    def decision_rows(self, request_id: str) -> int:
        engine = store.open_store(self.database_url, create=False)
        try:
            with engine.connect() as conn:
                query = select(func.count()).where(store.decisions.c.request_id == request_id)
                return int(conn.execute(query).scalar_one())
        finally:
            engine.dispose()


def prepared(root: Path, **environ: str) -> Served:
    """A store with the tiny history, a champion, the starter policy and a key per role
    under ``root``; ``environ`` adds ``RISKMODEL_*`` settings for the server."""
    root.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{root / 'store.db'}"
    load_tiny(url)
    settings, keys = make_settings(root, url)
    options = ["--database-url", url, "--registry", str(settings.registry),
               "--policy", str(settings.policy), "--api-keys", str(settings.api_keys)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMODEL_")}
    return Served(root, url, keys, options, env | {"OMP_NUM_THREADS": "1", **environ})


@contextmanager
def serving(root: Path, **environ: str) -> Iterator[Served]:
    served = prepared(root, **environ)
    served.start()
    try:
        yield served
    finally:
        served.stop()


# -- a server of the test's own -------------------------------------------------------------


Answer = tuple[int, Mapping[str, str], bytes]
"""status, headers, body"""


@dataclass
class Scripted:
    """A real HTTP server whose every answer comes from ``answer(method, path, body)``;
    it records each call's arrival time, path and body."""

    answer: Callable[[str, str, bytes], Answer]
    calls: list[tuple[float, str, bytes]] = field(default_factory=list)

    @contextmanager
    def running(self) -> Iterator[str]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                scripted.calls.append((time.monotonic(), self.path, body))
                status, headers, payload = scripted.answer(self.command, self.path, body)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: what the slow answers are for

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def json_answer(document: Any, status: int = 200, **headers: str) -> Answer:
    return status, headers, json.dumps(document).encode()


class LossyProxy:
    """A TCP proxy to ``port`` that loses the answer of its first ``drop`` connections:
    the request reaches the service, which decides and stores it, and the connection is
    then closed before a byte of the answer gets back, as when a network drops it."""

    def __init__(self, port: int, drop: int = 1) -> None:
        self.port = port
        self.drop = drop
        self.lost = 0

    @contextmanager
    def running(self) -> Iterator[str]:
        listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                caller, _ = listener.accept()
            except OSError:
                return  # closed
            lossy = self.lost < self.drop
            self.lost += lossy
            threading.Thread(target=self._serve, args=(caller, lossy), daemon=True).start()

    def _serve(self, caller: socket.socket, lossy: bool) -> None:
        with caller, socket.create_connection(("127.0.0.1", self.port)) as upstream:
            threading.Thread(target=_pipe, args=(caller, upstream), daemon=True).start()
            if lossy:
                upstream.recv(65536)  # the answer has come: the decision is stored
                # Shut down, not only closed: the other thread is still reading from it.
                caller.shutdown(socket.SHUT_RDWR)
                return  # the answer is never sent on
            _pipe(upstream, caller)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)
