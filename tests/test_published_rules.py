"""The published refund rules (``/rules``, ``/rules.json``): what a buyer sees, and what
never leaves the service (thresholds, lists, internal and disabled rules).

The page is checked twice: with the test client (escaping, 503, the JSON, refused policy
files) and in a real headless Chromium at a phone's size, which is what a buyer opens.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By

from riskmodel import store
from riskmodel.policy import STARTER_POLICY, PolicyError
from serving.app import create_app
from serving.live import deploy_policy
from serving.runtime import load_policy_file
from tests.test_serving_fixtures import Service, load_tiny, make_settings, running

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

PUBLISHED = [
    "RULE_DUPLICATE_REFUND",
    "RULE_REPEAT_REFUND",
    "RULE_EARLIER_REQUEST_OPEN",
    "RULE_REDEEMED_THEN_INVALID",
    "RULE_REDEEMED_NOT_CREDITED",
    "RULE_CREDITED_THEN_NOT_DELIVERED",
    "RULE_CREDITED_AFTER_LATE_DELIVERY",
    "RULE_PRORATED_OVERCLAIM",
    "RULE_REFUND_VELOCITY",
]
# Never on the page: an internal rule (no public text), a disabled one, score thresholds.
PRIVATE = [
    "RULE_YOUNG_LINKED_TO_ABUSE",
    "shares a device, a payment account or an IP",
    "RULE_SMALL_FIRST_REFUND",
    "0.30",
    "0.20",
    "0.15",
    "0.50",
    "payout",  # a reviewer's message, not the buyer's text
]


def _url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    load_tiny(url)
    return url


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Service]:
    settings, keys = make_settings(tmp_path, _url(tmp_path))
    with running(settings, keys) as svc:
        yield svc


def _starter_texts() -> dict[str, str]:
    policy = load_policy_file(STARTER_POLICY)
    return {rule.code: rule.public for rule in policy.spec.rules if rule.public is not None}


def test_the_json_lists_the_enabled_public_rules_and_nothing_else(api: Service) -> None:
    answer = api.client.get("/rules.json")  # no key: the rules are public

    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"title", "introduction", "policy_version", "last_changed", "rules"}
    assert body["title"] == "Refund rules"
    assert body["introduction"].startswith("Most refund requests")
    assert body["policy_version"] == "starter-3"
    assert body["last_changed"] is None  # started from its file: nothing was deployed
    texts = _starter_texts()
    assert [rule["code"] for rule in body["rules"]] == PUBLISHED
    assert all(rule["text"] == texts[rule["code"]] for rule in body["rules"])
    assert {rule["action"] for rule in body["rules"]} == {"block", "review"}
    assert not any(secret in answer.text for secret in PRIVATE)


def test_the_page_shows_each_published_text_and_no_private_one(api: Service) -> None:
    page = api.client.get("/rules")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<meta name="viewport"' in page.text
    assert "<script" not in page.text
    shown = " ".join(page.text.split())
    for text in _starter_texts().values():
        assert text.replace('"', "&#34;") in shown
    assert not any(secret in page.text for secret in PRIVATE)
    assert "Policy version starter-3." in shown
    assert "Last changed" not in shown


def test_the_page_shows_a_text_as_text_even_one_past_validation(api: Service) -> None:
    runtime = api.client.app.state.runtime  # type: ignore[attr-defined]
    spec = runtime.policy.spec
    hostile = '<script>alert("x")</script> & more'
    # Validation refuses markup; this proves the template escapes even what got past it.
    rules = [spec.rules[0].model_copy(update={"public": hostile}), *spec.rules[1:]]
    changed = spec.model_copy(update={"rules": rules})
    runtime.policy = dataclasses.replace(runtime.policy, spec=changed)

    page = api.client.get("/rules")

    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in page.text
    assert api.client.get("/rules.json").json()["rules"][0]["text"] == hostile


def test_without_a_policy_the_rules_are_unavailable(tmp_path: Path) -> None:
    settings, keys = make_settings(tmp_path, _url(tmp_path))
    settings.policy.write_text("version: broken\nthresholds: [\n", encoding="utf-8")
    with running(settings, keys) as svc:
        page = svc.client.get("/rules")
        data = svc.client.get("/rules.json")

    assert page.status_code == 503
    assert page.headers["content-type"].startswith("text/html")
    assert "The refund rules are unavailable" in page.text
    assert data.status_code == 503
    assert data.json()["error"]["code"] == "unavailable"


def test_a_disabled_rule_stays_private_and_a_deploy_dates_the_page(tmp_path: Path) -> None:
    url = _url(tmp_path)
    settings, keys = make_settings(tmp_path, url)
    _edit(
        settings.policy,
        "    enabled: false          # an example of an approve rule; off until tuned\n",
        "    enabled: false\n    public: A small first refund is approved at once.\n",
    )
    _edit(settings.policy, "version: starter-3", "version: published-1")
    engine = store.open_store(url)
    try:
        deploy_policy(engine, load_policy_file(settings.policy), who="test", reason=None)
    finally:
        engine.dispose()
    with running(settings, keys) as svc:
        body = svc.client.get("/rules.json").json()
        page = svc.client.get("/rules").text

    assert body["policy_version"] == "published-1"
    assert "RULE_SMALL_FIRST_REFUND" not in [rule["code"] for rule in body["rules"]]
    assert "small first refund" not in page
    assert body["last_changed"] is not None
    assert re.search(r"Last changed \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", page)


@pytest.mark.parametrize(
    ("old", "new", "place", "problem"),
    [
        (
            "  title: Refund rules\n",
            "  title: Refund rules\n  subtitle: For buyers\n",
            "public, subtitle",
            "unknown key 'subtitle'",
        ),
        ("  title: Refund rules\n", "  title: <b>Refund rules</b>\n", "public, title", "no HTML"),
        (
            "      Many refund requests in a short time are usually checked by a person.\n",
            "      Many requests are <em>checked</em>.\n",
            "rule 'refund_velocity', public",
            "no HTML",
        ),
    ],
)
def test_a_bad_public_section_is_refused_with_its_place(
    tmp_path: Path, old: str, new: str, place: str, problem: str
) -> None:
    path = tmp_path / "policy.yaml"
    shutil.copy(STARTER_POLICY, path)
    _edit(path, old, new)

    with pytest.raises(PolicyError) as refused:
        load_policy_file(path)

    [found] = refused.value.problems
    assert found.line is not None
    assert place in found.where
    assert problem in found.message


# --- in a real browser -----------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The application behind uvicorn on a free local port, as a buyer's browser meets it."""
    settings, _ = make_settings(tmp_path, _url(tmp_path))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    # Bound here, so the port is known before the server starts and nobody can take it.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before it started"
            assert time.monotonic() < deadline, "uvicorn did not start within a minute"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _browser() -> webdriver.Chrome:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        reason = f"no {' and '.join(missing)} (Debian's chromium and chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    # Debian's browser and driver: selenium must not look for (or download) its own.
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    return webdriver.Chrome(
        service=DriverService(executable_path=str(CHROMEDRIVER)), options=options
    )


def test_a_buyer_reads_the_rules_on_a_phone(served: str) -> None:
    driver = _browser()
    try:
        driver.set_window_size(390, 844)
        driver.get(f"{served}/rules")
        seen = " ".join(driver.find_element(By.TAG_NAME, "body").text.split())
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        width = driver.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth]"
        )
        scripts = driver.execute_script("return document.scripts.length")
        title = driver.title
    finally:
        driver.quit()

    assert title == "Refund rules"
    assert seen.startswith("Refund rules Most refund requests")
    for text in _starter_texts().values():
        assert text in seen
    assert not any(secret in seen for secret in PRIVATE)
    assert "Policy version starter-3." in seen
    assert all(url.startswith(f"{served}/") for url in resources), resources
    assert scripts == 0
    inner, scrolled = width
    assert inner <= 390  # the window really is a phone's width, not clamped wider
    assert scrolled <= 390
