"""What is live lives in the store: two applications on one store (two workers or two
replicas) follow a deploy and the kill switch within two seconds; a bad deploy changes
nothing anywhere; every live policy is archived and every change audited."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from riskmodel import store
from riskmodel.cli import main
from riskmodel.store.operations import audit_trail, live_now, policy_history
from riskmodel.store.schema import policy_archive
from serving.app import create_app
from tests.test_serving_fixtures import Service, TestClient, body, load_tiny, make_settings

_REACH_SECONDS = 2.0


@pytest.fixture
def pair(database_url: str, tmp_path: Path) -> Iterator[tuple[Service, Service]]:
    """Two applications on one store and one registry: as two workers, or two replicas."""
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url)
    with ExitStack() as stack:
        one = stack.enter_context(TestClient(create_app(settings), raise_server_exceptions=False))
        two = stack.enter_context(TestClient(create_app(settings), raise_server_exceptions=False))
        # Each builds its routes alone before any test sends from threads (FastAPI builds
        # them at the first request, under warnings.catch_warnings, not thread-safe).
        for client in (one, two):
            assert client.get("/healthz").status_code == 200
        yield Service(one, settings, keys), Service(two, settings, keys)


def _within(seconds: float, check: Callable[[], bool]) -> float:
    """How long until ``check`` holds; fails after ``seconds``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds} s")
        time.sleep(0.05)
    return time.monotonic() - started


def _ready(svc: Service) -> dict[str, Any]:
    answer: dict[str, Any] = svc.client.get("/readyz").json()
    return answer


def _new_policy(svc: Service, version: str) -> None:
    path = svc.settings.policy
    path.write_text(path.read_text().replace("version: starter-3", f"version: {version}"))


def test_a_reload_on_one_worker_reaches_the_other_within_two_seconds(
    pair: tuple[Service, Service],
) -> None:
    one, two = pair
    _new_policy(one, "next-1")

    done = one.client.post("/v1/admin/reload", headers=one.headers("admin"))

    assert done.status_code == 200, done.text
    assert _ready(one)["policy_version"] == "next-1"  # the worker that answered: at once
    _within(_REACH_SECONDS, lambda: _ready(two)["policy_version"] == "next-1")
    answer = two.decide(body(request_id="after-reload")).json()
    assert answer["policy_version"] == "next-1"
    assert answer["policy_hash"] == _ready(one)["policy_hash"]


def test_a_broken_policy_is_refused_and_nothing_changes_anywhere(
    pair: tuple[Service, Service],
) -> None:
    one, two = pair
    before = _ready(two)["policy_hash"]
    one.settings.policy.write_text("version: broken\nthresholds: [\n")

    refused = one.client.post("/v1/admin/reload", headers=one.headers("admin"))

    assert refused.status_code == 422
    time.sleep(_REACH_SECONDS)
    assert _ready(one)["policy_hash"] == before
    assert _ready(two)["policy_hash"] == before
    engine = store.open_store(one.settings.database_url)
    try:
        with engine.connect() as conn:
            assert "policy" not in live_now(conn)
    finally:
        engine.dispose()


def test_the_kill_switch_reaches_every_worker_and_is_audited(
    pair: tuple[Service, Service],
) -> None:
    one, two = pair
    switched = one.client.post(
        "/v1/admin/switch",
        json={"mode": "review", "reason": "a fraud wave"},
        headers=one.headers("admin"),
    )
    assert switched.status_code == 200, switched.text
    _within(_REACH_SECONDS, lambda: _ready(two)["switch"] == "review")

    held = two.decide(body(request_id="switched-1")).json()
    assert held["decision"] == "review"
    assert "KILL_SWITCH" in {r["code"] for r in held["reasons"]}
    assert 'riskmodel_kill_switch{mode="review"} 1.0' in two.client.get("/metrics").text

    one.client.post(
        "/v1/admin/switch",
        json={"mode": "rules", "reason": "model under suspicion"},
        headers=one.headers("admin"),
    )
    _within(_REACH_SECONDS, lambda: _ready(two)["switch"] == "rules")
    ruled = two.decide(body(request_id="switched-2")).json()
    codes = {r["code"] for r in ruled["reasons"]}
    assert "RULES_ONLY" in codes
    assert "DEGRADED" not in codes
    assert ruled["score"] is None

    one.client.post(
        "/v1/admin/switch",
        json={"mode": "off", "reason": "wave over"},
        headers=one.headers("admin"),
    )
    _within(_REACH_SECONDS, lambda: _ready(two)["switch"] == "off")
    assert two.decide(body(request_id="switched-3")).json()["score"] is not None

    engine = store.open_store(one.settings.database_url)
    try:
        with engine.connect() as conn:
            trail = audit_trail(conn)
    finally:
        engine.dispose()
    assert [(line.action, line.value, line.who, line.reason) for line in reversed(trail)] == [
        ("switch set", "review", "admin-caller", "a fraud wave"),
        ("switch set", "rules", "admin-caller", "model under suspicion"),
        ("switch set", "off", "admin-caller", "wave over"),
    ]


