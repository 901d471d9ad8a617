"""Start-up work that makes the first minutes of service as fast as the rest.

Two costs used to land on the first decisions after a start:

- **What is built once per process.** The first decision compiled the online feature
  statement and ran the models' first predictions: 15 to 30 ms for the first requests
  instead of 2 to 3. ``rehearse`` runs the read side of the decision path once, on the
  newest stored refund request, and writes nothing.
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
from typing import Any

from sqlalchemy.exc import DBAPIError

import features
from riskmodel.store import REQUEST_COLUMNS, fetch_one, reading, stored_decision
from serving.runtime import Models, Runtime

__all__ = ["rehearse", "settle_heap"]

log = logging.getLogger("serving")


def rehearse(runtime: Runtime, models: Models | None = None) -> bool:
    """Run the read side of a decision once: the decision lookup, the online features of
    the newest stored request (as of its own time) and each model's score and
    contributions (``models``, default the runtime's). Nothing is written; a store that
    cannot be read is left for the decisions to find. Whether the whole path ran."""
    engine = runtime.store.available()
    if engine is None:
        return False
    try:
        with reading(engine) as conn:
            found = fetch_one(
                conn,
                f"SELECT {', '.join(REQUEST_COLUMNS)} FROM refund_requests "
                "ORDER BY requested_at DESC LIMIT 1",
                (),
            )
            if found is None:
                return False  # a new store: nothing to rehearse on
            row: dict[str, Any] = dict(zip(REQUEST_COLUMNS, found, strict=True))
            stored_decision(conn, row["request_id"])
            values = features.online_features(conn, row)
    except DBAPIError as exc:
        log.warning("start-up rehearsal skipped, the store could not be read: %s", exc)
        return False
    models = runtime.models if models is None else models
    for model in (models.champion, models.challenger):
        if model is not None:
            model.score_one(values)
            model.contributions_one(values)
    return True


def settle_heap() -> None:
    """Collect garbage once, then leave what survives out of every later collection."""
    gc.collect()
    gc.freeze()
