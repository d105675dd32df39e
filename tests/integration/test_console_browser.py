"""The operator console in a real headless chromium: every page loads without a console error, and
sorting, filtering, paging and user lookup work by clicking. Screenshots land in test-artifacts/
(README's pictures come from here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium, console_errors, screenshot
from tests.support.servers import create, live_server
from tests.support.sites import ScoredSite

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def base(scored_site: ScoredSite) -> Iterator[str]:
    """The API with the console on (no token) over the session's scored site."""
    settings = dataclasses.replace(scored_site.settings, console="on")
    with live_server(create(settings, watch=False)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def _open(driver: Any, url: str, shot: str | None = None) -> None:
    driver.get(url)
    errors = console_errors(driver)
    if shot:
        screenshot(driver, shot)
    assert not errors, f"{url}: {errors}"


def _navigate(driver: Any, element: Any) -> None:
    """Click a link or submit button and wait until the page it leads to replaced this one: a click
    only starts the navigation, and reading right after it may still find the page being left."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    leaving = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 10).until(EC.staleness_of(leaving))


def _column(driver: Any, name: str) -> list[str]:
    from selenium.webdriver.common.by import By

    cells = driver.find_elements(By.CSS_SELECTOR, f"#at-risk tbody td[data-col='{name}']")
    return [c.text.strip() for c in cells]


@pytest.mark.parametrize("page", ["", "/model", "/drift", "/runs"])
def test_every_page_loads_without_console_errors(browser: Any, base: str, page: str) -> None:
    _open(browser, f"{base}/console{page}", shot=f"console{page.replace('/', '-') or '-at-risk'}")
    assert "Traceback" not in browser.page_source and "Internal Server Error" not in browser.page_source


def test_sort_filter_page_and_lookup_by_clicking(browser: Any, base: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _open(browser, f"{base}/console")
    first = [float(p) for p in _column(browser, "churn_probability")]
    assert first and first == sorted(first, reverse=True), "riskiest first by default"

    _navigate(browser, browser.find_element(By.CSS_SELECTOR, "#at-risk a.sort[data-col='churn_probability']"))
    ascending = [float(p) for p in _column(browser, "churn_probability")]
    assert ascending == sorted(ascending) and ascending != first, "a click on the header reverses the order"

    Select(browser.find_element(By.CSS_SELECTOR, "#filters select[name='tier']")).select_by_value("high")
    _navigate(browser, browser.find_element(By.ID, "apply"))
    tiers = set(_column(browser, "risk_tier"))
    assert tiers <= {"high"}, tiers
    assert console_errors(browser) == []

    _open(browser, f"{base}/console")
    page_one = _column(browser, "user_id")
    _navigate(browser, browser.find_element(By.CSS_SELECTOR, "a.page-next"))
    page_two = _column(browser, "user_id")
    assert page_two and not set(page_one) & set(page_two), "the next page shows other users"
    _navigate(browser, browser.find_element(By.CSS_SELECTOR, "a.page-prev"))
    assert _column(browser, "user_id") == page_one
    screenshot(browser, "console-at-risk-page")

    user = page_one[0]
    box = browser.find_element(By.CSS_SELECTOR, "#lookup input[name='user_id']")
    box.clear()
    box.send_keys(user)
    _navigate(browser, browser.find_element(By.ID, "lookup-submit"))
    live = browser.find_element(By.CSS_SELECTOR, "[data-testid='live-probability'][data-col='churn_probability']")
    assert 0.0 <= float(live.text.strip().rstrip("%")) <= (100.0 if live.text.strip().endswith("%") else 1.0)
    assert browser.current_url.endswith(f"/console/users/{user}")
    assert browser.find_elements(By.CSS_SELECTOR, "#features") and browser.find_elements(
        By.CSS_SELECTOR, "#user-history"
    )
    assert console_errors(browser) == []
    screenshot(browser, "console-user")


def test_screenshots_for_readme(browser: Any, base: str, tmp_path: Path) -> None:
    """README's pictures of the at-risk and model pages, refreshed by every run (test-artifacts/)."""
    for page, name in (("", "readme-at-risk"), ("/model", "readme-model")):
        _open(browser, f"{base}/console{page}")
        path = screenshot(browser, name)
        assert path.stat().st_size > 10_000, "a blank page makes a tiny PNG"
