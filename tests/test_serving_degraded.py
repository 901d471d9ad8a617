"""Degraded modes: the store lost and found again, the model missing or corrupt, a policy
refused on reload. Never an approval without what a decision needs."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from riskmodel import store
from riskmodel.registry import Registry
from tests.test_serving_fixtures import (
    Service,
    body,
    load_tiny,
    make_settings,
    running,
    sample_bundle,
    service,
)

__all__ = ["service"]


def _codes(answer: dict[str, Any]) -> list[str]:
    return [r["code"] for r in answer["reasons"]]


def test_without_a_store_at_start_it_reviews_and_recovers_when_the_store_appears(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the store's folder should be")
    url = f"sqlite:///{blocker / 'store.db'}"
    settings, keys = make_settings(tmp_path, url, store_retry_seconds=0.0)
    with running(settings, keys) as svc:
        answer = svc.decide(body()).json()
        ready = svc.client.get("/readyz")
        lookup = svc.client.get("/v1/decisions/api-1", headers=svc.headers("decide"))
        events = svc.client.post(
            "/v1/events/users",
            json={"rows": [{"user_id": "u9", "registered_at": "2026-01-01T00:00:00Z"}]},
            headers=svc.headers("ingest"),
        )
        health = svc.client.get("/healthz")

        assert answer["decision"] == "review"
        assert answer["stored"] is False
        assert answer["approved_amount"] == "0.00"
        assert _codes(answer) == ["DEGRADED"]
        assert "database unreachable" in answer["reasons"][0]["message"]
        assert ready.status_code == 503
        assert any("database unreachable" in p for p in ready.json()["problems"])
        assert lookup.status_code == 503
        assert events.status_code == 503
        assert health.status_code == 200

        # The database comes back: a loaded store where the service looks for it.
        load_tiny(f"sqlite:///{tmp_path / 'ready.db'}")
        blocker.unlink()
        blocker.mkdir()
        os.replace(tmp_path / "ready.db", blocker / "store.db")

        assert svc.client.get("/readyz").status_code == 200
        again = svc.decide(body()).json()
        assert again["stored"] is True
        assert "DEGRADED" not in _codes(again)


def test_a_store_that_fails_under_a_decisions_read_is_answered_as_the_stores_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The decision's reads run on the driver's own cursor: its error must still read as
    # the store's (degraded, the store marked lost), not as a bug of the service.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    load_tiny(url)
    settings, keys = make_settings(tmp_path, url, store_retry_seconds=60.0)
    with running(settings, keys) as svc:
        assert svc.decide(body(request_id="before")).json()["stored"] is True
        with sqlite3.connect(tmp_path / "store.db") as other:
            other.execute("DROP TABLE rates")
        answer = svc.decide(body(request_id="after")).json()
        ready = svc.client.get("/readyz")

    assert answer["decision"] == "review"
    assert answer["stored"] is False
    assert _codes(answer) == ["DEGRADED"]
    assert "no such table: rates" in answer["reasons"][0]["message"]
    assert "internal error" not in answer["reasons"][0]["message"]
    assert ready.status_code == 503
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]


class _Proxy:
    """A TCP relay in front of PostgreSQL that can be cut and restored: a real outage."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: socket.socket | None = None
        self._links: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._links += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self._server is not None:
            # shutdown, not only close: it wakes the thread blocked in accept().
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            with contextlib.suppress(OSError):
                link.shutdown(socket.SHUT_RDWR)
            link.close()


@pytest.fixture
def proxy(postgres_url: str) -> Iterator[tuple[_Proxy, str]]:
    url = make_url(postgres_url)
    relay = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    relay.start()
    engine = store.open_store(postgres_url, create=False)
    store.drop_everything(engine)
    engine.dispose()
    yield relay, url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    relay.cut()


@pytest.mark.postgres
def test_a_lost_database_degrades_to_review_and_recovers_by_itself(
    proxy: tuple[_Proxy, str], tmp_path: Path
) -> None:
    relay, url = proxy
    load_tiny(url)
    settings, keys = make_settings(tmp_path, url, store_retry_seconds=0.0)
    with running(settings, keys) as svc:
        assert svc.decide(body(request_id="before")).json()["stored"] is True
        assert svc.client.get("/readyz").status_code == 200

        relay.cut()
        during = svc.decide(body(request_id="during"))
        ready = svc.client.get("/readyz")
        assert during.status_code == 200
        assert during.json()["decision"] == "review"
        assert during.json()["stored"] is False
        assert _codes(during.json()) == ["DEGRADED"]
        assert ready.status_code == 503
        assert "database unreachable" in " ".join(ready.json()["problems"])
        metrics = svc.client.get("/metrics").text
        assert "riskmodel_store_up 0.0" in metrics
        for method, path, role, payload in (
            ("GET", "/v1/decisions/before", "decide", None),
            ("GET", "/v1/reviews", "review", None),
            ("GET", "/v1/users/u2/history", "review", None),
            ("POST", "/v1/labels", "ingest", {"rows": [{"request_id": "before",
              "is_abuse": False, "labeled_at": "2026-02-01T00:00:00Z"}]}),
        ):  # fmt: skip
            answered = svc.client.request(method, path, json=payload, headers=svc.headers(role))
            assert answered.status_code == 503, (path, answered.text)
            assert answered.json()["error"]["code"] == "unavailable"

        relay.start()  # the same port again
        assert svc.client.get("/readyz").status_code == 200
        after = svc.decide(body(request_id="during")).json()
        assert after["stored"] is True
        assert "DEGRADED" not in _codes(after)
        assert "riskmodel_store_up 1.0" in svc.client.get("/metrics").text


