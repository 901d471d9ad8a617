"""What the service is configured with, read once from the environment.

    >>> from serving.settings import Settings
    >>> Settings().max_batch
    100
    >>> Settings.from_env().registry            # doctest: +SKIP
    PosixPath('data/registry')

Every setting has a default that works on a fresh checkout; the environment overrides it
(``RISKMODEL_DATABASE_URL``, ``RISKMODEL_REGISTRY``, ``RISKMODEL_POLICY``,
``RISKMODEL_API_KEYS``, ``RISKMODEL_MAX_BODY_BYTES``, ``RISKMODEL_MAX_BATCH``,
``RISKMODEL_SQLITE_SYNCHRONOUS``, ``RISKMODEL_CLOCK_SKEW_SECONDS``,
``RISKMODEL_LATE_HOURS``, ``RISKMODEL_FOLLOW_SECONDS``, ``RISKMODEL_MAX_IN_FLIGHT``,
``RISKMODEL_FEED_WAIT_SECONDS``, ``RISKMODEL_WEBHOOK_BACKOFF_SECONDS``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.schemas import MAX_BATCH_REQUESTS

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Settings"]

DEFAULT_HOST = "127.0.0.1"
"""Where ``riskmodel serve`` (and quickstart) listen unless told: this machine only."""
DEFAULT_PORT = 8000

_ENV = {
    "database_url": "RISKMODEL_DATABASE_URL",
    "registry": "RISKMODEL_REGISTRY",
    "policy": "RISKMODEL_POLICY",
    "api_keys": "RISKMODEL_API_KEYS",
    "max_body_bytes": "RISKMODEL_MAX_BODY_BYTES",
    "max_batch": "RISKMODEL_MAX_BATCH",
    "sqlite_synchronous": "RISKMODEL_SQLITE_SYNCHRONOUS",
    "clock_skew_seconds": "RISKMODEL_CLOCK_SKEW_SECONDS",
    "late_hours": "RISKMODEL_LATE_HOURS",
    "follow_seconds": "RISKMODEL_FOLLOW_SECONDS",
    "max_in_flight": "RISKMODEL_MAX_IN_FLIGHT",
    "feed_wait_seconds": "RISKMODEL_FEED_WAIT_SECONDS",
    "webhook_backoff_seconds": "RISKMODEL_WEBHOOK_BACKOFF_SECONDS",
}


@dataclass(frozen=True)
class Settings:
    """The service's configuration.

    ``database_url`` None means the store's own default (``RISKMODEL_DATABASE_URL``, else
    the SQLite file ``data/riskmodel.db``). ``store_retry_seconds``: how often, at most, a
    service that lost its database tries to reconnect.

    ``max_batch``: the requests a ``decisions:batch`` call may hold (history batches take
    ten times as many rows), from 1 to ``serving.schemas.MAX_BATCH_REQUESTS``: the API's
    schema refuses a longer list before validating its items, whatever this says.

    ``sqlite_synchronous``: ``FULL`` (the store's own setting, the default) fsyncs the
    write-ahead log on every commit, so an answered decision survives a power loss, at one
    fsync per decision (2 to 5 ms on this project's shared machine). ``NORMAL`` skips it:
    a decision survives the process crashing, but an operating-system crash or a power
    loss may lose the last decisions already answered. A deliberate choice, never a
    silent default; ``docs/api.md`` has the figures.

    ``clock_skew_seconds``: how far ahead of the service's clock a request's
    ``requested_at`` may lie (callers' clocks drift); further is refused (422).
    ``late_hours``: a request dated more than this before a request of the same user,
    order, device, IP or payment account that the service already holds goes to review
    (``DATED_BEFORE_STORED``), whatever the policy says.

    ``follow_seconds``: how often each worker reads what is live from the store
    (``serving.live``): a deploy or the kill switch reaches every worker within about this.

    ``max_in_flight``: the decision calls (``/v1/decisions...``) one worker holds at once;
    one more answers 503 ``overloaded`` at once, and a caller holding three quarters of
    them gets 429, both with ``Retry-After: 1`` (``serving.pressure``). It bounds how long
    an admitted call waits, about the limit times one decision's time under load, where an
    unbounded queue would grow until every caller times out: size it as the wait a caller
    accepts times the decisions a worker finishes per second (``docs/api.md``).

    ``feed_wait_seconds``: the longest a call to the outcome feed (``GET /v1/outcomes``)
    waits for an outcome, whatever its ``wait`` asks; keep it below the idle timeout of
    the proxies between the refund pipeline and the service.
    ``webhook_backoff_seconds``: how long a webhook that failed waits before its first
    retry; each further failure doubles it, up to ten minutes (``serving.webhooks``).
    """

    database_url: str | None = None
    registry: Path = Path("data/registry")
    policy: Path = Path("data/policy.yaml")
    api_keys: Path = Path("data/api_keys.json")
    max_body_bytes: int = 1_048_576
    max_batch: int = 100
    store_retry_seconds: float = 1.0
    sqlite_synchronous: str = "FULL"
    clock_skew_seconds: float = 300.0
    late_hours: float = 24.0
    follow_seconds: float = 1.0
    max_in_flight: int = 64
    feed_wait_seconds: float = 25.0
    webhook_backoff_seconds: float = 1.0

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes {self.max_body_bytes} is below 1024")
        if self.max_batch < 1:
            raise ValueError(f"max_batch {self.max_batch} is below 1")
        if self.max_batch > MAX_BATCH_REQUESTS:
            raise ValueError(
                f"max_batch {self.max_batch} is above {MAX_BATCH_REQUESTS}, the most requests "
                "the API's schema admits in one batch"
            )
        if self.sqlite_synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"sqlite_synchronous {self.sqlite_synchronous!r}: FULL or NORMAL")
        if not self.clock_skew_seconds >= 0:
            raise ValueError(f"clock_skew_seconds {self.clock_skew_seconds} is below 0")
        if not self.late_hours >= 0:
            raise ValueError(f"late_hours {self.late_hours} is below 0")
        if not self.follow_seconds > 0:
            raise ValueError(f"follow_seconds {self.follow_seconds} is not above 0")
        if not self.webhook_backoff_seconds > 0:
            raise ValueError(
                f"webhook_backoff_seconds {self.webhook_backoff_seconds} is not above 0"
            )
        if self.feed_wait_seconds < 0:
            raise ValueError(f"feed_wait_seconds {self.feed_wait_seconds} is below 0")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight {self.max_in_flight} is below 1")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Defaults overridden by the environment (``os.environ`` unless given)."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(_ENV[name]) or None

        defaults = cls()
        return cls(
            database_url=get("database_url"),
            registry=Path(get("registry") or defaults.registry),
            policy=Path(get("policy") or defaults.policy),
            api_keys=Path(get("api_keys") or defaults.api_keys),
            max_body_bytes=int(get("max_body_bytes") or defaults.max_body_bytes),
            max_batch=int(get("max_batch") or defaults.max_batch),
            sqlite_synchronous=(get("sqlite_synchronous") or defaults.sqlite_synchronous).upper(),
            clock_skew_seconds=float(get("clock_skew_seconds") or defaults.clock_skew_seconds),
            late_hours=float(get("late_hours") or defaults.late_hours),
            follow_seconds=float(get("follow_seconds") or defaults.follow_seconds),
            max_in_flight=int(get("max_in_flight") or defaults.max_in_flight),
            feed_wait_seconds=float(get("feed_wait_seconds") or defaults.feed_wait_seconds),
            webhook_backoff_seconds=float(
                get("webhook_backoff_seconds") or defaults.webhook_backoff_seconds
            ),
        )
