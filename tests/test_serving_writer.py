"""Group commit: decisions made side by side share one transaction, yet each counts every
decision before it, and a write that fails on its own takes no other write down."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from riskmodel import dataset, store
from riskmodel.ingest import ingest_tables
from riskmodel.store import EVENT_TABLES, decisions, request_hash
from serving.checkpoints import BACKSTOP_PAGES, RESTART_PAGES, Checkpoints
from serving.decide import Answer, decide_one, store_row
from serving.record import DecisionRecord
from serving.runtime import Runtime, StoreLink
from serving.schemas import DecisionIn
from serving.writer import DecisionWriter, Write, Written
from tests.conftest import tiny_tables
from tests.test_serving_fixtures import (
    Service,
    body,
    load_tiny,
    make_settings,
    running,
    service,
)

__all__ = ["service"]

_REPEAT = {"RULE_REPEAT_REFUND", "RULE_DUPLICATE_REFUND", "RULE_EARLIER_REQUEST_OPEN"}


def _batch(service: Service, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = service.client.post(
        "/v1/decisions:batch", json={"requests": requests}, headers=service.headers("decide")
    )
    assert response.status_code == 200, response.text
    return [r["decision"] for r in response.json()["results"]]


def _codes(decision: dict[str, Any]) -> set[str]:
    return {r["code"] for r in decision["reasons"]}


def _groups(service: Service) -> tuple[float, float]:
    """How many groups were committed, and how many decisions they held."""
    text = service.client.get("/metrics").text

    def value(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
        assert found is not None, name
        return float(found.group(1))

    return (
        value("riskmodel_commit_group_size_count"),
        value("riskmodel_commit_group_size_sum"),
    )


def test_a_request_counts_an_earlier_one_still_being_written(service: Service) -> None:
    # Two refunds of one order (120.50), asking more than its price together, decided side
    # by side in one batch: the second must see the first (still without an outcome: a
    # person checks), although the first is not committed when it starts.
    first, second = _batch(
        service,
        [
            body(request_id="same-order-1", amount="100.00"),
            body(request_id="same-order-2", amount="100.00", requested_at="2026-01-20T10:05:00Z"),
        ],
    )

    assert not _codes(first) & _REPEAT
    assert _codes(second) & _REPEAT, second["reasons"]


def test_requests_that_share_nothing_are_committed_in_one_group(
    service: Service, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        # There each decision reads on a thread and is queued when its reads end: two
        # such decisions join one group only when a commit is under way, by timing.
        pytest.skip("on PostgreSQL, decisions of one turn of the loop read on threads")
    before = _groups(service)
    answers = _batch(
        service,
        [
            body(request_id="g-u2"),  # u2, order o4, device d2, IP 10.0.0.2
            body(
                request_id="g-u1",
                user_id="u1",
                order_id="o2",
                amount="50.00",
                reason="invalid_code",
                device_id="d1",
                ip="10.0.0.1",
            ),
        ],
    )
    after = _groups(service)

    assert all(a["stored"] and not a["replayed"] for a in answers)
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 2.0)


def _many_buyers(database_url: str, count: int, account: str | None = None) -> None:
    """The tiny history and ``count`` more buyers sharing nothing: each their own order,
    device and IP, and their own payment account unless ``account`` is every one's."""
    tables = tiny_tables()
    numbers = range(count)
    tables["users"] = pd.concat(
        [
            tables["users"],
            pd.DataFrame(
                {
                    "user_id": [f"m{i}" for i in numbers],
                    "registered_at": "2025-12-01T08:00:00Z",
                    "phone_verified": "true",
                }
            ),
        ]
    )
    tables["orders"] = pd.concat(
        [
            tables["orders"],
            pd.DataFrame(
                {
                    "order_id": [f"mo{i}" for i in numbers],
                    "user_id": [f"m{i}" for i in numbers],
                    "product_type": "card_code",
                    "amount": "40.00",
                    "currency": "CNY",
                    "paid_at": "2026-01-06T11:00:00Z",
                    "seller_id": "s1",
                    "payment_method": "alipay",
                    "payment_account": [account or f"mpa{i}" for i in numbers],
                    "device_id": [f"md{i}" for i in numbers],
                    "ip": [f"10.1.0.{i}" for i in numbers],
                }
            ),
        ]
    )
    normalised = {name: dataset.normalise(name, frame) for name, frame in tables.items()}
    engine = store.open_store(database_url)
    try:
        ingest_tables(engine, normalised)
    finally:
        engine.dispose()


