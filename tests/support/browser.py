"""A real headless browser for UI tests: Debian's chromium driven by its chromedriver through
Selenium (both installed by scripts/install-tools.sh). Screenshots go to ``$CHURN_ARTIFACTS_DIR``
(default ``<repo>/test-artifacts``, git-ignored), so a failed run leaves pictures to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.env import REPO, require_tool, skip_or_fail

ARTIFACTS = Path(os.environ.get("CHURN_ARTIFACTS_DIR", REPO / "test-artifacts"))
HINT = "run `make tools` (installs Debian's chromium and chromium-driver)"


@contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless chromium session (a Selenium WebDriver) that records the page's console log."""
    binary = require_tool("chromium", HINT)
    driver_path = require_tool("chromedriver", HINT)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium not installed (requirements/dev.txt)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver comes from Debian, never from Selenium Manager's download.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The page's console messages at SEVERE level since the last call (JS errors, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
