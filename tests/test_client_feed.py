"""The outcome feed as the refund pipeline reads it with its client: ``Client.follow`` and
``AsyncClient.outcomes`` against a real ``riskmodel serve`` that is killed (SIGKILL) while
decisions and verdicts are being made and started again on the same store, each consumer
ending with every outcome once, in sequence, as the store holds them; a webhook receiver
beside them checking each delivery with the client's ``verify_webhook``; and that check
agreeing with the service's own signing (``serving.webhooks``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

import httpx
import pytest
from riskmodel_client import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    AsyncClient,
    Client,
    Outcome,
    ServiceUnavailable,
    UnreadableAnswer,
    parse_outcome,
    sign_webhook,
    verify_webhook,
)
from sqlalchemy import select

from riskmodel import store
from serving import webhooks
from serving.verdicts import render_outcome
from tests.served import Served, prepared
from tests.test_serving_fixtures import body

SECRET = "whsec_test"
BODY = json.dumps({"seq": 7, "event_id": "r7:2"}, separators=(",", ":")).encode()


# -- a receiver's check of a delivery -----------------------------------------------------------


def test_the_clients_signature_check_agrees_with_the_service_both_ways() -> None:
    now = int(time.time())
    service_header = webhooks.sign(SECRET, BODY, now)
    client_header = sign_webhook(SECRET, BODY, now)

    assert client_header == service_header
    assert verify_webhook(SECRET, BODY, service_header)
    assert webhooks.verify(SECRET, BODY, client_header)
    assert verify_webhook(SECRET.encode(), BODY, service_header)  # the secret as bytes
    assert client_header.startswith(f"t={now},v1=")
    assert SIGNATURE_HEADER == webhooks.SIGNATURE_HEADER
    assert EVENT_HEADER == webhooks.EVENT_HEADER


@pytest.mark.parametrize(
    ("case", "secret", "sent", "header"),
    [
        ("forged body", SECRET, BODY.replace(b"r7:2", b"r7:3"), lambda at: f"t={at}"),
        ("one byte more", SECRET, BODY + b"\n", lambda at: f"t={at}"),
        ("another secret", "whsec_other", BODY, lambda at: f"t={at}"),
        ("stale", SECRET, BODY, lambda at: f"t={at - 301}"),
        ("from the future", SECRET, BODY, lambda at: f"t={at + 301}"),
        ("no time", SECRET, BODY, lambda at: ""),
        ("a time that is not a number", SECRET, BODY, lambda at: "t=soon"),
        ("an enormous time", SECRET, BODY, lambda at: "t=" + "9" * 5000),
    ],
)
def test_a_forged_stale_or_malformed_delivery_is_refused_by_both(
    case: str, secret: str, sent: bytes, header: Callable[[int], str]
) -> None:
    at = int(time.time())
    good = webhooks.sign(SECRET, BODY, at)
    mac = good.split("v1=", 1)[1]
    stamp = header(at)
    if case in ("stale", "from the future"):
        mac = webhooks.sign(SECRET, BODY, int(stamp[2:])).split("v1=", 1)[1]
    signed = f"{stamp},v1={mac}" if stamp else f"v1={mac}"

    assert not verify_webhook(secret, sent, signed), case
    if case != "an enormous time":  # the service's check is not for hostile headers
        assert not webhooks.verify(secret, sent, signed), case


def test_the_tolerance_and_other_header_shapes() -> None:
    at = int(time.time()) - 200
    header = webhooks.sign(SECRET, BODY, at)
    mac = header.split("v1=", 1)[1]

    assert verify_webhook(SECRET, BODY, header)
    assert not verify_webhook(SECRET, BODY, header, tolerance_seconds=100)
    assert verify_webhook(SECRET, BODY, header, now=at + 5, tolerance_seconds=10)
    assert verify_webhook(SECRET, BODY, f" v1={mac.upper()} , t={at} ")  # order, case, spaces
    assert verify_webhook(SECRET, BODY, f"t={at},v1={'0' * 64},v1={mac}")  # two secrets' macs
    assert not verify_webhook(SECRET, BODY, f"t={at},v1={mac},t={at}")  # two times
    assert not verify_webhook(SECRET, BODY, f"t={at}")  # no mac
    assert not verify_webhook(SECRET, BODY, f"t={at},v1=é{mac[1:]}")
    assert not verify_webhook(SECRET, BODY, "")


def test_a_delivery_body_is_read_as_a_typed_outcome() -> None:
    row = {
        "seq": 12, "event_id": "r9:2", "request_id": "r9", "version": 2, "kind": "verdict",
        "decision": "approve", "approved_amount": 1234, "is_abuse": 0, "note": "partly used",
        "decided_by": "review-caller", "decided_at": 1_780_000_000_000_000,
        "due_at": 1_779_990_000_000_000, "late": 1,
    }  # fmt: skip
    sent = json.dumps(render_outcome(row), separators=(",", ":")).encode()

    outcome = parse_outcome(sent)

    assert outcome == parse_outcome(sent.decode())
    assert (outcome.seq, outcome.event_id, outcome.kind, outcome.decision) == (
        12, "r9:2", "verdict", "approve")  # fmt: skip
    assert outcome.approved_amount == Decimal("12.34")
    assert (outcome.is_abuse, outcome.late, outcome.note) == (False, True, "partly used")
    assert outcome.decided_at == datetime.fromtimestamp(1_780_000_000, UTC)
    assert outcome.due_at == datetime.fromtimestamp(1_779_990_000, UTC)
    for broken in (b"not json", b"[1, 2]", b'{"seq": 1}', sent.replace(b'"verdict"', b'"x"')):
        with pytest.raises(UnreadableAnswer):
            parse_outcome(broken)


# -- the feed through a restart of the service ------------------------------------------------


@dataclass
class Consumer:
    """What one consumer saw, and its position."""

    name: str
    seen: list[Outcome] = field(default_factory=list)
    failures: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, read: Callable[[], None]) -> threading.Thread:
        def target() -> None:
            try:
                read()
            except BaseException as exc:  # reported by the test, not lost in a thread
                self.error = exc
            finally:
                self.done.set()

        thread = threading.Thread(target=target, name=self.name, daemon=True)
        thread.start()
        return thread


@dataclass
class Hooked:
    """A webhook receiver: every delivery, checked with the client's ``verify_webhook``."""

    secret: str = ""
    deliveries: list[tuple[bool, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def unchecked(self) -> list[bytes]:
        with self.lock:
            return [sent for ok, _, sent in self.deliveries if not ok]

    def outcomes(self) -> list[Outcome]:
        """The outcomes delivered, a repeat (at least once) counted once."""
        firsts: dict[str, Outcome] = {}
        with self.lock:
            for _, _, sent in self.deliveries:
                outcome = parse_outcome(sent)
                firsts.setdefault(outcome.event_id, outcome)
        return list(firsts.values())

    def running(self) -> tuple[ThreadingHTTPServer, str]:
        hooked = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sent = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_webhook(hooked.secret, sent, self.headers[SIGNATURE_HEADER])
                with hooked.lock:
                    hooked.deliveries.append((ok, self.headers[EVENT_HEADER], sent))
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/hook"


LAST = "feed-last"
"""The request decided last: a consumer that has seen its outcome has seen them all."""


class Producer:
    """Decisions (new orders: approved) and reviews settled by verdicts, one at a time."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.numbers = count()
        self.decided: list[str] = []
        self.verdicts: list[str] = []
        self.risk = Client(served.base_url, served.keys["decide"], timeout=5, budget=20)
        self.ingest = Client(served.base_url, served.keys["ingest"], timeout=5, budget=20)
        self.http = httpx.Client(base_url=served.base_url, timeout=10)

    def close(self) -> None:
        for client in (self.risk, self.ingest, self.http):
            client.close()

    def approval(self, request_id: str | None = None) -> None:
        """A new buyer's first refund of a new order: decided approve at once."""
        n = next(self.numbers)
        user, order = f"feed-u{n}", f"feed-o{n}"
        self.ingest.send_events("users", [{"user_id": user,
                                           "registered_at": "2025-06-01T00:00:00Z"}])  # fmt: skip
        self.ingest.send_events("orders", [{
            "order_id": order, "user_id": user, "product_type": "card_code", "amount": "12.00",
            "paid_at": "2026-01-08T13:00:00Z", "payment_method": "alipay",
            "payment_account": f"feed-pa{n}", "device_id": f"feed-d{n}", "ip": f"10.9.0.{n}",
        }])  # fmt: skip
        rid = request_id or f"feed-a{n}"
        decision = self.risk.decide(
            body(request_id=rid, order_id=order, user_id=user, amount="12.00",
                 reason="not_delivered", device_id=f"feed-d{n}", ip=f"10.9.0.{n}")
        )  # fmt: skip
        assert decision.stored, decision
        assert decision.decision == "approve", decision
        self.decided.append(rid)

    def verdict(self) -> None:
        """Another refund of the tiny history's order o4 (a repeat: reviewed), settled."""
        n = next(self.numbers)
        rid = f"feed-r{n}"
        decision = self.risk.decide(body(request_id=rid))
        assert decision.stored, decision
        assert decision.decision == "review", decision
        verdict = (
            {"decision": "approve", "approved_amount": "12.34", "is_abuse": False, "note": "ok"}
            if n % 2
            else {"decision": "refuse", "approved_amount": None, "is_abuse": True, "note": None}
        )
        answer = self.http.post(
            f"/v1/reviews/{rid}", json=verdict, headers=self.served.headers("review")
        )
        assert answer.status_code == 200, answer.text
        self.verdicts.append(rid)

    def some(self, rounds: int) -> None:
        for _ in range(rounds):
            self.approval()
            self.verdict()


def _stored_outcomes(served: Served) -> list[dict[str, Any]]:
    engine = store.open_store(served.database_url, create=False)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(store.outcomes).order_by(store.outcomes.c.seq))
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def _key(outcome: Outcome) -> tuple[Any, ...]:
    return (outcome.seq, outcome.event_id, outcome.request_id, outcome.version, outcome.kind,
            outcome.decision, int(outcome.approved_amount * 100))  # fmt: skip


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["seq"], row["event_id"], row["request_id"], row["version"], row["kind"],
            row["decision"], row["approved_amount"])  # fmt: skip


