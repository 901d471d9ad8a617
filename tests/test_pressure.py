"""Back-pressure (``serving.pressure``): a worker holding ``max_in_flight`` decision calls
answers the next at once, 503 ``overloaded`` (429 ``too_many_requests`` past one caller's
share), with ``Retry-After``, before reading its body; a real server flooded answers
those fast, counts them on ``/metrics`` and decides the rest; the refund pipeline's
client waits as told and gets its decisions within its budget; the OpenAPI document says
so.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from riskmodel_client import AsyncClient, Decision

from serving.app import create_app
from serving.auth import Caller
from serving.pressure import InFlightLimit, caller_share
from serving.settings import Settings
from tests.served import Served, serving
from tests.test_serving_fixtures import body, load_tiny, make_settings

LIMIT = 4  # a caller's share: 3


# -- the middleware on its own ------------------------------------------------------------------


class _Held:
    """An application whose calls wait until released; counts the calls that reached it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.reached: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.reached.append(scope["path"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _scope(caller: str, path: str = "/v1/decisions") -> dict[str, Any]:
    state = {"caller": Caller(caller, frozenset())}
    return {"type": "http", "method": "POST", "path": path, "headers": [], "state": state}


async def _call(limit: InFlightLimit, caller: str, path: str = "/v1/decisions") -> list[Any]:
    sent: list[Any] = []

    async def receive() -> Any:
        raise AssertionError("the body was read")

    async def send(message: Any) -> None:
        sent.append(message)

    await limit(_scope(caller, path), receive, send)
    return sent


def _status(sent: list[Any]) -> tuple[int, dict[bytes, bytes]]:
    start = sent[0]
    return start["status"], dict(start["headers"])


def test_a_caller_past_its_share_gets_429_and_a_full_worker_503_before_the_body() -> None:
    async def scenario() -> None:
        app = _Held()
        limit = InFlightLimit(app, max_in_flight=LIMIT)
        held = [asyncio.create_task(_call(limit, "pipeline")) for _ in range(3)]
        await asyncio.sleep(0)
        assert limit.in_flight == 3

        excess = await _call(limit, "pipeline")  # past its share of three
        held.append(asyncio.create_task(_call(limit, "support")))
        await asyncio.sleep(0)
        full = await _call(limit, "support")  # within its share, but the worker is full
        feed = asyncio.create_task(_call(limit, "pipeline", "/v1/outcomes"))  # not counted
        await asyncio.sleep(0)

        assert app.reached == ["/v1/decisions"] * 4 + ["/v1/outcomes"]
        status, headers = _status(excess)
        assert (status, headers[b"retry-after"]) == (429, b"1")
        assert b"too_many_requests" in excess[1]["body"]
        status, headers = _status(full)
        assert (status, headers[b"retry-after"]) == (503, b"1")
        assert b'"overloaded"' in full[1]["body"]

        app.release.set()
        for task in [*held, feed]:
            assert _status(await task)[0] == 200
        assert (limit.in_flight, dict(limit.by_caller)) == (0, {})
        assert _status(await _call(limit, "pipeline"))[0] == 200  # room again

    asyncio.run(scenario())


def test_a_failing_call_gives_its_place_back() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        limit = InFlightLimit(broken, max_in_flight=1)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await _call(limit, "pipeline")
        assert limit.in_flight == 0

    asyncio.run(scenario())


def test_the_share_and_the_setting() -> None:
    assert [caller_share(n) for n in (1, 2, 4, 64)] == [1, 2, 3, 48]
    assert Settings.from_env({"RISKMODEL_MAX_IN_FLIGHT": "8"}).max_in_flight == 8
    assert Settings().max_in_flight == 64
    with pytest.raises(ValueError, match="max_in_flight 0"):
        Settings(max_in_flight=0)


def test_the_document_gives_both_answers_on_the_decision_operations(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    load_tiny(url)
    settings, _ = make_settings(tmp_path, url)
    document = create_app(settings).openapi()

    for path, operations in document["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            if path.startswith("/v1/decisions"):
                assert "Retry-After" in responses["429"]["headers"]
                assert "overloaded" in responses["503"]["description"]
                schema = responses["503"]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}
            else:
                assert "429" not in responses


# -- a real server, flooded -------------------------------------------------------------------


@pytest.fixture(scope="module")
def flooded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("pressure")
    with serving(root, RISKMODEL_MAX_IN_FLIGHT=str(LIMIT)) as served:
        yield served


def _flood(served: Served, seconds: float, workers: int) -> list[tuple[str, float, httpx.Response]]:
    """Two callers, ``workers`` connections each, sending new decisions one after another
    for ``seconds``: each call's request_id, seconds and answer."""
    answers: list[tuple[str, float, httpx.Response]] = []

    async def worker(client: httpx.AsyncClient, role: str, number: int, until: float) -> None:
        sent = 0
        while time.monotonic() < until:
            request_id = f"flood-{role}-{number}-{sent}"
            sent += 1
            started = time.monotonic()
            response = await client.post(
                "/v1/decisions", json=body(request_id=request_id), headers=served.headers(role)
            )
            answers.append((request_id, time.monotonic() - started, response))

    async def run() -> None:
        limits = httpx.Limits(max_connections=2 * workers)
        async with httpx.AsyncClient(base_url=served.base_url, limits=limits, timeout=30) as c:
            until = time.monotonic() + seconds
            await asyncio.gather(
                *(worker(c, role, n, until) for n in range(workers) for role in ("decide", "admin"))
            )

    asyncio.run(run())
    return answers


def _refused_counts(served: Served) -> dict[tuple[str, str], float]:
    """``riskmodel_refused_total`` on the server's ``/metrics``, by (status, reason)."""
    text = httpx.get(f"{served.base_url}/metrics", timeout=10).text
    return {
        (sample.labels["status"], sample.labels["reason"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "riskmodel_refused"
        for sample in family.samples
        if sample.name == "riskmodel_refused_total"
    }


def test_a_flooded_server_answers_the_excess_fast_and_decides_the_rest(flooded: Served) -> None:
    before = _refused_counts(flooded)
    answers = _flood(flooded, seconds=1.0, workers=12)

    statuses = [response.status_code for _, _, response in answers]
    refused = [(took, r) for _, took, r in answers if r.status_code in (429, 503)]
    decided = [took for _, took, r in answers if r.status_code == 200]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert {200, 429, 503} <= set(statuses), statuses
    for _, response in refused:
        assert response.headers["retry-after"] == "1"
        code = response.json()["error"]["code"]
        assert code == ("too_many_requests" if response.status_code == 429 else "overloaded")
    # A refusal is a few header bytes, answered without waiting for a decision's turn.
    assert statistics.median(took for took, _ in refused) < statistics.median(decided)
    assert statistics.median(took for took, _ in refused) < 0.25
    # What was refused was not decided; what was decided was stored once.
    assert flooded.decision_count("flood-") == len(decided)
    # Every refusal is counted on /metrics, by status and reason.
    after = _refused_counts(flooded)
    assert set(before) == set(after) == {("429", "too_many_requests"), ("503", "overloaded")}
    for status, reason in after:
        sent = sum(1 for _, _, r in answers if r.status_code == int(status))
        assert after[status, reason] - before[status, reason] == sent, (status, reason)


def test_the_client_waits_as_told_and_gets_every_decision_within_its_budget(
    flooded: Served,
) -> None:
    budget = 8.0

    async def decide(risk: AsyncClient, i: int) -> tuple[float, Decision]:
        started = time.monotonic()
        decision = await risk.decide(body(request_id=f"patient-{i}"))
        return time.monotonic() - started, decision

    async def run() -> list[tuple[float, Decision]]:
        async with AsyncClient(
            flooded.base_url, flooded.keys["decide"], timeout=5, budget=budget
        ) as risk:
            return await asyncio.gather(*(decide(risk, i) for i in range(30)))

    results = asyncio.run(run())

    took = [seconds for seconds, _ in results]
    assert max(took) < budget + 0.5
    assert all(not d.is_fallback for _, d in results), [d.reasons for _, d in results]
    assert max(took) >= 1.0  # some were refused, waited the second they were told, got in
    assert flooded.decision_count("patient-") == len(results)
