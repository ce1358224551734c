"""Headless Chromium through Selenium, for the browser tests and benchmarks/dashboard_load.py.

Uses the system's browser and driver (Debian: chromium, chromium-driver), never a
download: Selenium Manager is bypassed by naming both binaries.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# Flags that work in a root container without a display or network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if find_chromium() is None:
        return "chromium and chromedriver not found (apt-get install chromium chromium-driver)"
    return None


def open_browser(user_data_dir: Path, width: int = 1280, height: int = 1400) -> Any:
    """A fresh headless Chromium (its own profile folder); the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError(missing_reason())
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