@pytest.fixture
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    found = prepared(tmp_path_factory.mktemp("feed"))
    try:
        yield found
    finally:
        found.stop()


def test_every_outcome_once_in_order_across_a_killed_service(served: Served) -> None:
    served.start()
    started = time.monotonic()
    producer = Producer(served)
    # The tiny history's own first refund of o4: approved; its repeats are reviewed.
    assert producer.risk.decide(body(request_id="feed-first")).decision == "approve"

    follower = Consumer("follow")

    def follow() -> None:
        with Client(served.base_url, served.keys["decide"], timeout=2, budget=3,
                    max_backoff=0.5) as risk:  # fmt: skip
            for outcome in risk.follow(after=0, limit=4, wait=1):
                follower.seen.append(outcome)
                if outcome.request_id == LAST:
                    return

    poller = Consumer("async outcomes")

    async def poll() -> None:
        after = 0
        # A budget shorter than the service's absence (below), so the consumer's own loop,
        # not only the client's retries, meets the dead service.
        async with AsyncClient(served.base_url, served.keys["review"], timeout=2, budget=0.5,
                               max_backoff=0.2) as risk:  # fmt: skip
            while True:
                try:
                    page = await risk.outcomes(after=after, limit=3, wait=1)
                except ServiceUnavailable:
                    poller.failures += 1
                    await asyncio.sleep(0.2)
                    continue
                assert page.last == (page.outcomes[-1].seq if page.outcomes else after)
                poller.seen.extend(page.outcomes)
                after = page.last
                if any(o.request_id == LAST for o in page.outcomes):
                    return

    hooked = Hooked()
    receiver, url = hooked.running()
    registered = producer.http.post(
        "/v1/webhooks", json={"url": url, "after": 0}, headers=served.headers("admin")
    )
    assert registered.status_code == 201, registered.text
    hooked.secret = registered.json()["secret"]
    threads = [follower.run(follow), poller.run(lambda: asyncio.run(poll()))]
    try:
        producer.some(3)
        assert _until(lambda: len(follower.seen) >= 2 and len(poller.seen) >= 2)
        producer.some(2)  # the last verdict's answer has come: it is committed ...
        served.kill()  # ... and, most likely, not yet sequenced nor read by either
        at_kill = (len(follower.seen), len(poller.seen), len(_stored_outcomes(served)))
        time.sleep(0.5)  # both consumers find the service gone, and keep asking
        served.start()
        producer.some(3)
        producer.approval(LAST)
        for thread in threads:
            thread.join(timeout=20)
    finally:
        producer.close()

    for consumer in (follower, poller):
        assert consumer.error is None, (consumer.name, consumer.error)
        assert consumer.done.is_set(), consumer.name
    stored = _stored_outcomes(served)
    # Every final outcome: each automatic approval and each verdict, and nothing else.
    assert len(stored) == len(producer.decided) + len(producer.verdicts) + 1
    assert {r["request_id"] for r in stored} == {"feed-first", *producer.decided,
                                                 *producer.verdicts}  # fmt: skip
    assert [r["seq"] for r in stored] == list(range(1, len(stored) + 1))  # numbered, no gap
    for consumer in (follower, poller):
        assert [_key(o) for o in consumer.seen] == [_row_key(r) for r in stored], consumer.name
    assert poller.failures >= 1  # the async consumer did meet the dead service
    # The webhook receiver: each delivery signed (checked by the client's verify_webhook),
    # the outcomes in order with none skipped, a repeat allowed (at least once). Only a
    # beginning of the feed is sure to have come: a worker killed during a delivery turn
    # leaves the receiver taken (serving.webhooks' lease, a minute) after the restart.
    _until(lambda: any(o.request_id == LAST for o in hooked.outcomes()), 3)
    receiver.shutdown()
    receiver.server_close()
    assert hooked.deliveries
    assert hooked.unchecked == []
    delivered = [_key(o) for o in hooked.outcomes()]
    assert delivered == [_row_key(r) for r in stored][: len(delivered)]
    print(f"\nat the kill: follow had {at_kill[0]}, async {at_kill[1]}, the store {at_kill[2]}; "
          f"{len(stored)} outcomes, {len(hooked.deliveries)} deliveries of {len(delivered)}, "
          f"{time.monotonic() - started:.1f} s")  # fmt: skip


def _until(check: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
