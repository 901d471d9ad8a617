"""Start-up work that makes the first minutes of service as fast as the rest.

Two costs used to land on the first decisions after a start:

- **What is built once per process.** The first decision compiled the online feature
  statement and ran the models' first predictions: 15 to 30 ms for the first requests
  instead of 2 to 3. ``rehearse`` runs the read side of the decision path on the newest
  stored refund request, and writes nothing.
- **What is built once per connection.** On PostgreSQL each connection prepares the
  feature statement for itself, and the server plans it afresh for its first five
  executions (10 to 15 ms each) before it settles on one plan for all. A worker keeps
  ``READ_THREADS + 2`` connections, so a started service answered its first hundreds
  of decisions slowly: at 100 decisions a second on two workers, p99 1.4 to 1.6 s over the
  first 20 seconds, and dozens refused with 429. At start-up ``rehearse`` holds every
  connection the pool keeps and runs the read side on each until its plan is settled.
- **Python's full garbage collection.** At start the service holds some 200,000 objects
  (modules, the models, the policy), and a full collection walks all of them while no
  request is answered: 150 to 180 ms over HTTP, a few seconds into the serve
  benchmark's traffic. ``settle_heap`` collects once and then freezes what is there
  (``gc.freeze``): later collections walk only what was made since.
  A frozen object is still freed when nothing refers to it any more (reference counting
  is not the collector's job), so the models a reload replaces are released; a reload
  freezes the new ones.
"""

from __future__ import annotations

import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool

import features
from riskmodel.store import REQUEST_COLUMNS, fetch_one, reading, stored_decision
from serving.runtime import Models, Runtime

__all__ = ["rehearse", "settle_heap"]

log = logging.getLogger("serving")


def rehearse(
    runtime: Runtime, models: Models | None = None, *, every_connection: bool = False
) -> bool:
    """Run the read side of a decision: the decision lookup, the online features of the
    newest stored request (as of its own time) and each model's score and contributions
    (``models``, default the runtime's). Nothing is written; a store that cannot be read
    is left for the decisions to find. Whether the whole path ran.

    ``every_connection`` (at start-up, before any decision): on each connection the
    store's pool keeps, held all at once so that the pool opens every one, and on
    PostgreSQL until the feature statement runs on its settled plan (``_SETTLED``)."""
    engine = runtime.store.available()
    if engine is None:
        return False
    try:
        values = _read_side(engine, every_connection)
    except DBAPIError as exc:
        log.warning("start-up rehearsal skipped, the store could not be read: %s", exc)
        return False
    if values is None:
        return False  # a new store: nothing to rehearse on
    models = runtime.models if models is None else models
    for model in (models.champion, models.challenger):
        if model is not None:
            model.score_one(values)
            model.contributions_one(values)
    return True


# PostgreSQL plans a prepared statement for its parameters on each of its first five
# executions; from the sixth it uses one generic plan unless those cost less.
_SETTLED = 6


def _read_side(engine: Engine, every_connection: bool) -> dict[str, Any] | None:
    """The features of the newest stored request, read as a decision reads them, once or
    on every pooled connection (side by side: the server plans on each at once); None if
    nothing is stored."""
    pool = engine.pool
    connections = pool.size() if every_connection and isinstance(pool, QueuePool) else 1
    rounds = _SETTLED if every_connection and engine.dialect.name == "postgresql" else 1
    with ExitStack() as held:
        conns = [held.enter_context(reading(engine, each_alone=True)) for _ in range(connections)]
        found = fetch_one(
            conns[0],
            f"SELECT {', '.join(REQUEST_COLUMNS)} FROM refund_requests "
            "ORDER BY requested_at DESC LIMIT 1",
            (),
        )
        if found is None:
            return None
        row: dict[str, Any] = dict(zip(REQUEST_COLUMNS, found, strict=True))

        def rehearsed(conn: Connection) -> dict[str, Any]:
            values: dict[str, Any] = {}
            for _ in range(rounds):
                stored_decision(conn, row["request_id"])
                values = features.online_features(conn, row)
            return values

        if len(conns) == 1:
            return rehearsed(conns[0])
        with ThreadPoolExecutor(len(conns), thread_name_prefix="rehearsal") as threads:
            # Every connection's result, so that a failure on any of them is raised.
            done = list(threads.map(rehearsed, conns))
        return done[0]


def settle_heap() -> None:
    """Collect garbage once, then leave what survives out of every later collection."""
    gc.collect()
    gc.freeze()
