"""History in (users, orders, usage, labels), a user's history out, the review queue and
reviewers' verdicts, through HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from riskmodel import store
from riskmodel.store import EVENT_TABLES, fetch_one, reading
from riskmodel.store.schema import live_settings
from tests.test_serving_fixtures import Service, body, load_tiny, make_settings, running, service

__all__ = ["service"]

_USER = {"user_id": "u7", "registered_at": "2026-01-01T00:00:00+08:00", "phone_verified": True}
_ORDER = {
    "order_id": "o7",
    "user_id": "u7",
    "product_type": "membership",
    "amount": "30.00",
    "paid_at": "2026-01-10T00:00:00Z",
    "payment_account": "pa7",
    "device_id": "d7",
    "service_days": 30,
}
_USAGE = [{"order_id": "o7", "used_at": f"2026-01-1{d}T12:00:00Z"} for d in (1, 2, 3)]


def _post(service: Service, path: str, rows: list[dict[str, Any]], role: str = "ingest") -> Any:
    return service.client.post(path, json={"rows": rows}, headers=service.headers(role))


def test_history_streams_in_and_a_request_on_it_is_decided(service: Service) -> None:
    for path, rows, table in (
        ("/v1/events/users", [_USER], "users"),
        ("/v1/events/orders", [_ORDER], "orders"),
        ("/v1/events/usage", _USAGE, "usage"),
    ):
        response = _post(service, path, rows)
        assert response.status_code == 200, response.text
        assert response.json() == {"table": table, "received": len(rows), "written": len(rows)}
        again = _post(service, path, rows)
        assert again.json()["written"] == 0  # equal rows are left alone

    request = body(
        request_id="m1", order_id="o7", user_id="u7", amount="30.00", reason="unused",
        requested_at="2026-01-20T00:00:00Z", device_id="d7",
    )  # fmt: skip
    answer = service.decide(request).json()
    assert answer["stored"] is True
    if answer["decision"] == "approve":
        # Three of thirty days used: at most 27.00 of the 30.00 paid may be paid back.
        assert answer["approved_amount"] == "27.00"
        assert "PRORATED_CAP" in [r["code"] for r in answer["reasons"]]


@pytest.mark.parametrize(
    ("path", "rows", "problem"),
    [
        ("/v1/events/orders", [_ORDER], "unknown user 'u7'"),
        ("/v1/events/usage", [{"order_id": "o4", "used_at": "2026-01-09T00:00:00Z"}], "not a"),
        ("/v1/labels", [{"request_id": "nope", "is_abuse": True,
                         "labeled_at": "2026-02-01T00:00:00Z"}], "unknown refund request"),
    ],
)  # fmt: skip
def test_rows_that_break_the_contract_are_refused_whole(
    service: Service, path: str, rows: list[dict[str, Any]], problem: str
) -> None:
    response = _post(service, path, rows)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert problem in error["message"]
    assert "row 1" in error["message"]


def test_events_need_the_ingest_role_and_typed_rows(service: Service) -> None:
    assert _post(service, "/v1/events/users", [_USER], role="decide").status_code == 403
    assert _post(service, "/v1/events/users", [_USER], role="review").status_code == 403
    bad = _post(service, "/v1/events/users", [{"user_id": "u8", "registered_at": "soon"}])
    assert bad.status_code == 422
    assert bad.json()["error"]["fields"][0]["field"] == "body.rows.0.registered_at"


def test_labels_stream_in(service: Service) -> None:
    label = {"request_id": "r1", "is_abuse": True, "labeled_at": "2026-02-01T00:00:00Z",
             "source": "chargeback"}  # fmt: skip
    response = _post(service, "/v1/labels", [label])

    assert response.status_code == 200, response.text
    assert response.json()["written"] == 1


def _queue(service: Service, **params: Any) -> list[dict[str, Any]]:
    response = service.client.get("/v1/reviews", params=params, headers=service.headers("review"))
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_the_review_queue_by_deadline_and_a_verdict_that_becomes_a_label(
    service: Service,
) -> None:
    answers = [
        service.decide(body(request_id=f"q{i}", requested_at=f"2026-01-2{i}T10:00:00Z")).json()
        for i in (1, 2)
    ]
    # q2 asks back the same order again: the starter policy's repeat rule reviews it.
    assert answers[1]["decision"] == "review"
    assert "RULE_REPEAT_REFUND" in [r["code"] for r in answers[1]["reasons"]]
    queue = _queue(service)
    listed = [item["request_id"] for item in queue]
    assert sorted(listed) == sorted(a["request_id"] for a in answers if a["decision"] == "review")
    deadlines = [item["due_at"] for item in queue]
    assert deadlines == sorted(deadlines)
    assert _queue(service, queue="disputes", limit=1)[0]["queue"] == "disputes"
    first = queue[0]
    assert first["user_id"] == "u2"
    assert first["reasons"]

    verdict = service.client.post(
        f"/v1/reviews/{first['request_id']}",
        json={"decision": "refuse", "is_abuse": True, "note": "asked twice"},
        headers=service.headers("review"),
    )
    assert verdict.status_code == 200, verdict.text
    outcome = verdict.json()
    assert (outcome["kind"], outcome["version"], outcome["decision"]) == ("verdict", 2, "refuse")
    assert outcome["approved_amount"] == "0.00"
    assert outcome["decided_by"] == "review-caller"
    assert first["request_id"] not in [i["request_id"] for i in _queue(service)]

    engine = store.open_store(service.settings.database_url)
    labels = EVENT_TABLES["labels"]
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                select(labels).where(labels.c.request_id == first["request_id"])
            ).one()
    finally:
        engine.dispose()
    assert stored.is_abuse is True
    assert stored.source == "review"
    assert json.loads(stored.extra) == {
        "note": "asked twice",
        "reviewer": "review-caller",
        "version": 2,
    }


def test_verdicts_only_on_requests_under_review(service: Service) -> None:
    missing = service.client.post(
        "/v1/reviews/nothing",
        json={"decision": "approve", "is_abuse": False},
        headers=service.headers("review"),
    )
    assert missing.status_code == 404
    forbidden = service.client.post(
        "/v1/reviews/nothing",
        json={"decision": "approve", "is_abuse": False},
        headers=service.headers("decide"),
    )
    assert forbidden.status_code == 403


def test_a_verdict_on_a_request_not_sent_to_review_is_a_conflict(service: Service) -> None:
    engine = store.open_store(service.settings.database_url)
    try:
        with engine.begin() as conn:
            # A stored approval (written as the service writes them) to rule on.
            conn.execute(
                store.decisions.insert().values(
                    request_id="r3", decision="approve", score=0.01, approved_amount=648,
                    reasons="[]", decided_at=0, request_hash="0" * 64,
                )
            )  # fmt: skip
    finally:
        engine.dispose()
    response = service.client.post(
        "/v1/reviews/r3",
        json={"decision": "refuse", "is_abuse": True},
        headers=service.headers("review"),
    )
    assert response.status_code == 409
    assert "approve" in response.json()["error"]["message"]


def test_a_users_history_for_support_staff(service: Service) -> None:
    answer = service.decide(body()).json()
    response = service.client.get("/v1/users/u2/history", headers=service.headers("review"))

    assert response.status_code == 200, response.text
    history = response.json()
    assert history["user"]["user_id"] == "u2"
    assert history["user"]["registered_at"] == "2026-01-02T09:30:00+00:00"
    assert [o["order_id"] for o in history["orders"]] == ["o4", "o3"]
    assert history["orders"][0]["amount"] == "120.50"
    assert {r["request_id"] for r in history["refund_requests"]} == {"r3", "api-1"}
    assert [d["request_id"] for d in history["decisions"]] == ["api-1"]
    assert history["decisions"][0]["decision"] == answer["decision"]
    assert history["labels"] == []

    u1 = service.client.get("/v1/users/u1/history", headers=service.headers("admin")).json()
    assert [label["source"] for label in u1["labels"]] == ["chargeback", "issuer_report"]
    unknown = service.client.get("/v1/users/nobody/history", headers=service.headers("review"))
    assert unknown.status_code == 404
    denied = service.client.get("/v1/users/u2/history", headers=service.headers("decide"))
    assert denied.status_code == 403


def test_a_long_history_comes_in_pages_and_says_how_much_there_is(service: Service) -> None:
    orders = [
        {
            "order_id": f"page-{i}",
            "user_id": "u2",
            "product_type": "service",
            "amount": "1.00",
            "paid_at": f"2026-01-1{i}T00:00:00Z",
        }
        for i in range(5)
    ]
    ingest = service.headers("ingest")
    assert service.client.post(
        "/v1/events/orders", json={"rows": orders}, headers=ingest
    ).is_success
    review = service.headers("review")

    def page(**params: int) -> dict[str, Any]:
        found = service.client.get("/v1/users/u2/history", params=params, headers=review)
        assert found.status_code == 200, found.text
        answer: dict[str, Any] = found.json()
        return answer

    first, last = page(limit=3), page(limit=3, offset=6)
    every = [o["order_id"] for o in page(limit=3)["orders"] + page(limit=3, offset=3)["orders"]]

    assert first["totals"]["orders"] == 7  # the five above and the tiny history's two
    assert [o["order_id"] for o in first["orders"]] == ["page-4", "page-3", "page-2"]
    assert len(set(every)) == 6  # two pages, nothing seen twice
    assert [o["order_id"] for o in last["orders"]] == ["o3"]
    assert (last["offset"], last["limit"]) == (6, 3)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/reviews", {"queue": "ordinary\x00"}),
        ("/v1/reviews", {"limit": 0}),
        ("/v1/users/u%00/history", {}),
        ("/v1/users/u2/history", {"limit": 100_000}),
        ("/v1/users/u2/history", {"offset": -1}),
    ],
)
def test_bad_parameters_are_422_on_every_store(
    service: Service, path: str, params: dict[str, Any]
) -> None:
    response = service.client.get(path, params=params, headers=service.headers("review"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.postgres
def test_reads_keep_the_prepared_statements_of_their_connection(
    postgres_url: str, tmp_path: Path
) -> None:
    # psycopg drops every prepared statement of a connection on rollback; a read ended
    # that way made the next decision on that connection plan its features again (4 ms).
    engine = store.open_store(postgres_url, create=False)
    store.drop_everything(engine)
    engine.dispose()
    load_tiny(postgres_url)
    # No look at what is live during the test: it would take a second connection.
    settings, keys = make_settings(tmp_path, postgres_url, follow_seconds=3600.0)
    with running(settings, keys) as service:
        serving = service.client.app.state.runtime.store.available()  # type: ignore[attr-defined]

        def prepared() -> int:
            with reading(serving) as conn:
                return int(fetch_one(conn, "SELECT count(*) FROM pg_prepared_statements", ())[0])

        with reading(serving) as conn:
            for _ in range(6):  # psycopg prepares a statement on its fifth run
                fetch_one(conn, "SELECT %s::int + 1", (1,))
        assert prepared() >= 1
        # Nothing runs side by side here, so every call uses the pool's one connection.
        for path, role in [
            ("/readyz", "review"),
            ("/v1/users/u1/history", "review"),
            ("/v1/reviews", "review"),
            ("/v1/users/nobody/history", "review"),
        ]:
            response = service.client.get(path, headers=service.headers(role))
            assert response.status_code == (404 if "nobody" in path else 200), response.text
            assert prepared() >= 1, path


@pytest.mark.postgres
def test_a_decisions_reads_open_no_transaction_and_leave_the_connection_transactional(
    postgres_url: str,
) -> None:
    # A decision's reads on PostgreSQL are each a transaction of their own: BEGIN and
    # COMMIT would be two round trips more for every one of its two reads.
    engine = store.open_store(postgres_url, create=False)
    store.drop_everything(engine)
    engine.dispose()
    engine = store.open_store(postgres_url)

    def server_process(conn: Connection) -> int:
        return int(conn.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]

    try:
        with reading(engine, each_alone=True) as conn:
            assert fetch_one(conn, "SELECT count(*) FROM live_settings", ()) == (0,)
            assert conn.connection.dbapi_connection.info.transaction_status.name == "IDLE"  # type: ignore[union-attr]
            read_on = server_process(conn)
        # The same pooled connection, for a write that is rolled back: nothing stays.
        with engine.connect() as conn:
            assert server_process(conn) == read_on
            conn.execute(
                live_settings.insert().values(what="x", value="{}", changed_at=0, changed_by="t")
            )
            conn.rollback()
        with engine.connect() as conn:
            assert conn.scalar(select(live_settings.c.what)) is None
        # A read that leaves a transaction open: its connection never goes back as it is.
        with reading(engine, each_alone=True) as conn:
            conn.connection.dbapi_connection.execute("BEGIN")  # type: ignore[union-attr]
            left_open = server_process(conn)
        with engine.connect() as conn:
            assert server_process(conn) != left_open
    finally:
        engine.dispose()
