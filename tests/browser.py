"""A real headless browser for tests: Debian's Chromium driven by Playwright for Python (Playwright's own browser
download is not reachable here). Without Chromium the browser tests skip, except under CI, where they fail."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
# Screenshots of each state a browser test reaches, for people to look at.
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"


def require_browser() -> None:
    if CHROMIUM is None or not _has_playwright():
        if os.environ.get("CI"):
            pytest.fail("Chromium and Playwright are required under CI (.ci/run installs them)")
        pytest.skip("no Chromium (apt-get install chromium) or no playwright (requirements-dev.txt)")


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _quiet_handler(folder: str) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=folder, **kwargs)

        def log_message(self, *args) -> None:
            pass

    return Handler


class StaticSite:
    """Serves a folder on a loopback port of its own: another origin than the service's."""

    def __init__(self, folder: Path) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _quiet_handler(str(folder)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def browser_page() -> Iterator[object]:
    """A fresh page of a headless Chromium, closed afterwards."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def screenshot(page: object, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
