"""The decision API over real SQLite and PostgreSQL stores: answers, durability,
idempotency (also under concurrent duplicates), unknown history, batches, auth, bad input."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

import features
from riskmodel import store
from riskmodel.store import EVENT_TABLES, decisions
from riskmodel.units import micros
from serving.app import create_app
from serving.auth import KeyRing, Role, create_key, hash_key
from tests.test_serving_fixtures import (
    Service,
    TestClient,
    body,
    load_tiny,
    make_settings,
    running,
    sample_bundle,
    service,
)

__all__ = ["service"]

_requests = EVENT_TABLES["refund_requests"]


def _rows(url: str, request_id: str) -> tuple[int, int, dict[str, Any] | None]:
    """Refund-request rows and decision rows stored for ``request_id``, and the decision."""
    engine = store.open_store(url)
    try:
        with engine.connect() as conn:
            n_requests = conn.execute(
                select(func.count()).where(_requests.c.request_id == request_id)
            ).scalar_one()
            found = conn.execute(
                select(decisions).where(decisions.c.request_id == request_id)
            ).all()
    finally:
        engine.dispose()
    return n_requests, len(found), (dict(found[0]._mapping) if found else None)


def test_a_decision_is_stored_with_its_versions_and_read_back(service: Service) -> None:
    response = service.decide(body())
    assert response.status_code == 200, response.text
    answer = response.json()

    assert answer["decision"] in {"approve", "review", "block"}
    assert 0.0 <= answer["score"] <= 1.0
    assert answer["stored"] is True
    assert answer["replayed"] is False
    assert answer["model_version"] == sample_bundle().version
    assert answer["policy_version"] == "starter-3"
    assert answer["feature_version"] == str(features.FEATURE_VERSION)
    assert all({"code", "kind", "message"} <= set(r) for r in answer["reasons"])
    if answer["decision"] != "approve":
        assert answer["reasons"], "a review or block always says why"
    if answer["decision"] == "review":
        assert answer["review"]["queue"] in {"ordinary", "disputes"}
        assert answer["approved_amount"] == "0.00"

    n_requests, n_decisions, row = _rows(service.settings.database_url or "", "api-1")
    assert (n_requests, n_decisions) == (1, 1)
    assert row is not None
    assert len(row["request_hash"]) == 64
    assert row["decision"] == answer["decision"]
    assert row["score"] == answer["score"]

    lookup = service.client.get("/v1/decisions/api-1", headers=service.headers("review"))
    assert lookup.status_code == 200
    stored = lookup.json()
    versions = stored.pop("versions")
    assert stored | {"replayed": False} == answer
    if answer["decision"] == "review":
        assert versions == []  # settled later, by a verdict
    else:  # the automatic decision settles it: version 1, in the refund pipeline's feed
        assert [(v["version"], v["kind"], v["decision"]) for v in versions] == [
            (1, "automatic", answer["decision"])
        ]
        assert versions[0]["approved_amount"] == answer["approved_amount"]
        assert versions[0]["decided_at"] == answer["decided_at"]


def test_the_challenger_is_scored_in_the_shadow_and_never_answers(service: Service) -> None:
    answer = service.decide(body()).json()
    _, _, row = _rows(service.settings.database_url or "", "api-1")

    assert row is not None
    shadow = json.loads(row["shadow"])
    assert shadow["model_version"] == f"{sample_bundle().version}-shadow"
    assert shadow["score"] != pytest.approx(answer["score"])  # an inverted calibration
    assert answer["model_version"] == sample_bundle().version
    assert "shadow" not in answer


def test_the_same_request_again_returns_the_stored_decision_and_counts_once(
    service: Service,
) -> None:
    first = service.decide(body()).json()
    # The same request written differently: another time zone, a number for the amount.
    again = service.decide(body(requested_at="2026-01-20T18:00:00+08:00", amount=20)).json()

    assert again == first | {"replayed": True}
    url = service.settings.database_url or ""
    assert _rows(url, "api-1")[:2] == (1, 1)
    engine = store.open_store(url)
    try:
        with engine.connect() as conn:
            later = {
                "request_id": "later",
                "order_id": "o3",
                "user_id": "u2",
                "requested_at": micros(datetime(2026, 1, 21, tzinfo=UTC)),
                "amount": 100,
                "reason": "other",
            }
            seen = features.online_features(conn, later, ["user_refunds_all"])
    finally:
        engine.dispose()
    assert seen["user_refunds_all"] == 2.0  # r3 from the history, api-1 once


def test_a_reused_request_id_with_another_body_is_refused(service: Service) -> None:
    first = service.decide(body()).json()
    response = service.decide(body(amount="21.00"))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "conflict"
    assert "api-1" in error["message"]
    _, _, row = _rows(service.settings.database_url or "", "api-1")
    assert row is not None
    assert row["score"] == first["score"]


def test_a_history_request_id_with_another_body_is_refused(service: Service) -> None:
    # r3 is in the history (u2, o3, 6.48): asking to decide it with other details is a reuse.
    response = service.decide(body(request_id="r3"))
    assert response.status_code == 409
    same = body(
        request_id="r3",
        order_id="o3",
        requested_at="2026-01-08T12:00:00Z",
        amount="6.48",
        reason="not_delivered",
        channel="web",
    )
    assert service.decide(same).status_code == 200


def test_concurrent_duplicates_are_decided_once(database_url: str, tmp_path: Any) -> None:
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url)
    answers: list[dict[str, Any]] = []
    statuses: list[int] = []
    lock = threading.Lock()
    # Two applications (two event loops, two connection pools) on one store: real
    # concurrency, as two workers or replicas would have it.
    with (
        TestClient(create_app(settings)) as one,
        TestClient(create_app(settings)) as two,
    ):
        # FastAPI builds an application's routes at its first request, under
        # warnings.catch_warnings, which is not thread-safe: two applications of one
        # process building at once (never the case of two workers) can turn a warning it
        # silences into this suite's error. Each builds alone first.
        for client in (one, two):
            assert client.get("/healthz").status_code == 200
        start = threading.Barrier(8)

        def send(client: TestClient, amount: str) -> None:
            start.wait()
            response = client.post(
                "/v1/decisions",
                json=body(request_id="twin", amount=amount),
                headers={"Authorization": f"Bearer {keys['decide']}"},
            )
            with lock:
                statuses.append(response.status_code)
                if response.status_code == 200:
                    answers.append(response.json())

        threads = [
            threading.Thread(target=send, args=(one if i % 2 else two, "20.00")) for i in range(6)
        ] + [threading.Thread(target=send, args=(c, "25.00")) for c in (one, two)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert _rows(database_url, "twin")[:2] == (1, 1)
    _, _, row = _rows(database_url, "twin")
    assert row is not None
    decided = {a["decided_at"] for a in answers}
    assert len(decided) == 1  # every 200 is the one stored decision
    assert sum(not a["replayed"] for a in answers) <= 1
    # Whichever body won, every call with the other body was refused.
    winner = "20.00" if len(answers) >= 6 else "25.00"
    assert Counter(statuses) == (
        Counter({200: 6, 409: 2}) if winner == "20.00" else Counter({200: 2, 409: 6})
    )


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"order_id": "o-missing"}, "UNKNOWN_ORDER"),
        ({"user_id": "u-missing"}, "UNKNOWN_USER"),
        ({"order_id": "o1"}, "ORDER_OF_ANOTHER_USER"),  # o1 is u1's
        ({"requested_at": "2026-01-08T12:00:00Z"}, "REQUESTED_BEFORE_PAYMENT"),  # o4 paid 13:00
    ],
)
def test_a_request_that_does_not_fit_the_history_gets_a_provisional_review(
    service: Service, overrides: dict[str, Any], code: str
) -> None:
    answer = service.decide(body(**overrides)).json()

    assert answer["decision"] == "review"
    assert answer["approved_amount"] == "0.00"
    assert answer["stored"] is False
    assert [r["code"] for r in answer["reasons"]] == [code]
    assert "ask again" in answer["reasons"][0]["message"]
    assert _rows(service.settings.database_url or "", "api-1")[:2] == (0, 0)


def test_once_the_order_arrives_the_same_request_is_decided(service: Service) -> None:
    request = body(order_id="o9")
    assert service.decide(request).json()["stored"] is False
    order = {
        "order_id": "o9",
        "user_id": "u2",
        "product_type": "card_code",
        "amount": "30.00",
        "paid_at": "2026-01-15T10:00:00Z",
    }
    sent = service.client.post(
        "/v1/events/orders", json={"rows": [order]}, headers=service.headers("ingest")
    )
    assert sent.status_code == 200, sent.text
    answer = service.decide(request).json()
    assert answer["stored"] is True
    assert answer["replayed"] is False


def test_a_batch_decides_each_request_on_its_own(service: Service) -> None:
    assert service.decide(body(request_id="b-0")).status_code == 200
    requests = [
        body(request_id="b-1"),
        body(request_id="b-0"),  # replay
        body(request_id="b-0", amount="1.00"),  # conflict
        body(request_id="b-2", order_id="nope"),  # provisional
    ]
    response = service.client.post(
        "/v1/decisions:batch", json={"requests": requests}, headers=service.headers("decide")
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]

    assert [r["request_id"] for r in results] == ["b-1", "b-0", "b-0", "b-2"]
    assert [r["status"] for r in results] == [200, 200, 409, 200]
    assert results[0]["decision"]["stored"] is True
    assert results[1]["decision"]["replayed"] is True
    assert results[2]["error"]["code"] == "conflict"
    assert results[3]["decision"]["stored"] is False


def test_batches_and_bodies_above_the_limits_are_refused(database_url: str, tmp_path: Any) -> None:
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url, max_batch=2, max_body_bytes=4096)
    with running(settings, keys) as svc:
        three = [body(request_id=f"x{i}") for i in range(3)]
        batch = svc.client.post(
            "/v1/decisions:batch", json={"requests": three}, headers=svc.headers("decide")
        )
        big = svc.decide(body(channel="x" * 5000))

    assert batch.status_code == 413
    assert batch.json()["error"]["code"] == "payload_too_large"
    assert big.status_code == 413
    assert _rows(database_url, "x0")[:2] == (0, 0)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer rk_not-a-key"}, 401),
        ({"Authorization": "Basic abc"}, 401),
        ("ingest", 403),
        ("review", 403),
        ("decide", 200),
        ("admin", 200),
        ("x-api-key", 200),
    ],
)
def test_callers_need_a_key_with_the_role(
    service: Service, headers: dict[str, str] | str, status: int
) -> None:
    if headers == "x-api-key":
        headers = {"X-API-Key": service.keys["decide"]}
    elif isinstance(headers, str):
        headers = service.headers(headers)
    response = service.client.post("/v1/decisions", json=body(), headers=headers)

    assert response.status_code == status, response.text
    if status >= 400:
        assert response.json()["error"]["code"] in {"unauthorized", "forbidden"}
        assert _rows(service.settings.database_url or "", "api-1")[:2] == (0, 0)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": "-1.00"}, "body.amount"),
        ({"amount": "1.001"}, "body.amount"),
        ({"amount": "1e400"}, "body.amount"),
        ({"reason": "because"}, "body.reason"),
        ({"requested_at": "yesterday"}, "body.requested_at"),
        ({"requested_at": "0001-01-01T00:00:00+01:00"}, "body.requested_at"),
        ({"request_id": ""}, "body.request_id"),
        ({"request_id": "x" * 129}, "body.request_id"),
        ({"device_id": "d\x00"}, "body.device_id"),
        ({"days_used_claimed": -1}, "body.days_used_claimed"),
        ({"surprise": 1}, "body.surprise"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    service: Service, overrides: dict[str, Any], field: str
) -> None:
    response = service.decide(body(**overrides))

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [f["field"] for f in error["fields"]] == [field]


def test_a_missing_field_and_a_broken_body_are_422(service: Service) -> None:
    missing = {k: v for k, v in body().items() if k != "order_id"}
    assert service.decide(missing).json()["error"]["fields"][0]["field"] == "body.order_id"
    broken = service.client.post(
        "/v1/decisions",
        content=b'{"request_id": ',
        headers=service.headers("decide") | {"Content-Type": "application/json"},
    )
    assert broken.status_code == 422


def test_an_unknown_decision_is_404(service: Service) -> None:
    response = service.client.get("/v1/decisions/nothing", headers=service.headers("decide"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_derived_data_written_by_decisions_equals_a_rebuild(service: Service) -> None:
    for i, (device, ip) in enumerate([("d9", "10.9.9.9"), ("d2", None), (None, "10.0.0.7")]):
        request = body(request_id=f"s{i}", device_id=device, ip=ip)
        assert service.decide(request).json()["stored"] is True
    on_seller = body(request_id="s3", order_id="o3", user_id="u2", reason="invalid_code")
    assert service.decide(on_seller).json()["stored"] is True
    engine = store.open_store(service.settings.database_url)
    sightings, days = store.sightings, store.entity_days
    order = [sightings.c.entity_kind, sightings.c.entity, sightings.c.user_id]
    try:
        with engine.begin() as conn:
            written = conn.execute(select(sightings).order_by(*order)).all()
            store.refresh_sightings(conn, None)
            rebuilt = conn.execute(select(sightings).order_by(*order)).all()
            days_written = conn.execute(select(days).order_by(*days.primary_key.columns)).all()
            store.refresh_entity_days(conn, None)
            days_rebuilt = conn.execute(select(days).order_by(*days.primary_key.columns)).all()
            seen_days = store.sighting_days
            tiles = seen_days.primary_key.columns
            seen_written = conn.execute(select(seen_days).order_by(*tiles)).all()
            store.refresh_sighting_days(conn, None)
            seen_rebuilt = conn.execute(select(seen_days).order_by(*tiles)).all()
            copies = conn.execute(
                select(_requests.c.order_seller_id, _requests.c.order_payment_account).where(
                    _requests.c.request_id == "s0"
                )
            ).one()
    finally:
        engine.dispose()
    assert written == rebuilt
    assert days_written == days_rebuilt
    assert seen_written == seen_rebuilt
    assert ("ip", "10.9.9.9") in {(row.entity_kind, row.entity) for row in seen_written}
    assert ("refund_requests", "s2", "invalid_code") in {
        (row.source, row.entity, row.reason)
        for row in days_written
        if row.entity_kind == "seller_id"
    }
    assert tuple(copies) == (None, "pa3")  # o4 has no seller, pays from pa3


def test_a_key_is_returned_once_and_only_its_hash_is_kept(tmp_path: Any) -> None:
    path = tmp_path / "keys" / "api_keys.json"
    first = create_key(path, "refund-pipeline", [Role.DECIDE])
    second = create_key(path, "support", [Role.REVIEW, Role.REVIEW])
    text = path.read_text()
    entries = json.loads(text)["keys"]

    assert first != second
    assert first not in text
    assert second not in text
    assert [(e["caller"], e["roles"]) for e in entries] == [
        ("refund-pipeline", ["decide"]),
        ("support", ["review"]),
    ]
    assert entries[0]["sha256"] == hash_key(first)
    assert path.stat().st_mode & 0o777 == 0o600
    ring = KeyRing(path)
    caller = ring.authenticate(first)
    assert caller is not None
    assert caller.may(Role.DECIDE)
    assert not caller.may(Role.REVIEW)
    assert ring.authenticate(first + "x") is None
    with pytest.raises(ValueError, match="role"):
        create_key(path, "nobody", [])


def test_keys_take_effect_without_a_restart_and_a_damaged_file_lets_nobody_in(
    service: Service,
) -> None:
    late = create_key(service.settings.api_keys, "late-caller", [Role.DECIDE])
    assert service.decide(body(), role="decide").status_code == 200
    headers = {"Authorization": f"Bearer {late}"}
    assert service.client.get("/v1/decisions/api-1", headers=headers).status_code == 200

    service.settings.api_keys.write_text("{not json")
    refused = service.client.get("/v1/decisions/api-1", headers=headers)
    assert refused.status_code == 401
