"""What a hostile caller sees before it has a key: the door answers 401 before reading the
body, redirects are never built from the Host header, and the open readiness check names
what is missing without the reason's text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_serving_fixtures import Service, body, load_tiny, make_settings, running


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    load_tiny(url)
    settings, keys = make_settings(tmp_path, url)
    with running(settings, keys) as found:
        yield found


@pytest.mark.parametrize(
    "content",
    [
        b"this is not JSON",
        b"[" * 200_000,  # deeply nested
        b'{"requests": [' + b"{}," * 400_000 + b"{}]}",  # larger than the body limit
    ],
    ids=["not-json", "nested", "too-large"],
)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer rk_not-a-key"}])
def test_a_caller_without_a_known_key_gets_401_whatever_the_body(
    svc: Service, content: bytes, headers: dict[str, str]
) -> None:
    response = svc.client.post(
        "/v1/decisions:batch",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 401, response.text[:200]
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_known_key_without_the_role_is_still_403(svc: Service) -> None:
    response = svc.client.post("/v1/decisions", json=body(), headers=svc.headers("ingest"))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_the_open_routes_need_no_key(svc: Service) -> None:
    assert svc.client.get("/healthz").status_code == 200
    assert svc.client.get("/readyz").status_code == 200
    assert svc.client.get("/metrics").status_code == 200
    assert svc.client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("path", ["/healthz/", "/v1/decisions/"])
def test_a_trailing_slash_is_not_redirected(svc: Service, path: str) -> None:
    response = svc.client.get(
        path,
        headers={**svc.headers("admin"), "Host": "attacker.example"},
        follow_redirects=False,
    )

    assert response.status_code in {404, 405}
    assert "location" not in response.headers


def test_readyz_names_what_is_missing_and_only_an_admin_reads_why(tmp_path: Path) -> None:
    blocker = tmp_path / "db"
    blocker.write_text("a file where the store's folder should be")
    settings, keys = make_settings(tmp_path, f"sqlite:///{blocker / 'store.db'}")
    (tmp_path / "policy.yaml").write_text("version: v1\nthresholds: [\n")
    with running(settings, keys) as svc:
        anonymous = svc.client.get("/readyz")
        decider = svc.client.get("/readyz", headers=svc.headers("decide"))
        admin = svc.client.get("/readyz", headers=svc.headers("admin"))

    assert anonymous.status_code == 503
    assert sorted(anonymous.json()["problems"]) == ["database unreachable", "no valid policy"]
    assert decider.json()["problems"] == anonymous.json()["problems"]
    detailed = " ".join(admin.json()["problems"])
    assert "File exists" in detailed
    assert "policy.yaml, line 3" in detailed
    assert str(tmp_path) not in anonymous.text