def _buyers_request(prefix: str, i: int) -> dict[str, Any]:
    """A refund request of ``_many_buyers``' buyer ``i``, from their device and IP."""
    return body(
        request_id=f"{prefix}-{i}",
        order_id=f"mo{i}",
        user_id=f"m{i}",
        amount="40.00",
        reason="invalid_code",
        device_id=f"md{i}",
        ip=f"10.1.0.{i}",
    )


def test_more_decisions_at_once_than_the_store_has_connections_are_all_decided(
    database_url: str, tmp_path: Path
) -> None:
    # Forty requests that share nothing, decided side by side: on PostgreSQL each reads
    # on a thread, and no decision may hold a connection while it waits for a thread, or
    # the pool (fifteen) and the threads wait on each other for ever.
    _many_buyers(database_url, 40)
    settings, keys = make_settings(tmp_path, database_url)
    requests = [_buyers_request("many", i) for i in range(40)]
    with running(settings, keys) as service:
        answers = _batch(service, requests)

    assert [a["request_id"] for a in answers] == [r["request_id"] for r in requests]
    assert all(a["stored"] and not a["replayed"] for a in answers), answers[0]
    assert not any("DEGRADED" in _codes(a) for a in answers)


@pytest.mark.postgres
def test_bursts_of_decisions_on_postgresql_reuse_the_pools_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    # Every read thread and the writer hold a connection at once in a burst. A pool
    # smaller than that opened extra connections and closed them after each burst: a
    # new server process every time, and the feature statement planned again on it.
    _many_buyers(postgres_url, 60)
    settings, keys = make_settings(tmp_path, postgres_url)
    opened = []
    with running(settings, keys) as service:
        engine = service.client.app.state.runtime.store.available()  # type: ignore[attr-defined]
        event.listen(engine, "connect", lambda *_: opened.append(1))
        first = _batch(service, [_buyers_request("burst", i) for i in range(30)])
        after_first = len(opened)
        second = _batch(service, [_buyers_request("burst", i) for i in range(30, 60)])

    assert all(a["stored"] for a in first + second)
    assert len(opened) == after_first, f"{len(opened) - after_first} connections opened again"


def test_requests_sharing_only_a_payment_account_count_each_other(
    database_url: str, tmp_path: Path
) -> None:
    # Six buyers who share nothing but the card they paid with, asking at once. Every one
    # decided after the first must count it: on PostgreSQL they read on threads, and the
    # account is known only once the order is read, so it is held from then on; and a
    # buyer whose context was read while another's write committed reads it again.
    _many_buyers(database_url, 6, account="shared-card")
    settings, keys = make_settings(tmp_path, database_url)
    rule = """  - name: card_refunded_today
    code: RULE_CARD_REFUNDED_TODAY
    action: review
    when: payment_account_refunds_1d >= 1
    message: The card paid for another order refunded today.
"""
    policy = settings.policy.read_text().replace("rules:\n", "rules:\n" + rule, 1)
    settings.policy.write_text(policy)
    requests = [_buyers_request("card", i) for i in range(6)]
    with running(settings, keys) as service:
        answers = _batch(service, requests)

    flagged = ["RULE_CARD_REFUNDED_TODAY" in _codes(a) for a in answers]
    assert sorted(flagged) == [False] + [True] * 5, [a["reasons"] for a in answers]


