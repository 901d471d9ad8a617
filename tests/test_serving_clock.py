"""Dates a caller chooses: counts cannot be dodged by dating requests backwards, a request
dated long before what the service holds of its buyer is reviewed, and one dated ahead of
the service's clock is refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.test_serving_fixtures import Service, body, load_tiny, make_settings, running

_ORDERS = 5
_PAID = datetime(2026, 1, 2, 9, 0, tzinfo=UTC)
_FIRST = datetime(2026, 1, 20, 10, 0, tzinfo=UTC)


@pytest.fixture
def svc(database_url: str, tmp_path: Path) -> Iterator[Service]:
    """The tiny history, plus a user u3 with five paid service orders."""
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url)
    with running(settings, keys) as found:
        ingest = found.headers("ingest")
        users = [{"user_id": "u3", "registered_at": "2025-06-01T00:00:00Z"}]
        orders = [
            {
                "order_id": f"o3-{i}",
                "user_id": "u3",
                "product_type": "service",
                "amount": "10.00",
                "currency": "CNY",
                "paid_at": _PAID.isoformat(),
                "payment_account": "pa-u3",
            }
            for i in range(_ORDERS)
        ]
        assert found.client.post(
            "/v1/events/users", json={"rows": users}, headers=ingest
        ).is_success
        assert found.client.post(
            "/v1/events/orders", json={"rows": orders}, headers=ingest
        ).is_success
        yield found


def _ask(svc: Service, i: int, at: datetime) -> dict[str, Any]:
    request = body(
        request_id=f"v{i}",
        order_id=f"o3-{i}",
        user_id="u3",
        requested_at=at.isoformat(),
        amount="10.00",
        device_id=f"d3-{i}",
        ip=f"10.3.0.{i}",
    )
    response = svc.decide(request)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _codes(answer: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in answer["reasons"]}


@pytest.mark.parametrize("step_hours", [1, -1], ids=["forwards", "backwards"])
def test_dating_requests_backwards_does_not_dodge_the_velocity_rule(
    svc: Service, step_hours: int
) -> None:
    """Five requests of one user an hour apart: the starter policy reviews the fourth and
    the fifth (three or more in a week before them), whichever way their dates run."""
    answers = [_ask(svc, i, _FIRST + timedelta(hours=step_hours * i)) for i in range(_ORDERS)]

    flagged = ["RULE_REFUND_VELOCITY" in _codes(a) for a in answers]
    assert flagged == [False, False, False, True, True]
    assert all(a["decision"] != "approve" for a in answers[3:])
    assert not any("DATED_BEFORE_STORED" in _codes(a) for a in answers)


def test_a_request_dated_long_before_what_is_stored_of_its_buyer_is_reviewed(
    svc: Service,
) -> None:
    _ask(svc, 0, _FIRST)

    late = _ask(svc, 1, _FIRST - timedelta(hours=30))
    recent = _ask(svc, 2, _FIRST - timedelta(hours=20))

    assert late["decision"] == "review"
    assert "DATED_BEFORE_STORED" in _codes(late)
    message = next(r["message"] for r in late["reasons"] if r["code"] == "DATED_BEFORE_STORED")
    assert "30.0 hours before" in message
    assert "DATED_BEFORE_STORED" not in _codes(recent)  # within the 24 hours allowed


def test_a_request_dated_ahead_of_the_services_clock_is_refused(svc: Service) -> None:
    ahead = datetime.now(UTC) + timedelta(hours=1)
    near = datetime.now(UTC) + timedelta(minutes=1)
    order = {
        "order_id": "o3-now",
        "user_id": "u3",
        "product_type": "service",
        "amount": "10.00",
        "currency": "CNY",
        "paid_at": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
    }
    svc.client.post("/v1/events/orders", json={"rows": [order]}, headers=svc.headers("ingest"))

    refused = svc.decide(
        body(request_id="f1", order_id="o3-now", user_id="u3", requested_at=ahead.isoformat())
    )
    accepted = svc.decide(
        body(request_id="f2", order_id="o3-now", user_id="u3", requested_at=near.isoformat())
    )
    batch = svc.client.post(
        "/v1/decisions:batch",
        json={
            "requests": [
                body(
                    request_id="f3", order_id="o3-now", user_id="u3", requested_at=ahead.isoformat()
                )
            ]
        },
        headers=svc.headers("decide"),
    )

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["fields"][0]["field"] == "body.requested_at"
    assert "ahead of the service's clock" in error["fields"][0]["message"]
    assert accepted.status_code == 200, accepted.text
    assert batch.status_code == 200
    item = batch.json()["results"][0]
    assert item["status"] == 422
    assert item["decision"] is None
    assert "ahead of the service's clock" in item["error"]["fields"][0]["message"]
    lookup = svc.client.get("/v1/decisions/f1", headers=svc.headers("decide"))
    assert lookup.status_code == 404  # nothing was stored
