"""Find and launch Debian's headless Chromium for browser tests, with no downloads.

The system chromedriver is named explicitly so that selenium-manager never goes to the network.
`.ci/ensure-browser` installs both programs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "run .ci/ensure-browser to install Debian's chromium and chromium-driver"


def missing_browser() -> str | None:
    """Why a headless browser cannot be launched here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not found; {INSTALL_HINT}"
    return None


def require_browser() -> None:
    """Skip the calling test without a browser; in CI (``$CI`` set) fail instead."""
    reason = missing_browser()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def launch(width: int = 1100, height: int = 1400):
    """A headless Chromium WebDriver using the system chromedriver (caller must ``quit()``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