def test_only_admins_switch(pair: tuple[Service, Service]) -> None:
    one, _ = pair
    for role in ("decide", "review", "ingest"):
        refused = one.client.post(
            "/v1/admin/switch", json={"mode": "review", "reason": "x"}, headers=one.headers(role)
        )
        assert refused.status_code == 403


def test_deploy_from_the_command_line_archives_every_policy(
    pair: tuple[Service, Service], capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = pair
    url = one.settings.database_url or ""
    policy = one.settings.policy
    for version in ("cli-1", "cli-2"):
        policy.write_text(policy.read_text().replace("version: starter-3", f"version: {version}"))
        assert main(["deploy", "policy", str(policy), "--database-url", url, "--by", "ops"]) == 0
        policy.write_text(policy.read_text().replace(f"version: {version}", "version: starter-3"))
    _within(_REACH_SECONDS, lambda: _ready(two)["policy_version"] == "cli-2")

    capsys.readouterr()
    assert main(["policy", "history", "--database-url", url]) == 0
    listed = capsys.readouterr().out.splitlines()
    # The file the workers started with, then the two deploys.
    assert [line.split()[2:] for line in listed] == [["starter-3"], ["cli-1"], ["cli-2", "(live)"]]
    assert main(["live", "--database-url", url]) == 0
    assert "policy set" in capsys.readouterr().out


def test_a_tampered_archive_is_refused_and_the_worker_keeps_the_last_good(
    pair: tuple[Service, Service],
) -> None:
    one, _ = pair
    _new_policy(one, "good-1")
    assert one.client.post("/v1/admin/reload", headers=one.headers("admin")).status_code == 200
    engine = store.open_store(one.settings.database_url)
    try:
        with engine.begin() as conn:
            live = next(p for p in policy_history(conn) if p.version == "good-1")
            # Its text changed behind the service's back: the hash no longer matches.
            document = {"text": live.text.replace("review: 0.", "review: 0.0"), "list_files": {}}
            conn.execute(
                update(policy_archive)
                .where(policy_archive.c.sha256 == live.sha256)
                .values(document=json.dumps(document))
            )
    finally:
        engine.dispose()

    with TestClient(create_app(one.settings), raise_server_exceptions=False) as fresh:
        admin = {"Authorization": f"Bearer {one.keys['admin']}"}
        ready = fresh.get("/readyz", headers=admin)
        answer = fresh.post(
            "/v1/decisions", json=body(request_id="t-1"), headers=one.headers("decide")
        )

    assert ready.status_code == 503
    assert any("does not match its hash" in p for p in ready.json()["problems"])
    # It kept the policy it had (its file), and says which.
    assert answer.status_code == 200
    assert answer.json()["policy_version"] == ready.json()["policy_version"] == "good-1"


def test_a_decision_replays_the_same_and_a_tampered_one_shows_its_difference(
    pair: tuple[Service, Service], capsys: pytest.CaptureFixture[str]
) -> None:
    one, _ = pair
    url = one.settings.database_url or ""
    registry = str(one.settings.registry)
    one.decide(body(request_id="replay-1"))
    one.client.post(
        "/v1/admin/switch", json={"mode": "review", "reason": "drill"}, headers=one.headers("admin")
    )
    held = one.decide(body(request_id="replay-2", order_id="o3", amount="5.00")).json()
    assert "KILL_SWITCH" in {r["code"] for r in held["reasons"]}

    for request_id in ("replay-1", "replay-2"):
        code = main(["replay", request_id, "--database-url", url, "--registry", registry])
        assert code == 0, capsys.readouterr().out
    assert "the same decision" in capsys.readouterr().out

    engine = store.open_store(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                update(store.decisions)
                .where(store.decisions.c.request_id == "replay-1")
                .values(approved_amount=999_999, decision="approve")
            )
    finally:
        engine.dispose()
    assert main(["replay", "replay-1", "--database-url", url, "--registry", registry]) == 1
    shown = capsys.readouterr().out
    assert "approved amount: stored 9999.99" in shown


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.postgres
def test_two_replicas_in_their_own_processes_follow_one_deploy(
    postgres_url: str, tmp_path: Path
) -> None:
    """Two ``riskmodel serve`` processes, two workers each, on one PostgreSQL store: a
    deploy from the command line reaches every worker of both within two seconds."""
    engine = store.open_store(postgres_url, create=False)
    store.drop_everything(engine)
    engine.dispose()
    load_tiny(postgres_url)
    settings, _ = make_settings(tmp_path, postgres_url)
    ports = [_free_port(), _free_port()]

    def serve(port: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "riskmodel.cli", "serve", "--port", str(port),
                   "--workers", "2", "--database-url", postgres_url,
                   "--registry", str(settings.registry), "--policy", str(settings.policy),
                   "--api-keys", str(settings.api_keys), "--log-level", "warning"]  # fmt: skip
        return subprocess.Popen(command)

    replicas = [serve(port) for port in ports]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]

        def versions() -> set[str]:
            found = set()
            for url in urls:
                for _ in range(8):  # new connections: the kernel spreads them over workers
                    try:
                        found.add(httpx.get(f"{url}/readyz", timeout=5).json()["policy_version"])
                    except httpx.HTTPError:
                        found.add("not answering")
            return found

        _within(60, lambda: versions() == {"starter-3"})
        policy = settings.policy
        policy.write_text(policy.read_text().replace("version: starter-3", "version: replica-1"))
        assert main(["deploy", "policy", str(policy), "--database-url", postgres_url]) == 0

        _within(_REACH_SECONDS, lambda: versions() == {"replica-1"})
    finally:
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            replica.wait(timeout=30)


