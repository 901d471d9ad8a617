"""The refund pipeline's client (``client/``, package ``riskmodel_client``) against a real
``riskmodel serve`` process: typed decisions, typed errors for what the caller must fix,
retries that never decide twice (an answer lost on the way, the service killed and
started again), and, against servers of the test's own, a review of the client's own
(``CLIENT_FALLBACK``) within its budget when the service is slow, unreachable or busy.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice, pairwise
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from riskmodel_client import (
    FALLBACK_CODE,
    ApiError,
    AsyncClient,
    AuthError,
    Client,
    Decision,
    InvalidRequest,
    NotFound,
    OutcomePage,
    RequestConflict,
    ServiceUnavailable,
)

from tests.served import Answer, LossyProxy, Scripted, Served, free_port, json_answer, serving
from tests.test_serving_fixtures import body

TOLERANCE = 0.25
"""Seconds a budget may be overrun by on a busy two-core machine (thread wake-ups)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("client")) as found:
        yield found


@pytest.fixture
def risk(served: Served) -> Iterator[Client]:
    with Client(served.base_url, served.keys["decide"], timeout=5, budget=10) as client:
        yield client


def _fallback_reason(decision: Decision) -> str:
    assert decision.decision == "review"
    assert decision.approved_amount == Decimal("0.00")
    assert decision.is_fallback
    assert not decision.stored
    (reason,) = decision.reasons
    assert (reason.code, reason.kind) == (FALLBACK_CODE, "policy")
    return reason.message


# -- against the real service -----------------------------------------------------------------


def test_a_decision_comes_back_typed_and_the_same_again(risk: Client) -> None:
    request = body(request_id="typed-1") | {"amount": Decimal("20.00")}

    first = risk.decide(request)
    again = risk.decide(request)

    assert first.request_id == "typed-1"
    assert first.decision in ("approve", "review", "block")
    assert first.stored
    assert not first.replayed
    assert isinstance(first.approved_amount, Decimal)
    assert first.decided_at.tzinfo is not None
    assert all(r.code and r.kind and r.message for r in first.reasons)
    assert first.policy_version
    assert first.model_version
    assert not first.is_fallback
    assert again.replayed
    assert again.decision == first.decision
    assert again.approved_amount == first.approved_amount
    assert risk.get_decision("typed-1") == again
    assert risk.get_decision("never-asked") is None


def test_the_same_request_id_with_another_request_raises_request_conflict(risk: Client) -> None:
    risk.decide(body(request_id="conflict-1"))

    with pytest.raises(RequestConflict) as raised:
        risk.decide(body(request_id="conflict-1", amount="21.00"))

    assert (raised.value.status, raised.value.code) == (409, "conflict")


def test_an_invalid_request_raises_a_typed_error_naming_the_field(risk: Client) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as raised:
        risk.decide(body(request_id="invalid-1", amount="-3"))

    assert raised.value.status == 422
    assert [f["field"] for f in raised.value.fields] == ["body.amount"]
    assert time.monotonic() - started < 2  # refused once, not retried


def test_a_wrong_key_raises_and_is_not_turned_into_a_review(served: Served) -> None:
    with (
        Client(served.base_url, "rk_nobody", budget=10) as nobody,
        pytest.raises(AuthError) as raised,
    ):
        nobody.decide(body(request_id="auth-1"))
    assert raised.value.status == 401
    with (
        Client(served.base_url, served.keys["ingest"]) as ingester,
        pytest.raises(AuthError) as raised,
    ):
        ingester.decide(body(request_id="auth-2"))
    assert raised.value.status == 403


def test_a_batch_keeps_each_answer_in_its_place(risk: Client) -> None:
    risk.decide(body(request_id="batch-taken"))

    results = risk.decide_many(
        [
            body(request_id="batch-1"),
            body(request_id="batch-taken", amount="19.00"),  # another request: its 409
            body(
                request_id="batch-2",
                order_id="o3",
                user_id="u2",
                amount="6.48",
                reason="not_delivered",
            ),
        ]
    )

    first, conflict, second = results
    assert isinstance(first, Decision)
    assert first.request_id == "batch-1"
    assert isinstance(conflict, RequestConflict)
    assert conflict.status == 409
    assert isinstance(second, Decision)
    assert second.request_id == "batch-2"
    assert risk.decide_many([]) == []