def _corrupt_champion(registry: Path) -> None:
    version = Registry(registry).resolve("champion")
    path = Registry(registry).bundle_path(version)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
def test_without_a_usable_model_every_decision_is_a_stored_degraded_review(
    database_url: str, tmp_path: Path, broken: str
) -> None:
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url, champion=broken != "missing")
    if broken == "corrupt":
        _corrupt_champion(settings.registry)
    with running(settings, keys) as svc:
        answer = svc.decide(body()).json()
        ready = svc.client.get("/readyz")

    assert answer["decision"] == "review"
    assert answer["score"] is None
    assert answer["model_version"] is None
    assert answer["stored"] is True  # a real decision of the policy, made without a score
    assert "DEGRADED" in _codes(answer)
    assert ready.status_code == 503
    assert "no usable champion model" in " ".join(ready.json()["problems"])


def test_without_a_policy_nothing_is_decided_or_stored(database_url: str, tmp_path: Path) -> None:
    load_tiny(database_url)
    settings, keys = make_settings(tmp_path, database_url)
    settings = dataclasses.replace(settings, policy=tmp_path / "missing.yaml")
    with running(settings, keys) as svc:
        answer = svc.decide(body()).json()
        ready = svc.client.get("/readyz")

    assert answer["decision"] == "review"
    assert answer["stored"] is False
    assert _codes(answer) == ["DEGRADED"]
    assert ready.status_code == 503
    assert "no valid policy" in " ".join(ready.json()["problems"])


def test_an_invalid_policy_is_refused_on_reload_and_the_old_one_keeps_serving(
    service: Service,
) -> None:
    path = service.settings.policy
    good = path.read_text()
    path.write_text(
        good.replace("when: order_refund_out_all > 0\n", "when: order_refund_outz > 0\n")
    )
    refused = service.client.post("/v1/admin/reload", headers=service.headers("admin"))

    assert refused.status_code == 422
    error = refused.json()["error"]
    assert "order_refund_outz" in error["message"]
    assert any("line" in f["message"] for f in error["fields"])
    assert service.decide(body(request_id="old")).json()["policy_version"] == "starter-3"
    assert service.client.get("/readyz").status_code == 200

    path.write_text(good.replace("version: starter-3", "version: starter-4"))
    done = service.client.post(
        "/v1/admin/reload", json={"model": False}, headers=service.headers("admin")
    )
    assert done.status_code == 200, done.text
    assert done.json()["policy_version"] == "starter-4"
    assert service.decide(body(request_id="new")).json()["policy_version"] == "starter-4"


def test_a_corrupt_model_is_refused_on_reload_and_a_good_one_goes_live(
    service: Service,
) -> None:
    registry = Registry(service.settings.registry)
    newer = dataclasses.replace(sample_bundle(), version="newer-1")
    registry.register(newer)
    registry.promote("newer-1")
    _corrupt_champion(service.settings.registry)
    refused = service.client.post(
        "/v1/admin/reload", json={"policy": False}, headers=service.headers("admin")
    )
    assert refused.status_code == 422
    assert "keeps serving" in refused.json()["error"]["message"]
    assert service.decide(body(request_id="a")).json()["model_version"] == sample_bundle().version

    shutil.rmtree(service.settings.registry / "versions" / "newer-1")
    registry.rollback()
    fine = dataclasses.replace(sample_bundle(), version="newer-2")
    registry.register(fine)
    registry.promote("newer-2")
    done = service.client.post("/v1/admin/reload", headers=service.headers("admin"))
    assert done.status_code == 200, done.text
    assert service.decide(body(request_id="b")).json()["model_version"] == "newer-2"


def test_only_admins_reload(service: Service) -> None:
    for role in ("decide", "ingest", "review"):
        response = service.client.post("/v1/admin/reload", headers=service.headers(role))
        assert response.status_code == 403


def test_metrics_count_decisions_by_outcome(service: Service) -> None:
    answer = service.decide(body()).json()
    service.decide(body())
    text = service.client.get("/metrics").text

    assert (
        f'riskmodel_decisions_total{{decision="{answer["decision"]}",degraded="false",'
        'replayed="true"} 1.0'
    ) in text
    assert "riskmodel_decision_seconds_bucket" in text
    assert "riskmodel_model_loaded 1.0" in text
    assert "riskmodel_shadow_score_count 1.0" in text