def test_a_write_that_fails_alone_leaves_the_rest_of_its_group_written(
    database_url: str,
) -> None:
    load_tiny(database_url)
    engine = store.open_store(database_url)

    async def submit_all() -> list[Written | BaseException]:
        writer = DecisionWriter(lambda: engine)
        try:
            # Submitted in one turn of the loop: one group.
            pending = [writer.submit(_decided(f"w-{i}")) for i in range(3)]
            # None breaks the store's NOT NULL: this write fails alone.
            pending.insert(1, writer.submit(_decided("w-bad", decision=None)))
            return await asyncio.gather(*pending, return_exceptions=True)
        finally:
            writer.close()

    try:
        results = asyncio.run(submit_all())
        with engine.connect() as conn:
            stored = set(conn.execute(select(decisions.c.request_id)).scalars())
            requests = EVENT_TABLES["refund_requests"]
            bad_request = conn.execute(
                select(func.count()).where(requests.c.request_id == "w-bad")
            ).scalar_one()
    finally:
        engine.dispose()

    assert isinstance(results[1], Exception)
    assert all(
        isinstance(r, Written) and r.decision is not None for r in [results[0], *results[2:]]
    )
    assert stored == {"w-0", "w-1", "w-2"}
    assert bad_request == 0  # its request went with its decision: nothing half-written


def _write_while_reading(path: Path, commits: int, wal: Path) -> int:
    """``commits`` commits of a few pages each, a service's pace apart, while another
    connection reads without pause: each read transaction begins as the last ends, and
    lasts over several commits, as the decisions' reads do under load (with gaps between
    reads, a fast machine lets the log start over by itself); the largest the log grew,
    in bytes."""
    stop = threading.Event()

    def read() -> None:
        reader = sqlite3.connect(path, isolation_level=None)
        while not stop.is_set():
            reader.execute("BEGIN")
            reader.execute("SELECT count(*), max(i) FROM scratch").fetchone()
            time.sleep(0.01)
            reader.execute("COMMIT")
        reader.close()

    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA synchronous=FULL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # only the thread under test copies
    writer.execute("CREATE TABLE scratch (i INTEGER, padding TEXT)")
    reading = threading.Thread(target=read)
    reading.start()
    largest = 0
    try:
        for i in range(commits):
            writer.execute("INSERT INTO scratch VALUES (?, ?)", (i, "x" * 3000))
            largest = max(largest, wal.stat().st_size)
            time.sleep(0.002)
    finally:
        stop.set()
        reading.join()
    assert writer.execute("SELECT count(*) FROM scratch").fetchone() == (commits,)
    writer.close()
    return largest


def test_the_sqlite_log_stays_bounded_under_steady_writes_and_reads(tmp_path: Path) -> None:
    # No commit copies the log into the file: the checkpoint thread does, and while reads
    # never stop only its restarts let the log start over (passive copies alone let it grow
    # by every commit's page, without end).
    path = tmp_path / "store.db"
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").fetchone()
    checkpoints = Checkpoints(path, every_seconds=0.005, restart_pages=50).start()
    try:
        largest = _write_while_reading(path, 600, Path(f"{path}-wal"))
    finally:
        checkpoints.stop()
    frame = 4096 + 24  # a page and its header
    assert checkpoints.restarts >= 2
    assert largest < 200 * frame, largest / frame  # some 1,800 pages without the restarts


