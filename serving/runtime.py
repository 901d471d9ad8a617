"""What a running service holds: the store link, the models, the policy, the keys.

Loaded once at start-up by the application's lifespan; the models and the policy are
swapped whole by a reload (one attribute assignment, so a decision in flight keeps the
ones it started with). Nothing here fails the start: a missing store, model or policy is
recorded as a problem, ``/readyz`` reports it, and decisions fall back to ``review``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError

import features
from features.policy_fields import load_with_catalogue
from riskmodel.bundle import ModelBundle
from riskmodel.errors import RiskModelError
from riskmodel.policy import Policy
from riskmodel.registry import Registry
from riskmodel.store import open_store
from riskmodel.store.operations import SWITCH_MODES, LiveSetting
from serving.auth import KeyRing
from serving.checkpoints import BACKSTOP_PAGES, Checkpoints
from serving.errors import Refused, Unavailable
from serving.metrics import Metrics
from serving.settings import Settings
from serving.writer import DecisionWriter

__all__ = [
    "READ_THREADS",
    "Models",
    "Runtime",
    "StoreLink",
    "load_models",
    "load_policy_file",
    "read_threads",
]

log = logging.getLogger("serving")

_SERVING_CACHE_KIB = 32 * 1024

# The threads a worker reads the store on, off its event loop (``serving.decide`` on
# PostgreSQL, the live settings, webhooks): as many as Python's default executor has.
READ_THREADS = min(32, (os.cpu_count() or 1) + 4)
# On PostgreSQL every read thread and the writer hold a connection at once under load.
# With fewer kept in the pool, the extra ones were opened and closed again on every
# burst: a new server process each time, and the feature statement planned again on it.
_CONNECTIONS = READ_THREADS + 2


def read_threads() -> ThreadPoolExecutor:
    """The executor for the event loop's ``asyncio.to_thread``: ``READ_THREADS`` threads,
    which the store's pool keeps a connection for each."""
    return ThreadPoolExecutor(READ_THREADS, thread_name_prefix="store-reads")


