"""Final outcomes: reviewers' verdicts and appeals as new versions of a decision, and the
feed the refund pipeline follows, through HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from sqlalchemy import Engine, select, update

from riskmodel import store
from riskmodel.store import EVENT_TABLES
from serving.auth import Role, create_key
from tests.test_serving_fixtures import Service, body, service

__all__ = ["service"]


def _under_review(service: Service) -> str:
    """A request the starter policy sends to review: u2 asks back order o4 a second time."""
    service.decide(body(request_id="first", requested_at="2026-01-21T10:00:00Z"))
    answer = service.decide(body(request_id="again", requested_at="2026-01-22T10:00:00Z")).json()
    assert answer["decision"] == "review", answer
    return "again"


def _verdict(service: Service, request_id: str, role: str = "review", **sent: Any) -> Any:
    return service.client.post(
        f"/v1/reviews/{request_id}", json=sent, headers=service.headers(role)
    )


def _appeal(service: Service, request_id: str, role: str = "decide", **more: Any) -> Any:
    sent = {"request_id": request_id, "statement": "the code never worked"} | more
    return service.client.post("/v1/appeals", json=sent, headers=service.headers(role))


def _lookup(service: Service, request_id: str) -> dict[str, Any]:
    answer = service.client.get(f"/v1/decisions/{request_id}", headers=service.headers("review"))
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _labels(service: Service, request_id: str) -> list[Any]:
    engine = store.open_store(service.settings.database_url)
    labels = EVENT_TABLES["labels"]
    try:
        with engine.connect() as conn:
            return list(conn.execute(select(labels).where(labels.c.request_id == request_id)))
    finally:
        engine.dispose()


def _feed(service: Service, after: int = 0, **params: Any) -> dict[str, Any]:
    answer = service.client.get(
        "/v1/outcomes", params={"after": after, **params}, headers=service.headers("decide")
    )
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_verdict_approving_an_amount_is_a_new_version_and_a_label(service: Service) -> None:
    request_id = _under_review(service)

    answer = _verdict(service, request_id, decision="approve", approved_amount="12.50",
                      is_abuse=False, note="partly delivered")  # fmt: skip

    assert answer.status_code == 200, answer.text
    outcome = answer.json()
    assert outcome["event_id"] == f"{request_id}:2"
    assert (outcome["version"], outcome["kind"], outcome["decision"]) == (2, "verdict", "approve")
    assert outcome["approved_amount"] == "12.50"
    assert outcome["decided_by"] == "review-caller"
    assert outcome["late"] is False
    stored = _lookup(service, request_id)
    assert stored["decision"] == "review"  # the automatic decision is kept as it was
    assert stored["approved_amount"] == "0.00"
    assert [v["version"] for v in stored["versions"]] == [2]
    assert stored["versions"][0]["approved_amount"] == "12.50"
    [label] = _labels(service, request_id)
    assert (label.is_abuse, label.source) == (False, "review")
    assert json.loads(label.extra)["note"] == "partly delivered"
    queue = service.client.get("/v1/reviews", headers=service.headers("review")).json()
    assert request_id not in [item["request_id"] for item in queue["items"]]

    again = _verdict(service, request_id, decision="refuse", is_abuse=True)
    assert again.status_code == 409
    assert "only an appeal reopens it" in again.json()["error"]["message"]
    assert [v["version"] for v in _lookup(service, request_id)["versions"]] == [2]


def test_a_verdict_pays_at_most_what_was_asked(service: Service) -> None:
    request_id = _under_review(service)

    more = _verdict(service, request_id, decision="approve", approved_amount="20.01",
                    is_abuse=False)  # fmt: skip
    refusing_money = _verdict(service, request_id, decision="refuse", approved_amount="1.00",
                              is_abuse=True)  # fmt: skip
    unsaid = _verdict(service, request_id, is_abuse=False)

    assert more.status_code == 422
    assert "more than the 20.00 asked" in more.json()["error"]["message"]
    assert refusing_money.status_code == 422
    assert unsaid.status_code == 422
    assert _lookup(service, request_id)["versions"] == []
    in_full = _verdict(service, request_id, decision="approve", is_abuse=False)
    assert in_full.json()["approved_amount"] == "20.00"


def test_a_verdict_after_the_deadline_is_recorded_as_late(service: Service) -> None:
    request_id = _under_review(service)
    engine = store.open_store(service.settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(store.decisions)
                .where(store.decisions.c.request_id == request_id)
                .values(review_due_at=0)
            )
    finally:
        engine.dispose()

    outcome = _verdict(service, request_id, decision="refuse", is_abuse=True).json()

    assert outcome["late"] is True
    assert outcome["due_at"] == "1970-01-01T00:00:00+00:00"


def test_an_appeal_goes_to_disputes_and_another_reviewer_decides_it(service: Service) -> None:
    request_id = _under_review(service)
    premature = _appeal(service, request_id)
    _verdict(service, request_id, decision="refuse", is_abuse=True)

    filed = _appeal(service, request_id, channel="support")

    assert premature.status_code == 409
    assert filed.status_code == 201, filed.text
    appeal = filed.json()
    assert (appeal["queue"], appeal["against_version"]) == ("disputes", 2)
    assert appeal["first_reviewer"] == "review-caller"
    assert _appeal(service, request_id).status_code == 409  # one appeal a request
    queue = service.client.get(
        "/v1/reviews", params={"queue": "disputes"}, headers=service.headers("review")
    ).json()["items"]
    assert request_id in [item["request_id"] for item in queue]

    same = _verdict(service, request_id, decision="approve", is_abuse=False)
    assert same.status_code == 403
    assert "another reviewer" in same.json()["error"]["message"]
    second = create_key(service.settings.api_keys, "second-reviewer", [Role.REVIEW])
    decided = service.client.post(
        f"/v1/reviews/{request_id}",
        json={"decision": "approve", "is_abuse": False, "note": "issuer confirmed"},
        headers={"Authorization": f"Bearer {second}"},
    )
    assert decided.status_code == 200, decided.text
    outcome = decided.json()
    assert (outcome["version"], outcome["kind"], outcome["decided_by"]) == (
        3,
        "appeal",
        "second-reviewer",
    )
    versions = _lookup(service, request_id)["versions"]
    assert [(v["version"], v["decision"]) for v in versions] == [(2, "refuse"), (3, "approve")]
    assert sorted((lb.source, lb.is_abuse) for lb in _labels(service, request_id)) == [
        ("dispute", False),
        ("review", True),
    ]


def test_an_approval_cannot_be_appealed(service: Service) -> None:
    answer = service.decide(body(request_id="paid", amount="1.00")).json()
    if answer["decision"] != "approve":  # the tiny history's model decides
        return
    refused = _appeal(service, "paid")
    assert refused.status_code == 409
    assert "approved" in refused.json()["error"]["message"]
    assert _appeal(service, "unknown").status_code == 404
    assert _appeal(service, "paid", role="ingest").status_code == 403


def test_the_feed_has_every_final_outcome_once_in_order(service: Service) -> None:
    request_id = _under_review(service)
    _verdict(service, request_id, decision="refuse", is_abuse=True)

    page = _feed(service)

    events = page["outcomes"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert page["last"] == seqs[-1]
    assert len({e["event_id"] for e in events}) == len(events)
    assert events[-1]["event_id"] == f"{request_id}:2"
    automatic = [e for e in events if e["kind"] == "automatic"]
    assert all(e["decision"] in {"approve", "block"} for e in automatic)
    assert "again:1" not in {e["event_id"] for e in events}  # a review settles nothing
    rest = _feed(service, after=seqs[0])
    assert [e["seq"] for e in rest["outcomes"]] == seqs[1:]
    assert _feed(service, after=page["last"]) == {"outcomes": [], "last": page["last"]}
    denied = service.client.get("/v1/outcomes", headers=service.headers("ingest"))
    assert denied.status_code == 403


def test_a_waiting_reader_gets_a_verdict_as_it_is_made(service: Service) -> None:
    request_id = _under_review(service)
    last = _feed(service)["last"]
    got: dict[str, Any] = {}

    def wait() -> None:
        started = time.monotonic()
        got["page"] = _feed(service, after=last, wait=10)
        got["seconds"] = time.monotonic() - started

    reader = threading.Thread(target=wait)
    reader.start()
    time.sleep(0.5)
    made = time.monotonic()
    _verdict(service, request_id, decision="refuse", is_abuse=True)
    reader.join(timeout=15)

    assert [e["event_id"] for e in got["page"]["outcomes"]] == [f"{request_id}:2"]
    assert got["seconds"] < 5, "the reader waited out its 10 s instead of answering"
    assert time.monotonic() - made < 3


def test_an_outcome_committed_late_is_not_skipped(engine: Engine) -> None:
    """Two writers: the one that inserted first commits last. The feed numbers outcomes
    once they are committed, so a reader past the second one still gets the first."""

    def row(request_id: str, at: int) -> dict[str, Any]:
        return {
            "event_id": f"{request_id}:1", "seq": None, "request_id": request_id,
            "version": 1, "kind": "automatic", "decision": "approve", "approved_amount": 100,
            "is_abuse": None, "note": None, "decided_by": None, "decided_at": at,
            "due_at": None, "late": False,
        }  # fmt: skip

    slow = engine.connect()
    slow_tx = slow.begin()
    store.insert_outcome(slow, row("slow", 1))
    if engine.dialect.name == "sqlite":  # one writer at a time: commit in the other order
        slow_tx.commit()
        with engine.begin() as conn:
            store.insert_outcome(conn, row("fast", 2))
    else:
        with engine.begin() as conn:
            store.insert_outcome(conn, row("fast", 2))
    with engine.begin() as conn:
        store.sequence(conn)
    with engine.connect() as conn:
        seen = store.feed(conn, 0, 10)
    if engine.dialect.name != "sqlite":
        slow_tx.commit()
    slow.close()
    with engine.begin() as conn:
        store.sequence(conn)
    with engine.connect() as conn:
        after = store.feed(conn, seen[-1]["seq"], 10)

    assert {r["request_id"] for r in seen} | {r["request_id"] for r in after} == {"slow", "fast"}
    assert len(seen) + len(after) == 2


def test_version_9_stores_get_their_automatic_outcomes(engine: Engine) -> None:
    decided = [("b", "block", 20), ("a", "approve", 10), ("r", "review", 5)]
    with engine.begin() as conn:
        for request_id, decision, at in decided:
            conn.execute(
                store.decisions.insert().values(
                    request_id=request_id, decision=decision, score=0.1, approved_amount=700,
                    reasons="[]", decided_at=at, request_hash="0" * 64,
                )
            )  # fmt: skip
        for table in (store.outcomes, store.appeals, store.accounts, store.claims,
                      store.webhooks, store.webhook_deliveries):  # fmt: skip
            table.drop(conn)
        conn.execute(update(store.schema_info).values(version=9))
    url = engine.url.render_as_string(hide_password=False)
    engine.dispose()

    reopened = store.open_store(url)
    try:
        with reopened.connect() as conn:
            rows = store.feed(conn, 0, 10)
    finally:
        reopened.dispose()

    assert [(r["seq"], r["request_id"], r["decision"]) for r in rows] == [
        (1, "a", "approve"),
        (2, "b", "block"),
    ]
