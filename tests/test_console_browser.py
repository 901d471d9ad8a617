"""The review console in a real headless Chromium, as reviewers and support staff use it:
sign in, filter the queue, claim a case, approve an amount and see the new version and
its label; an appeal filed by support and decided by a second reviewer (the first one is
refused); markup in a buyer's id shown as text; a form without its CSRF token refused.

One server and one browser for the whole module: starting Chromium costs a second or two.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from riskmodel import store
from serving.app import create_app
from serving.console.accounts import create_account
from tests.test_console import HOSTILE, PASSWORD, seed_cases
from tests.test_published_rules import _browser
from tests.test_serving_fixtures import make_settings


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("console-browser")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    seed_cases(url)
    engine = store.open_store(url)
    try:
        for name, role in [("ana", "reviewer"), ("ben", "reviewer"), ("sam", "support")]:
            create_account(engine, name, role, PASSWORD)
    finally:
        engine.dispose()
    settings, _ = make_settings(tmp_path, url)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
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


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    driver = _browser()
    driver.set_window_size(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


def _go(driver: webdriver.Chrome, element: WebElement) -> None:
    """Click ``element`` and wait for the page it leads to (the old one gone)."""
    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def gone(_: object) -> bool:
        # A node of a page being replaced answers "stale" or, in the middle of the swap,
        # "does not belong to the document": both mean the old page is gone.
        try:
            old.is_enabled()
        except WebDriverException:
            return True
        return False

    WebDriverWait(driver, 10).until(gone)
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _text(driver: webdriver.Chrome) -> str:
    return " ".join(driver.find_element(By.TAG_NAME, "body").text.split())


def _sign_in(driver: webdriver.Chrome, served: str, name: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{served}/console/login")
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    _go(driver, driver.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def _verdict(driver: webdriver.Chrome, outcome: str, abuse: str, amount: str = "") -> None:
    driver.find_element(By.CSS_SELECTOR, f"input[name=outcome][value={outcome}]").click()
    driver.find_element(By.CSS_SELECTOR, f"input[name=abuse][value={abuse}]").click()
    if amount:
        field = driver.find_element(By.ID, "amount")
        field.clear()
        field.send_keys(amount)
    _go(driver, driver.find_element(By.XPATH, "//button[text()='Record the verdict']"))


def test_a_reviewer_filters_claims_and_approves_an_amount(
    served: str, browser: webdriver.Chrome
) -> None:
    _sign_in(browser, served, "ana")
    assert browser.current_url == f"{served}/console/queue"
    assert "ana (reviewer)" in _text(browser)

    Select(browser.find_element(By.ID, "f-queue")).select_by_value("ordinary")
    _go(browser, browser.find_element(By.XPATH, "//button[text()='Filter']"))
    assert browser.current_url.startswith(f"{served}/console/queue?queue=ordinary&")
    seen = _text(browser)
    assert "r1" in seen
    assert "r4" in seen
    assert " r2 " not in f" {seen} "

    _go(browser, browser.find_element(By.LINK_TEXT, "r1"))
    _go(browser, browser.find_element(By.XPATH, "//button[text()='Claim this case']"))
    assert "You hold this case." in _text(browser)
    page = _text(browser)
    assert "Days used, seen 3 (the buyer claims 2)" in page
    assert "for an unknown user: 3.0, which raised the risk (+0.21)" in page

    _verdict(browser, "amount", "no", "10.00")
    page = _text(browser)
    assert "Your verdict is recorded" in page
    assert "2 verdict approve 10.00 no ana" in page  # the new version
    assert "not abuse (review, ana)" in page  # the label
    assert "Record the verdict" not in page


def test_an_appeal_is_decided_by_a_second_reviewer(served: str, browser: webdriver.Chrome) -> None:
    _sign_in(browser, served, "ana")
    browser.get(f"{served}/console/cases/r2")
    _verdict(browser, "refuse", "yes")
    assert "2 verdict refuse 0.00 yes ana" in _text(browser)

    _sign_in(browser, served, "sam")
    assert browser.current_url == f"{served}/console/search"
    browser.find_element(By.ID, "q").send_keys("r2")
    _go(browser, browser.find_element(By.XPATH, "//button[text()='Search']"))
    _go(browser, browser.find_element(By.LINK_TEXT, "r2"))
    assert "Record the verdict" not in _text(browser)  # support never decides
    browser.find_element(By.ID, "statement").send_keys("The code never worked; a receipt sent.")
    _go(browser, browser.find_element(By.XPATH, "//button[text()='File the appeal']"))
    assert "The appeal is filed" in _text(browser)

    _sign_in(browser, served, "ana")
    browser.get(f"{served}/console/cases/r2")
    assert "appeal awaiting a decision" in _text(browser)
    _verdict(browser, "full", "no")
    assert "its appeal must be decided by another reviewer" in _text(browser)

    _sign_in(browser, served, "ben")
    browser.get(f"{served}/console/queue?queue=disputes")
    assert "appeal" in _text(browser)
    _go(browser, browser.find_element(By.LINK_TEXT, "r2"))
    _verdict(browser, "full", "no")
    page = _text(browser)
    assert "3 appeal approve 50.00 no ben" in page
    assert "decided in version 3" in page


def test_markup_in_a_buyer_id_is_text_and_nothing_runs(
    served: str, browser: webdriver.Chrome
) -> None:
    _sign_in(browser, served, "ben")
    browser.get(f"{served}/console/cases/r4")

    assert HOSTILE in _text(browser)
    assert browser.execute_script("return document.scripts.length") == 0
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources == [f"{served}/console/console.css"]


def test_a_form_without_its_token_is_refused(served: str, browser: webdriver.Chrome) -> None:
    _sign_in(browser, served, "ben")
    browser.get(f"{served}/console/cases/r4")
    # What a page of another site could send: the form, without the hidden token.
    browser.execute_script("document.querySelectorAll('input[name=csrf]').forEach(e => e.remove())")
    _go(browser, browser.find_element(By.XPATH, "//button[text()='Claim this case']"))

    assert "Form refused" in _text(browser)
    assert "security token (CSRF)" in _text(browser)


def test_the_queue_fits_a_phone(served: str, browser: webdriver.Chrome) -> None:
    _sign_in(browser, served, "ben")
    browser.set_window_size(390, 844)
    try:
        browser.get(f"{served}/console/queue")
        inner, scrolled = browser.execute_script(
            "return [window.innerWidth, document.documentElement.scrollWidth]"
        )
    finally:
        browser.set_window_size(1280, 900)
    assert inner <= 390
    assert scrolled <= 390
