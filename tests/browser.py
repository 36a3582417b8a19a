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


# Every host name resolves to nothing except the loopback ones: a page cannot reach outside.
OFFLINE_RULES = "MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"
LOCAL_SCHEMES = ("data:", "blob:", "about:")


def launch(width: int = 1100, height: int = 1400, offline: bool = False):
    """A headless Chromium WebDriver using the system chromedriver (caller must ``quit()``).

    ``offline``: every non-local host is refused (``--host-resolver-rules``) and the
    performance log is kept, so :func:`requested_urls` can tell what the pages asked for.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    if offline:
        options.add_argument(f"--host-resolver-rules={OFFLINE_RULES}")
        options.add_argument("--disable-background-networking")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
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


def requested_urls(driver) -> list[str]:
    """Every URL the pages asked for since the last call (needs ``launch(offline=True)``)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def outside(urls: list[str], base_url: str) -> list[str]:
    """The URLs that are neither ``base_url``'s nor local (data:, blob:, about:)."""
    return [u for u in urls if not u.startswith((base_url, *LOCAL_SCHEMES))]