class StoreLink:
    """The store, which may be lost and found again.

    After a failure, calls get no engine for ``retry_seconds`` (they answer degraded at
    once instead of each waiting on a dead database); then the next call tries again, and
    the first success makes the store available to everyone.
    """

    def __init__(self, url: str | None, retry_seconds: float, synchronous: str = "FULL") -> None:
        self.url = url
        self.retry_seconds = retry_seconds
        self.synchronous = synchronous
        self.problem: str | None = "not opened yet"
        self._engine: Engine | None = None
        self._checkpoints: Checkpoints | None = None
        self._next_try = 0.0

    def open(self) -> None:
        try:
            engine = open_store(self.url, connections=_CONNECTIONS)
        except Exception as exc:  # a bad path fails in mkdir, a dead server in connect
            self.lost(exc)
            return
        if engine.dialect.name == "sqlite":
            level = self.synchronous

            def tune(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.execute(f"PRAGMA synchronous={level}")
                # Each connection has its own page cache, and the store's 256 MB (sized for
                # ingest) would grow the service by that much per pooled connection; the
                # operating system caches the file for all of them. 32 MB gave the same
                # decision latency on the serve benchmark.
                dbapi_connection.execute(f"PRAGMA cache_size=-{_SERVING_CACHE_KIB}")
                # The log is copied into the file on a thread of its own
                # (``serving.checkpoints``); a commit does it only past the backstop.
                dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")

            # After the store's own pragmas; the pool is emptied so that every
            # connection gets them.
            event.listen(engine, "connect", tune)
            engine.dispose()
            if engine.url.database not in (None, "", ":memory:") and self._checkpoints is None:
                self._checkpoints = Checkpoints(Path(engine.url.database)).start()
        self._engine = engine
        self.found()

    def required(self) -> Engine:
        """The engine, or ``Unavailable`` (503) saying why not."""
        engine = self.available()
        if engine is None:
            raise Unavailable(self.problem or "the store is unavailable")
        return engine

    def available(self) -> Engine | None:
        """The engine, unless the store was lost less than ``retry_seconds`` ago."""
        if self.problem is not None and time.monotonic() < self._next_try:
            return None
        if self._engine is None:
            self.open()
        return self._engine

    def lost(self, exc: BaseException) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if self.problem is None:
            log.error("store lost: %s", first)
        self.problem = f"database unreachable: {first}"
        self._next_try = time.monotonic() + self.retry_seconds

    def found(self) -> None:
        if self.problem is not None and self._engine is not None:
            log.info("store available")
        self.problem = None

    def probe(self) -> str | None:
        """Ask the database for ``SELECT 1`` now; the problem, or None when it answers."""
        engine = self.available()
        if engine is None:
            return self.problem
        try:
            # Ended by a commit, not the rollback of ``connect``: see ``riskmodel.store.reading``.
            with engine.begin() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            self.lost(exc)
            return self.problem
        self.found()
        return None

    def dispose(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.stop()
            self._checkpoints = None
        if self._engine is not None:
            self._engine.dispose()


@dataclass(frozen=True)
class Models:
    """The champion that decides and the challenger scored in its shadow."""

    champion: ModelBundle | None
    challenger: ModelBundle | None = None
    problem: str | None = None  # why there is no champion
    challenger_problem: str | None = None


def _check_inputs(bundle: ModelBundle) -> None:
    unknown = [name for name in bundle.feature_names if name not in features.CATALOG]
    if unknown:
        raise Refused(
            f"model {bundle.version} reads features this service does not compute: "
            f"{', '.join(unknown[:5])}"
        )


def load_models(registry: Path, champion_version: str = "champion") -> Models:
    """The champion (``champion_version``, a version or an alias) and the challenger of
    ``registry``; problems recorded, never raised."""
    found = Registry(registry)
    champion = challenger = None
    problem = challenger_problem = None
    try:
        champion = found.load(champion_version)
        _check_inputs(champion)
    except (RiskModelError, Refused, OSError, ValueError) as exc:
        champion, problem = None, f"no usable champion model: {exc}"
    try:
        if "challenger" in found.aliases():
            challenger = found.load("challenger")
            _check_inputs(challenger)
    except (RiskModelError, Refused, OSError, ValueError) as exc:
        challenger, challenger_problem = None, f"challenger not loaded: {exc}"
    return Models(champion, challenger, problem, challenger_problem)


def load_policy_file(path: Path) -> Policy:
    """The policy at ``path``, validated against the feature catalogue (``PolicyError``)."""
    return load_with_catalogue(path)


@dataclass
class Runtime:
    settings: Settings
    store: StoreLink
    keys: KeyRing
    models: Models
    policy: Policy | None
    policy_problem: str | None = None
    metrics: Metrics = field(default_factory=Metrics)
    writer: DecisionWriter = field(init=False)
    # The store's live settings this worker applied (``serving.live``), and why the last
    # change could not be.
    live: dict[str, LiveSetting] = field(default_factory=dict)
    live_problem: str | None = None
    live_refused: dict[str, LiveSetting] = field(default_factory=dict)
    # Set when this worker registers or replays a webhook: its delivery loop starts at
    # once rather than at its next look (``serving.webhooks``).
    webhooks_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.writer = DecisionWriter(self.store.available, self.metrics.commit_groups.observe)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        store = StoreLink(
            settings.database_url, settings.store_retry_seconds, settings.sqlite_synchronous
        )
        store.open()
        policy, problem = None, None
        try:
            policy = load_policy_file(settings.policy)
        except RiskModelError as exc:
            problem = f"no valid policy: {exc}"
        runtime = cls(
            settings=settings,
            store=store,
            keys=KeyRing(settings.api_keys),
            models=load_models(settings.registry),
            policy=policy,
            policy_problem=problem,
        )
        # The reasons in full: /readyz shows an anonymous caller only what is missing.
        for reason in (runtime.models.problem, runtime.models.challenger_problem, problem):
            if reason is not None:
                log.error("%s", reason)
        runtime.note_state()
        return runtime

    def note_state(self) -> None:
        self.metrics.model_loaded.set(1 if self.models.champion is not None else 0)
        self.metrics.policy_loaded.set(1 if self.policy is not None else 0)
        self.metrics.store_up.set(1 if self.store.problem is None else 0)
        for mode in SWITCH_MODES:
            self.metrics.kill_switch.labels(mode).set(1 if mode == self.switch else 0)

    def problems(self) -> list[str]:
        """Why the service is not ready, each as ``what: why``; empty when it is.

        ``what`` names the missing part and may be shown to anyone (``/readyz``); ``why``
        may hold a driver's message or a path, for the log and for admins.
        """
        found = []
        if (store := self.store.probe()) is not None:
            found.append(store)
        if self.models.problem is not None:
            found.append(self.models.problem)
        if self.policy is None:
            found.append(self.policy_problem or "no policy loaded")
        if self.live_problem is not None:
            found.append(self.live_problem)
        self.note_state()
        return found

    @property
    def switch(self) -> str:
        """The kill switch's mode: off, review or rules (``riskmodel.store.operations``)."""
        setting = self.live.get("switch")
        return "off" if setting is None else setting.value

    def close(self) -> None:
        self.writer.close()
        self.store.dispose()