def test_history_and_labels_go_in_and_the_new_order_is_decided(served: Served) -> None:
    with Client(served.base_url, served.keys["admin"], timeout=10, budget=20) as admin:
        users = admin.send_events(
            "users", [{"user_id": "u9", "registered_at": "2025-11-01T08:00:00Z"}]
        )
        orders = admin.send_events(
            "orders",
            [{"order_id": "o9", "user_id": "u9", "product_type": "card_code",
              "amount": Decimal("40.00"), "paid_at": datetime(2026, 1, 12, 9, tzinfo=UTC)}],
        )  # fmt: skip
        again = admin.send_events(
            "users", [{"user_id": "u9", "registered_at": "2025-11-01T08:00:00Z"}]
        )
        labels = admin.send_labels(
            [{"request_id": "r1", "is_abuse": False, "labeled_at": "2026-01-15T00:00:00Z"}]
        )
        decision = admin.decide(
            body(
                request_id="new-order-1",
                order_id="o9",
                user_id="u9",
                amount="40.00",
                reason="invalid_code",
            )
        )
        with pytest.raises(ValueError, match="one of users, orders, usage"):
            admin.send_events("labels", [])
        with pytest.raises(InvalidRequest):
            admin.send_events("users", [{"user_id": "u10"}])

    assert (users.table, users.received, users.written) == ("users", 1, 1)
    assert (orders.received, orders.written) == (1, 1)
    assert again.written == 0  # an upsert: sending again changes nothing
    assert labels.table == "labels"
    assert labels.written == 1
    assert decision.stored  # the history was there: a real decision, not a provisional one


def test_an_answer_lost_on_the_way_is_sent_again_and_decided_once(served: Served) -> None:
    proxy = LossyProxy(served.port, drop=1)
    with (
        proxy.running() as url,
        Client(url, served.keys["decide"], timeout=5, budget=10) as risk,
    ):
        decision = risk.decide(body(request_id="lost-1"))

    assert proxy.lost == 1
    assert not decision.is_fallback
    assert decision.replayed  # the second attempt found the first one's decision
    assert served.decision_rows("lost-1") == 1


def test_the_client_rides_through_a_restart_and_one_decision_is_stored(served: Served) -> None:
    risk = Client(served.base_url, served.keys["decide"], timeout=2, budget=60)
    assert not risk.decide(body(request_id="before-restart")).is_fallback
    served.kill()  # as a crash: the connection the client keeps dies with it
    answer: list[Decision] = []
    pending = threading.Thread(
        target=lambda: answer.append(risk.decide(body(request_id="restart-1")))
    )
    pending.start()
    time.sleep(0.5)  # the client is retrying against a closed port
    assert not answer
    served.start()  # the same store, the same port
    pending.join(timeout=60)
    risk.close()

    (decision,) = answer
    assert not decision.is_fallback, decision.reasons
    assert decision.stored
    assert served.decision_rows("restart-1") == 1
    assert served.decision_rows("before-restart") == 1


# -- against servers of the test's own --------------------------------------------------------


@pytest.fixture
def slow() -> Iterator[str]:
    """A service that answers after three seconds."""
    release = threading.Event()

    def answer(method: str, path: str, content: bytes) -> Answer:
        release.wait(3)
        return json_answer({"error": {"code": "late", "message": "too late", "fields": []}}, 503)

    with Scripted(answer).running() as url:
        yield url
        release.set()


def test_a_slow_service_gives_the_fallback_within_the_budget(slow: str) -> None:
    with Client(slow, "rk_key", timeout=0.3, budget=0.8) as risk:
        started = time.monotonic()
        decision = risk.decide(body(request_id="slow-1"))
        took = time.monotonic() - started

    assert took < 0.8 + TOLERANCE
    assert decision.request_id == "slow-1"
    assert "timeout" in _fallback_reason(decision)


def test_the_async_client_holds_its_budget_too(slow: str) -> None:
    async def run() -> tuple[float, list[Decision | ApiError], Decision]:
        async with AsyncClient(slow, "rk_key", timeout=0.3, budget=0.6) as risk:
            started = time.monotonic()
            many = await risk.decide_many([body(request_id="a-1"), body(request_id="a-2")])
            one = await risk.decide(body(request_id="a-3"))
            return time.monotonic() - started, many, one

    took, many, one = asyncio.run(run())

    assert took < 2 * 0.6 + TOLERANCE
    decisions = [d for d in many if isinstance(d, Decision)]
    assert [d.request_id for d in decisions] == ["a-1", "a-2"]
    assert all("timeout" in _fallback_reason(d) for d in [*decisions, one])


def test_an_unreachable_service_gives_the_fallback_and_the_other_calls_raise() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url, "rk_key", timeout=0.2, budget=0.5) as risk:
        started = time.monotonic()
        decision = risk.decide(body(request_id="nowhere-1"))
        took = time.monotonic() - started
        with pytest.raises(ServiceUnavailable) as raised:
            risk.get_decision("nowhere-1")

    assert took < 0.5 + TOLERANCE
    assert "unreachable" in _fallback_reason(decision)
    assert raised.value.why == "unreachable"


def _decision_json(request_id: str, decision: str = "approve") -> dict[str, Any]:
    return {
        "request_id": request_id, "decision": decision, "score": 0.01,
        "approved_amount": "20.00", "reasons": [], "review": None, "model_version": "m",
        "policy_version": "p", "policy_hash": "h", "feature_version": "1",
        "decided_at": "2026-01-20T10:00:01+00:00", "stored": True, "replayed": False,
    }  # fmt: skip


