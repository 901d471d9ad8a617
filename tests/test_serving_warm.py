"""Start-up: the decision path is rehearsed without writing, and the heap is settled so
that no full garbage collection over the loaded models stalls the first requests."""

from __future__ import annotations

import gc
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.pool import QueuePool

from riskmodel import store
from riskmodel.store import EVENT_TABLES, decisions
from serving.runtime import Runtime
from serving.warm import rehearse
from tests.test_serving_fixtures import body, load_tiny, make_settings, running


def _stored(database_url: str) -> tuple[int, int]:
    engine = store.open_store(database_url)
    try:
        with engine.connect() as conn:
            asked = EVENT_TABLES["refund_requests"]
            requests = conn.scalar(select(func.count()).select_from(asked))
            made = conn.scalar(select(func.count()).select_from(decisions))
    finally:
        engine.dispose()
    return int(requests or 0), int(made or 0)


def test_the_rehearsal_reads_the_decision_path_and_writes_nothing(
    database_url: str, tmp_path: Path
) -> None:
    load_tiny(database_url)
    before = _stored(database_url)
    settings, _ = make_settings(tmp_path, database_url, challenger=True)
    runtime = Runtime.start(settings)
    try:
        assert rehearse(runtime) is True
    finally:
        runtime.close()
    assert _stored(database_url) == before


@pytest.mark.postgres
def test_at_start_up_every_pooled_connection_has_the_feature_statement_planned(
    postgres_url: str, tmp_path: Path
) -> None:
    """Otherwise each connection plans the statement afresh for its first decisions
    (10 to 15 ms each), and a started service answers its first hundreds slowly."""
    engine = store.open_store(postgres_url, create=False)
    store.drop_everything(engine)
    engine.dispose()
    load_tiny(postgres_url)
    settings, _ = make_settings(tmp_path, postgres_url)
    runtime = Runtime.start(settings)
    try:
        assert rehearse(runtime, every_connection=True) is True
        pool = runtime.store.required().pool
        assert isinstance(pool, QueuePool)
        settled = []
        with ExitStack() as held:
            for _ in range(pool.size()):
                conn = held.enter_context(runtime.store.required().connect())
                settled.append(
                    conn.scalar(
                        text(
                            "SELECT count(*) FROM pg_prepared_statements "
                            "WHERE generic_plans > 0 AND statement LIKE '%AS g, %'"
                        )
                    )
                )
        assert pool.checkedout() == 0
        assert len(settled) == pool.size() > 1
        assert all(count == 1 for count in settled), settled
    finally:
        runtime.close()


def test_there_is_nothing_to_rehearse_on_an_empty_store(database_url: str, tmp_path: Path) -> None:
    settings, _ = make_settings(tmp_path, database_url)
    runtime = Runtime.start(settings)
    try:
        assert rehearse(runtime) is False
    finally:
        runtime.close()
    assert _stored(database_url) == (0, 0)


def test_a_started_service_keeps_its_models_out_of_garbage_collections(
    database_url: str, tmp_path: Path
) -> None:
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url)
    with running(settings, keys) as service:
        runtime = service.client.app.state.runtime  # type: ignore[attr-defined]
        # Frozen objects are not among those the collector walks.
        walked = {id(obj) for obj in gc.get_objects()}
        assert id(runtime.models.champion.booster) not in walked
        reloaded = service.client.post("/v1/admin/reload", headers=service.headers("admin"))
        assert reloaded.status_code == 200, reloaded.text
        walked = {id(obj) for obj in gc.get_objects()}
        assert id(runtime.models.champion.booster) not in walked
        assert service.decide(body()).status_code == 200
