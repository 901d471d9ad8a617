"""Screenshots of the review console for the README: the queue, a case, the queue on a phone.

    python benchmarks/console_screens.py            # writes docs/console-*.png

A store of 300 open cases (``console_queue.fill``), a reviewer signed in, Debian's
headless Chromium (``/usr/bin/chromium``, ``/usr/bin/chromedriver``).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from console_queue import PASSWORD, fill, serving  # type: ignore[import-not-found]
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from riskmodel import store
from serving.console.accounts import create_account

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--hide-scrollbars")
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _shoot(driver: webdriver.Chrome, path: Path, width: int, height: int) -> None:
    driver.set_window_size(width, height)
    driver.save_screenshot(str(path))
    print(f"wrote {path}")


def main() -> None:
    logging.getLogger("serving").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="console-screens-") as folder:
        url = f"sqlite:///{Path(folder) / 'store.db'}"
        fill(url, 300)
        engine = store.open_store(url)
        create_account(engine, "mei", "reviewer", PASSWORD)
        engine.dispose()
        with serving(url, Path(folder)) as base:
            driver = _browser()
            try:
                driver.set_window_size(1280, 900)
                driver.get(f"{base}/console/login")
                driver.find_element(By.ID, "name").send_keys("mei")
                driver.find_element(By.ID, "password").send_keys(PASSWORD)
                driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
                driver.get(f"{base}/console/queue")
                _shoot(driver, DOCS / "console-queue.png", 1280, 900)
                first = driver.find_element(By.CSS_SELECTOR, "tbody tr a").text
                driver.get(f"{base}/console/cases/{first}")
                _shoot(driver, DOCS / "console-case.png", 1280, 1400)
                driver.get(f"{base}/console/queue?queue=disputes")
                _shoot(driver, DOCS / "console-phone.png", 390, 844)
            finally:
                driver.quit()


if __name__ == "__main__":
    main()
