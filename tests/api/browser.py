"""Headless Chromium for the console tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download needs the network, so the tests use the system browser
(the Makefile installs it where missing). A missing browser fails the tests that need it,
naming what to install: it never skips.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.shared_data import REPO_ROOT

#: Where screenshots go: test artifacts, ignored by git.
ARTIFACTS = REPO_ROOT / ".artifacts" / "console"
CANDIDATES = ("chromium", "chromium-browser")
#: The machine's network is closed: background fetches would only fail, slowly.
FLAGS = [
    "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def chromium_path() -> Path:
    configured = os.environ.get("CHROMIUM")
    found = configured or next(filter(None, map(shutil.which, CANDIDATES)), None)
    if not found or not Path(found).exists():
        pytest.fail("no Chromium: install Debian's package (apt-get install chromium; `make "
                    "test` does it as root) or set CHROMIUM to the browser's path",
                    pytrace=False)
    return Path(found)


@contextmanager
def chromium() -> Iterator[Browser]:
    # Chromium refuses to run as root without --no-sandbox (CI runs as root); the console
    # tests load only pages of the local test server.
    flags = [*FLAGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium_path()), args=flags)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"