def test_the_services_sqlite_store_is_checkpointed_beside_the_commits(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    load_tiny(f"sqlite:///{path}")
    link = StoreLink(f"sqlite:///{path}", retry_seconds=1.0)
    link.open()
    engine = link.available()
    assert engine is not None
    try:
        assert "wal-checkpoints" in {t.name for t in threading.enumerate()}
        with engine.connect() as conn:
            backstop = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
        assert backstop == BACKSTOP_PAGES > RESTART_PAGES
    finally:
        link.dispose()
    assert "wal-checkpoints" not in {t.name for t in threading.enumerate()}


def test_a_refund_of_an_order_asked_again_out_of_time_order_is_not_approved_alone(
    service: Service,
) -> None:
    # The later request is decided first; the earlier one, arriving after it, counts no
    # earlier refund of the order (features are as of its own time), yet the order has
    # been asked back already: it must not be approved as if it were the first.
    later = service.decide(
        body(request_id="late-first", amount="100.00", requested_at="2026-01-20T12:00:00Z")
    ).json()
    earlier = service.decide(body(request_id="early-second", amount="100.00")).json()

    assert not _codes(later) & _REPEAT
    assert _codes(earlier) & _REPEAT, earlier["reasons"]
    assert earlier["decision"] != "approve"
    # Stored as answered: asking again gives the same decision.
    again = service.decide(body(request_id="early-second", amount="100.00")).json()
    assert again["replayed"] is True
    assert again["decision"] == earlier["decision"]


def _on_two_workers(
    database_url: str, tmp_path: Path, requests: list[dict[str, Any]]
) -> list[Answer]:
    """Two services on one store, standing for two workers, each deciding one of
    ``requests`` at the same moment: neither knows what the other has pending, and each
    reads before the other's write commits."""
    load_tiny(database_url)
    settings, _ = make_settings(tmp_path, database_url)

    async def side_by_side() -> list[Answer]:
        workers = [Runtime.start(settings), Runtime.start(settings)]
        try:
            bodies = [DecisionIn.model_validate(r) for r in requests]
            return list(
                await asyncio.gather(
                    *(decide_one(w, b) for w, b in zip(workers, bodies, strict=True))
                )
            )
        finally:
            for worker in workers:
                worker.close()

    return asyncio.run(side_by_side())


def test_two_workers_deciding_one_order_at_the_same_moment_do_not_both_count_nothing(
    database_url: str, tmp_path: Path
) -> None:
    answers = _on_two_workers(
        database_url,
        tmp_path,
        [
            body(request_id="w1-first", amount="100.00"),
            body(request_id="w2-second", amount="100.00", requested_at="2026-01-20T10:01:00Z"),
        ],
    )

    assert all(a.body["stored"] for a in answers)
    flagged = [a.body["request_id"] for a in answers if _codes(a.body) & _REPEAT]
    assert len(flagged) == 1, [a.body["reasons"] for a in answers]


def test_two_workers_seeing_one_user_on_a_new_ip_at_the_same_moment_count_it_once(
    database_url: str, tmp_path: Path
) -> None:
    # Each write asks whether its user was seen on the IP before, and counts a new user in
    # the day's tile. Two workers writing the same user at once must not both find none.
    answers = _on_two_workers(
        database_url,
        tmp_path,
        [body(request_id=f"ip-{order}", order_id=order, ip="10.7.7.7") for order in ("o3", "o4")],
    )

    assert all(a.body["stored"] for a in answers)
    engine = store.open_store(database_url)
    try:
        with engine.begin() as conn:
            tiles = store.sighting_days
            on_ip = select(tiles).where(tiles.c.entity == "10.7.7.7")
            written = conn.execute(on_ip).all()
            store.refresh_sighting_days(conn, None)
            assert conn.execute(on_ip).all() == written
    finally:
        engine.dispose()
    assert [row.users for row in written] == [1]


def test_out_of_time_order_the_model_scores_the_features_of_the_requests_own_time(
    database_url: str, tmp_path: Path
) -> None:
    # The policy must see the order's later-dated request that arrived first; the model
    # must score what it was trained on: the features as of the request's own time,
    # which count no earlier refund of the order.
    load_tiny(database_url)
    settings, _ = make_settings(tmp_path, database_url)
    scored: list[dict[str, Any]] = []

    async def decide_both() -> list[Answer]:
        runtime = Runtime.start(settings)
        champion = runtime.models.champion
        assert champion is not None

        class Recording:
            """The champion, noting the features it is asked to score."""

            version = champion.version

            def score_one(self, values: dict[str, Any]) -> float:
                scored.append(dict(values))
                return champion.score_one(values)

            def contributions_one(self, values: dict[str, Any]) -> dict[str, float]:
                return champion.contributions_one(values)

        runtime.models = dataclasses.replace(runtime.models, champion=Recording())  # type: ignore[arg-type]
        try:
            later = body(
                request_id="late-first", amount="100.00", requested_at="2026-01-20T12:00:00Z"
            )
            earlier = body(request_id="early-second", amount="100.00")
            return [
                await decide_one(runtime, DecisionIn.model_validate(b)) for b in (later, earlier)
            ]
        finally:
            runtime.close()

    answers = asyncio.run(decide_both())

    assert _codes(answers[1].body) & _REPEAT, answers[1].body["reasons"]
    assert [values["order_earlier_refunds"] for values in scored] == [0.0, 0.0]
    assert scored[1]["order_refunds_unanswered"] == 0.0


def _decided(request_id: str, **changes: Any) -> Write:
    """A decided request of u2's order o4, ready to write; ``changes`` alter its decisions
    row (None where the store requires a value makes the write fail for its own reason)."""
    row = store_row(DecisionIn.model_validate(body(request_id=request_id)))
    decided = {
        "request_id": request_id,
        "decision": "approve",
        "score": 0.1,
        "approved_amount": 2000,
        "reasons": json.dumps([]),
        "review_queue": None,
        "review_due_at": None,
        "model_version": None,
        "policy_version": None,
        "policy_hash": None,
        "feature_version": "1",
        "decided_at": row["requested_at"],
        "request_hash": request_hash(row),
        "shadow": None,
    } | changes
    # One order, each write counting the others: the order check lets them all by.
    return Write(
        row,
        DecisionRecord.from_row(decided),
        order={"payment_account": "pa3"},
        registered_at=0,
        order_counted=99,
    )


def test_a_group_retried_one_by_one_answers_every_write(database_url: str) -> None:
    # Failing writes first and last in their group, where a retry that loses one shows.
    # A write left out of the answers leaves its caller waiting for ever, so every wait
    # here is bounded.
    load_tiny(database_url)
    engine = store.open_store(database_url)
    good = [_decided(f"ok-{i}") for i in range(3)]
    first_bad = _decided("bad-decision", decision=None)
    last_bad = _decided("bad-reasons", reasons=None)
    group = [first_bad, *good, last_bad]
    later = _decided("later")

    async def write_all() -> tuple[list[Written | BaseException], Written]:
        writer = DecisionWriter(lambda: engine)
        try:
            pending = [writer.submit(write) for write in group]  # one turn: one group
            try:
                answers = await asyncio.wait_for(
                    asyncio.gather(*pending, return_exceptions=True), 30
                )
                # The writer goes on after such a group.
                after = await asyncio.wait_for(writer.submit(later), 30)
            except TimeoutError:
                pytest.fail("a write was never answered")
            return answers, after
        finally:
            writer.close()

    try:
        answers, after = asyncio.run(write_all())
        with engine.connect() as conn:
            stored = {
                row.request_id: DecisionRecord.from_row(dict(row._mapping))
                for row in conn.execute(select(decisions))
            }
            requests = EVENT_TABLES["refund_requests"]
            stored_requests = set(conn.execute(select(requests.c.request_id)).scalars())
    finally:
        engine.dispose()

    assert isinstance(answers[0], IntegrityError)
    assert isinstance(answers[-1], IntegrityError)
    for write, answer in zip(good, answers[1:-1], strict=True):
        assert isinstance(answer, Written)
        assert answer.decision == write.decision
    assert after.decision == later.decision
    assert stored == {w.decision.request_id: w.decision for w in [*good, later]}
    assert not {"bad-decision", "bad-reasons"} & stored_requests  # nothing half-written
    assert {"ok-0", "ok-1", "ok-2", "later"} <= stored_requests


def test_a_read_is_told_of_a_related_write_committed_while_it_ran(tmp_path: Path) -> None:
    # On PostgreSQL a decision reads its context on a thread; a related write that both
    # begins and commits meanwhile is no longer pending when the read returns, and the
    # read may not hold it. The writer says so, and only for the keys it wrote.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    load_tiny(url)
    engine = store.open_store(url)
    write = _decided("written-meanwhile")

    async def scenario() -> tuple[bool, bool, bool, bool]:
        writer = DecisionWriter(lambda: engine)
        try:
            before = writer.mark()
            nothing_yet = writer.settled_since(before, write.counted_keys())
            await asyncio.wait_for(writer.submit(write), 30)
            return (
                nothing_yet,
                writer.settled_since(before, write.counted_keys()),
                writer.settled_since(before, {("user_id", "someone-else")}),
                writer.settled_since(writer.mark(), write.counted_keys()),
            )
        finally:
            writer.close()

    try:
        nothing_yet, related, unrelated, after = asyncio.run(scenario())
    finally:
        engine.dispose()

    assert (nothing_yet, related, unrelated, after) == (False, True, False, False)
