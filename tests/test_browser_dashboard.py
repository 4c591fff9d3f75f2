"""The seed's web frontend in a real browser: a page that calls the service as the Dashboard's Vue app does
(tests/frontend/dashboard.html), served from another origin, against the real server on the tiny checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from browser import StaticSite, browser_page, screenshot
from helpers import image_bytes, make_pdf
from live_server import Server

PAGE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def site() -> Iterator[StaticSite]:
    static = StaticSite(Path(__file__).parent / "frontend")
    yield static
    static.stop()


@pytest.fixture
def page(real_server: Server, site: StaticSite) -> Iterator[object]:
    for browser in browser_page():
        browser.goto(f"{site.url}/dashboard.html?api={real_server.url}")
        browser.wait_for_function("document.getElementById('status').textContent !== 'loading'")
        yield browser


def run(page, upload: Path, today: bool) -> None:
    page.set_input_files("#file", str(upload))
    if today:
        page.check("#progress-toggle")
    page.click("#run")
    page.wait_for_function("document.body.dataset.done === 'yes'", timeout=PAGE_TIMEOUT_MS)
    assert page.inner_text("#error") == ""


def test_the_seed_frontend_lists_the_modes_by_name_and_gets_text_back(page, tmp_path: Path) -> None:
    assert page.inner_text("#status") == "online"
    cards = page.locator(".mode-card")
    assert [cards.nth(i).get_attribute("data-key") for i in range(cards.count())] == ["gundam", "base"]
    assert cards.nth(0).inner_text().startswith("Gundam (dynamic tiles) · gundam · 1024 / 768")
    assert page.inner_text("#limit") == "limit 15 MB"
    upload = tmp_path / "math.png"
    upload.write_bytes(image_bytes((800, 600)))
    run(page, upload, today=False)
    output = page.inner_text("#output")
    assert output.startswith("gundam Gundam (dynamic tiles) ") and "ms math.png" in output
    screenshot(page, "seed-frontend-image")


def test_todays_frontend_follows_progress_and_sees_pdf_pages_and_history(page, tmp_path: Path) -> None:
    upload = tmp_path / "report.pdf"
    upload.write_bytes(make_pdf(((200, 100), (150, 150))))
    run(page, upload, today=True)
    page.wait_for_function("document.body.dataset.progress === 'complete'", timeout=PAGE_TIMEOUT_MS)
    stages = page.locator(".stage").all_inner_texts()
    assert stages[0].startswith("pending") and stages[-1] == "complete 2/2 100%"
    assert any(stage.startswith("inference 1/2") for stage in stages)
    pages = page.locator(".page")
    assert [pages.nth(i).get_attribute("data-index") for i in range(pages.count())] == ["0", "1"]
    assert page.locator(".page img").first.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator("#history li").first.inner_text() == "report.pdf · 2 · PDF · Gundam (dynamic tiles)"
    screenshot(page, "todays-frontend-pdf")
