"""Webhooks: the outcome feed posted to a real receiver, signed, in order, retried until it
answers 2xx, with the failures visible and a replay on demand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from serving.webhooks import EVENT_HEADER, SIGNATURE_HEADER, sign, verify
from tests.test_serving_fixtures import Service, body, load_tiny, make_settings, running


class Receiver:
    """An HTTP server that answers 500 to its first ``failures`` posts, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.posts: list[tuple[int, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = 500 if len(receiver.posts) < receiver.failures else 200
                    receiver.posts.append((status, dict(self.headers), sent))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(b) for status, _, b in self.posts if status == 200]


@pytest.fixture
def hooked(database_url: str, tmp_path: Path) -> Iterator[Service]:
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url, webhook_backoff_seconds=0.05)
    with running(settings, keys) as svc:
        yield svc


def _settle_some(service: Service) -> None:
    service.decide(body(request_id="first", requested_at="2026-01-21T10:00:00Z"))
    answer = service.decide(body(request_id="again", requested_at="2026-01-22T10:00:00Z"))
    assert answer.json()["decision"] == "review"
    verdict = service.client.post(
        "/v1/reviews/again",
        json={"decision": "refuse", "is_abuse": True},
        headers=service.headers("review"),
    )
    assert verdict.status_code == 200, verdict.text


def _feed(service: Service) -> list[dict[str, Any]]:
    page = service.client.get("/v1/outcomes", headers=service.headers("decide")).json()
    events: list[dict[str, Any]] = page["outcomes"]
    return events


def _until(check: Any, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not delivered in time"
        time.sleep(0.05)


def test_every_outcome_reaches_a_receiver_that_fails_at_first(hooked: Service) -> None:
    receiver = Receiver(failures=2)
    registered = hooked.client.post(
        "/v1/webhooks", json={"url": receiver.url, "after": 0}, headers=hooked.headers("admin")
    )
    assert registered.status_code == 201, registered.text
    hook = registered.json()
    secret = hook["secret"]
    _settle_some(hooked)
    expected = [e["event_id"] for e in _feed(hooked)]

    _until(lambda: len(receiver.answered()) >= len(expected))

    assert [e["event_id"] for e in receiver.answered()] == expected  # once each, in order
    assert receiver.answered() == _feed(hooked)  # the feed's body, as it lists it
    first = [(status, sent) for status, _, sent in receiver.posts[:3]]
    assert [status for status, _ in first] == [500, 500, 200]
    assert len({sent for _, sent in first}) == 1  # the same outcome, tried again
    for _, headers, sent in receiver.posts:
        assert verify(secret, sent, headers[SIGNATURE_HEADER])
        assert headers[EVENT_HEADER] == json.loads(sent)["event_id"]
    _, headers, sent = receiver.posts[-1]
    forged = sent.replace(b'"refuse"', b'"approve"')
    assert forged != sent
    assert not verify(secret, forged, headers[SIGNATURE_HEADER])
    assert not verify("another secret", sent, headers[SIGNATURE_HEADER])
    stale = sign(secret, sent, int(time.time()) - 3600)
    assert not verify(secret, sent, stale)

    failed = hooked.client.get(
        f"/v1/webhooks/{hook['id']}/deliveries",
        params={"failed": True},
        headers=hooked.headers("admin"),
    ).json()["deliveries"]
    assert [d["status"] for d in failed] == [500, 500]
    listed = hooked.client.get("/v1/webhooks", headers=hooked.headers("admin")).json()
    [state] = listed["webhooks"]
    assert state["delivered_through"] == _feed(hooked)[-1]["seq"]
    assert (state["attempts"], state["last_error"], state["secret"]) == (0, None, None)

    replayed = hooked.client.post(
        f"/v1/webhooks/{hook['id']}/replay", json={"after": 0}, headers=hooked.headers("admin")
    )
    assert replayed.status_code == 200, replayed.text
    _until(lambda: len(receiver.answered()) >= 2 * len(expected))
    assert [e["event_id"] for e in receiver.answered()] == expected + expected


def test_an_unreachable_receiver_is_retried_and_says_why(hooked: Service) -> None:
    receiver = Receiver(failures=0)
    receiver.server.shutdown()
    receiver.server.server_close()  # nothing listens there any more
    hook = hooked.client.post(
        "/v1/webhooks", json={"url": receiver.url, "after": 0}, headers=hooked.headers("admin")
    ).json()
    _settle_some(hooked)

    def failing() -> bool:
        listed = hooked.client.get("/v1/webhooks", headers=hooked.headers("admin")).json()
        return bool(listed["webhooks"][0]["attempts"] >= 2)

    _until(failing)
    [state] = hooked.client.get("/v1/webhooks", headers=hooked.headers("admin")).json()["webhooks"]
    assert state["delivered_through"] == 0
    assert state["last_error"].startswith("no answer")
    stopped = hooked.client.post(f"/v1/webhooks/{hook['id']}/stop", headers=hooked.headers("admin"))
    assert stopped.json()["disabled_at"] is not None
    assert hooked.client.get("/v1/webhooks", headers=hooked.headers("review")).status_code == 403
    missing = hooked.client.post("/v1/webhooks/999/stop", headers=hooked.headers("admin"))
    assert missing.status_code == 404


def test_a_webhook_address_must_be_http(hooked: Service) -> None:
    for url in ("ftp://example.invalid/x", "http://has space/x", "not an address"):
        refused = hooked.client.post(
            "/v1/webhooks", json={"url": url}, headers=hooked.headers("admin")
        )
        assert refused.status_code == 422, url