def test_deploys_and_the_switch_under_load_answer_no_error(
    pair: tuple[Service, Service],
) -> None:
    """Decisions keep coming on both workers while the policy is deployed twice and the
    switch goes on and off: every call is answered 200, none degraded."""
    one, two = pair
    stop = threading.Event()
    statuses: list[int] = []
    degraded: list[str] = []

    def traffic(svc: Service, name: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            answer = svc.decide(body(request_id=f"{name}-{n}", amount="1.00"))
            statuses.append(answer.status_code)
            if answer.status_code == 200 and "DEGRADED" in {
                r["code"] for r in answer.json()["reasons"]
            }:
                degraded.append(f"{name}-{n}")

    senders = [
        threading.Thread(target=traffic, args=(svc, f"load-{i}"))
        for i, svc in enumerate((one, two, one, two))
    ]
    for sender in senders:
        sender.start()
    try:
        admin = one.headers("admin")
        for i in range(2):
            _new_policy(one, f"load-{i}")
            assert one.client.post("/v1/admin/reload", headers=admin).status_code == 200
            for mode in ("review", "off"):
                switched = one.client.post(
                    "/v1/admin/switch", json={"mode": mode, "reason": "drill"}, headers=admin
                )
                assert switched.status_code == 200
            one.settings.policy.write_text(
                one.settings.policy.read_text().replace(f"version: load-{i}", "version: starter-3")
            )
        _within(_REACH_SECONDS, lambda: _ready(two)["policy_version"] == "load-1")
        during = len(statuses)
        # On a slow machine the drill can end within a few decisions: keep deciding.
        _within(30, lambda: len(statuses) > 20)
    finally:
        stop.set()
        for sender in senders:
            sender.join()

    assert during >= len(senders)
    assert set(statuses) == {200}
    assert degraded == []


def test_key_changes_are_in_the_audit_trail_when_a_store_is_named(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = str(tmp_path / "api_keys.json")
    named = ["--api-keys", keys, "--database-url", database_url, "--by", "sec-ops"]

    assert main(["keys", "create", "--caller", "pipeline", "--role", "decide", *named]) == 0
    assert main(["keys", "revoke", "--caller", "pipeline", *named, "--reason", "rotated"]) == 0
    # Without a store named, the key changes and nothing is written anywhere else.
    assert (
        main(["keys", "create", "--caller", "other", "--role", "review", "--api-keys", keys]) == 0
    )
    capsys.readouterr()

    engine = store.open_store(database_url)
    try:
        with engine.connect() as conn:
            trail = [(line.action, line.value, line.who, line.reason) for line in audit_trail(conn)]
    finally:
        engine.dispose()
    assert trail == [
        ("key revoked", "pipeline", "sec-ops", "rotated"),
        ("key created", "pipeline (decide)", "sec-ops", None),
    ]