def test_retry_after_is_honoured_and_the_same_body_sent_again() -> None:
    busy = {"error": {"code": "overloaded", "message": "full", "fields": []}}

    def answer(method: str, path: str, content: bytes) -> Answer:
        if len(script.calls) <= 2:
            return json_answer(busy, 503, **{"Retry-After": "1"})
        return json_answer(_decision_json("busy-1"))

    script = Scripted(answer)
    with script.running() as url, Client(url, "rk_key", timeout=1, budget=5) as risk:
        decision = risk.decide(body(request_id="busy-1"))

    assert decision.approved
    assert not decision.is_fallback
    times = [when for when, _, _ in script.calls]
    assert len(times) == 3
    assert all(later - earlier >= 1.0 for earlier, later in pairwise(times))
    assert len({content for _, _, content in script.calls}) == 1  # the very same request


def test_a_retry_after_beyond_the_budget_gives_the_fallback_at_once() -> None:
    def answer(method: str, path: str, content: bytes) -> Answer:
        return json_answer({"error": {"code": "too_many_requests"}}, 429, **{"Retry-After": "30"})

    script = Scripted(answer)
    with script.running() as url, Client(url, "rk_key", timeout=1, budget=3) as risk:
        started = time.monotonic()
        decision = risk.decide(body(request_id="busy-2"))
        took = time.monotonic() - started

    assert took < 1
    assert len(script.calls) == 1
    assert "overloaded" in _fallback_reason(decision)


@pytest.mark.parametrize(
    ("status", "document"),
    [(500, {"error": {"code": "internal", "message": "bug"}}), (200, {"decision": "approve"})],
    ids=["server-error", "not-a-decision"],
)
def test_a_broken_answer_is_never_an_approval(status: int, document: Any) -> None:
    script = Scripted(lambda *_: json_answer(document, status))
    with script.running() as url, Client(url, "rk_key", timeout=1, budget=3) as risk:
        decision = risk.decide(body(request_id="broken-1"))
        (item,) = risk.decide_many([body(request_id="broken-2")])

    _fallback_reason(decision)
    assert isinstance(item, Decision)
    assert item.is_fallback
    assert not item.approved
    assert len(script.calls) == 2  # neither is sent again: it would not help


def test_outcomes_are_read_typed_and_followed_page_after_page() -> None:
    def outcome(seq: int, kind: str, decision: str) -> dict[str, Any]:
        return {
            "seq": seq, "event_id": f"e{seq}", "request_id": f"r{seq}", "version": 1,
            "kind": kind, "decision": decision, "approved_amount": "12.34",
            "is_abuse": None if kind == "automatic" else decision != "approve",
            "decided_at": "2026-01-20T10:00:00+00:00",
            "decided_by": None if kind == "automatic" else "reviewer-1", "late": False,
        }  # fmt: skip

    pages = {
        0: {"outcomes": [outcome(1, "automatic", "approve"), outcome(2, "verdict", "refuse")],
            "last": 2},
        2: {"outcomes": [], "last": 2},
        3: {"outcomes": [outcome(3, "appeal", "block")], "last": 3},
    }  # fmt: skip
    asked: list[dict[str, list[str]]] = []

    def answer(method: str, path: str, content: bytes) -> Answer:
        query = parse_qs(urlsplit(path).query)
        asked.append(query)
        after = int(query["after"][0])
        # The second poll of position 2 finds the third outcome.
        key = 3 if after == 2 and len(asked) > 2 else after
        return json_answer(pages[key])

    with Scripted(answer).running() as url, Client(url, "rk_key") as risk:
        page = risk.outcomes(after=0, limit=50, wait=0)
        followed = list(islice(risk.follow(after=0, wait=0.5), 3))

    assert isinstance(page, OutcomePage)
    assert page.last == 2
    first, second = page.outcomes
    assert (first.seq, first.kind, first.decision, first.is_abuse) == (1, "automatic", "approve",
                                                                       None)  # fmt: skip
    assert first.approved_amount == Decimal("12.34")
    assert first.decided_at == datetime(2026, 1, 20, 10, tzinfo=UTC)
    assert (second.kind, second.is_abuse, second.decided_by) == ("verdict", True, "reviewer-1")
    assert [o.seq for o in followed] == [1, 2, 3]
    assert asked[0] == {"after": ["0"], "limit": ["50"], "wait": ["0"]}
    assert asked[1]["wait"] == ["0.5"]


def test_a_missing_route_is_the_callers_error() -> None:
    script = Scripted(lambda *_: json_answer({"detail": "Not Found"}, 404))
    with script.running() as url, Client(url, "rk_key") as risk, pytest.raises(NotFound):
        risk.outcomes()


def test_the_client_imports_nothing_of_the_service() -> None:
    heavy = ("pandas", "numpy", "lightgbm", "riskmodel", "serving", "features", "training")
    code = (
        "import sys, riskmodel_client\n"
        f"found = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})\n"
        "print(found)\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
