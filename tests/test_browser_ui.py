"""The page at / (dsocr/ui) and the locally served /docs: plain checks of the routes, then the page in headless
Chromium against the real server, on the tiny checkpoint (random text) and on the remote-code stand-in (chosen
answers with regions, figures and hostile markup), with API keys, and under a path prefix behind a proxy."""

from __future__ import annotations

import http.client
import http.server
import re
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from app import create_app
from browser import browser_page, require_browser, screenshot
from helpers import image_bytes, make_pdf, server_env
from live_server import Server, serving
from settings import load_settings
from standin_checkpoint import build_standin_checkpoint, set_answer

UI_DIR = Path(__file__).resolve().parent.parent / "dsocr" / "ui"
PAGE_TIMEOUT_MS = 120_000
KEY_STORAGE = "deepseek-ocr.apiKey"
PREFIX = "/ocr"
# What the stand-in answers: four grounding tags (the last with two boxes), one figure, and markup that must
# never run: an inline handler, a script, a javascript: link.
GROUNDED = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 150]]<|/det|>\n# Quarterly report\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 200, 600, 400]]<|/det|>\nRevenue grew "
    "<img src=x onerror=\"document.title='pwned'\"> a lot.<script>document.title='pwned'</script>\n\n"
    "[more](javascript:document.title='pwned')\n\n"
    "<|ref|>image<|/ref|><|det|>[[250, 250, 500, 500]]<|/det|>\n\n"
    "<|ref|>table<|/ref|><|det|>[[100, 600, 900, 750], [100, 800, 900, 950]]<|/det|>\n"
    "<table><tr><td>a</td><td>b</td></tr></table>\n"
)
# A title and a figure.
WITH_FIGURE = (
    "<|ref|>title<|/ref|><|det|>[[100, 50, 900, 150]]<|/det|>\n# Quarterly report\n\n"
    "<|ref|>image<|/ref|><|det|>[[250, 250, 500, 500]]<|/det|>\n"
)


# ---- plain checks of the routes ----------------------------------------------------------------------------


def ui_client(tmp_path: Path, root_path: str = "", **overrides: object) -> TestClient:
    """The app without its lifespan: no model is needed to serve the page and the docs."""
    settings = load_settings(ocr_model_path=str(tmp_path / "no-model"), ocr_runs_dir=tmp_path / "runs",
                             ocr_history_dir=tmp_path / "history", **overrides)
    return TestClient(create_app(settings), root_path=root_path)


def references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)


def test_the_page_and_its_files_are_served_with_relative_urls_types_and_cache_headers(tmp_path: Path) -> None:
    client = ui_client(tmp_path)
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.text == (UI_DIR / "index.html").read_text()
    urls = references(page.text)
    assert {"ui/app.js", "ui/style.css", "docs"} <= set(urls)
    for url in urls:  # relative, so that the page works under a proxy's path prefix
        assert not url.startswith("/") and "://" not in url, url
        response = client.get("/" + url)
        assert response.status_code == 200, url
    types = {"ui/app.js": "text/javascript; charset=utf-8", "ui/style.css": "text/css; charset=utf-8"}
    for url, media_type in types.items():
        response = client.get("/" + url)
        assert response.headers["content-type"] == media_type
        assert response.headers["cache-control"] == "no-cache"  # revalidated: it changes with the service
        assert client.get("/" + url, headers={"If-None-Match": response.headers["etag"]}).status_code == 304
    vendored = [url for url in urls if url.startswith("ui/vendor/")]
    assert len(vendored) == 3  # marked, DOMPurify, Swagger UI's icon
    for url in vendored:  # versioned folders: cached for good
        assert client.get("/" + url).headers["cache-control"] == "public, max-age=31536000, immutable"


def test_the_page_script_is_a_module_whose_imports_are_all_served_and_all_used(tmp_path: Path) -> None:
    """No build step: the browser follows app.js's imports itself, so each must be a file served as JavaScript
    (a module with another type is refused), and every module of dsocr/ui must be reached from app.js."""
    client = ui_client(tmp_path)
    assert '<script type="module" src="ui/app.js"></script>' in client.get("/").text
    reached, pending = set(), ["app.js"]
    while pending:
        name = pending.pop()
        reached.add(name)
        response = client.get(f"/ui/{name}")
        assert response.status_code == 200, f"{name} is imported but not served"
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        imports = re.findall(r"""^import\s[^;]*?\sfrom\s+"([^"]+)";""", response.text, re.MULTILINE | re.DOTALL)
        for target in imports:
            assert re.fullmatch(r"\./[\w-]+\.js", target), f"{name} imports {target}: only ./<module>.js, relative"
            pending += [target[2:]] if target[2:] not in reached else []
    assert reached == {path.name for path in UI_DIR.glob("*.js")}


def test_the_vendored_libraries_are_pinned_with_their_licences(tmp_path: Path) -> None:
    versions = (UI_DIR / "vendor" / "VERSIONS").read_text()
    folders = sorted(path for path in (UI_DIR / "vendor").iterdir() if path.is_dir())
    assert [folder.name for folder in folders] == ["dompurify-3.4.18", "marked-18.2.1", "swagger-ui-dist-5.35.0"]
    for folder in folders:
        name, version = folder.name.rsplit("-", 1)
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(version)}\s", versions, re.MULTILINE), folder.name
        assert (folder / "LICENSE").is_file()
    client = ui_client(tmp_path)
    assert client.get("/ui/vendor/marked-18.2.1/LICENSE").headers["content-type"] == "text/plain; charset=utf-8"


def test_files_outside_the_page_folder_are_not_served(tmp_path: Path) -> None:
    client = ui_client(tmp_path)
    for path in ("/ui/../app.py", "/ui/%2e%2e/app.py", "/ui/..%2fapp.py", "/ui/vendor", "/ui/", "/ui/nope.js",
                 "/ui/%00", "/ui/" + "a/" * 300):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "detail" in response.json()


def test_the_page_is_off_with_deepseek_ocr_ui_false_but_the_docs_stay(tmp_path: Path) -> None:
    client = ui_client(tmp_path, ocr_ui=False)
    assert client.get("/").status_code == 404
    assert client.get("/ui/app.js").status_code == 404
    assert client.get("/ui/vendor/marked-18.2.1/marked.umd.js").status_code == 404
    assert client.get("/docs").status_code == 200
    assert client.get("/ui/vendor/swagger-ui-dist-5.35.0/swagger-ui-bundle.js").status_code == 200
    # A path through the Swagger folder that resolves to the page's own file is the page's file: off too.
    assert client.get("/ui/vendor/swagger-ui-dist-5.35.0/%2e%2e/%2e%2e/app.js").status_code == 404


def test_a_path_through_the_vendor_folder_gets_the_cache_policy_of_the_file_it_names(tmp_path: Path) -> None:
    response = ui_client(tmp_path).get("/ui/vendor/%2e%2e/app.js")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"


@pytest.mark.parametrize("root_path", ["", PREFIX])
def test_the_docs_use_only_local_assets_under_the_root_path(tmp_path: Path, root_path: str) -> None:
    client = ui_client(tmp_path, root_path=root_path)
    assert client.app.docs_url is None and client.app.redoc_url is None, (
        "create_app must pass docs_url=None, redoc_url=None: /docs is dsocr/api/ui.py's, with local assets")
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert not re.search(r"https?://", docs.text), "the docs page must not reference anything outside the service"
    urls = references(docs.text) + re.findall(r"url: '([^']+)'", docs.text)
    assert len(urls) == 4  # style, icon, script, the OpenAPI document
    for url in urls:
        assert url.startswith(root_path + "/"), url
        response = client.get(url[len(root_path):])
        assert response.status_code == 200, url
    assert client.get("/redoc").status_code == 404


# ---- in the browser ----------------------------------------------------------------------------------------


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_standin_checkpoint(tmp_path_factory.mktemp("ui-standin") / "standin-deepseek-ocr", family="v1")


def standin_env(standin: Path, runs: Path, **extra: str) -> dict[str, str]:
    return server_env(standin, runs, DEEPSEEK_OCR_MAX_NEW_TOKENS="4096", **extra)


@pytest.fixture(scope="module")
def standin_service(standin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require_browser()
    with serving(standin_env(standin, tmp_path_factory.mktemp("ui-standin-runs"))) as server:
        yield server


def open_page(url: str) -> Iterator[object]:
    for page in browser_page():
        page.goto(url)
        expect(page.locator("#mode")).to_be_enabled(timeout=PAGE_TIMEOUT_MS)  # /health and /api/modes answered
        yield page


@pytest.fixture
def page(real_server: Server) -> Iterator[object]:
    yield from open_page(f"{real_server.url}/")


def read_document(page, upload: Path, expected_state: str = "done") -> None:
    page.set_input_files("#file", str(upload))
    page.click("#run")
    expect(page.locator("body")).to_have_attribute("data-state", re.compile(r"^(done|error)$"), timeout=PAGE_TIMEOUT_MS)
    if expected_state == "done":
        expect(page.locator("#error")).to_be_hidden()
    expect(page.locator("body")).to_have_attribute("data-state", expected_state)


def shown_result(server_url: str, page, headers: dict[str, str] | None = None) -> dict:
    """The result the page shows, as the service keeps it (/api/history/{id} is /api/ocr's JSON)."""
    history_id = page.get_attribute("#result", "data-history-id")
    assert history_id
    response = httpx.get(f"{server_url}/api/history/{history_id}", headers=headers or {}, timeout=30)
    assert response.status_code == 200
    return response.json()


def test_an_image_is_read_and_shown_as_markdown_raw_text_page_and_history(real_server: Server, page, tmp_path: Path) -> None:
    upload = tmp_path / "letter.png"
    upload.write_bytes(image_bytes((320, 240)))
    read_document(page, upload)
    result = shown_result(real_server.url, page)
    raw = result["pages"][0]["rawText"]
    assert raw.strip()  # random weights: meaningless, but some text
    assert page.locator("#stream").text_content() == raw  # the streamed deltas add up to the raw text
    expect(page.locator("#summary")).to_contain_text(f"letter.png · 1 page · mode {result['mode']}")

    markdown = page.locator("#panel-markdown")
    expect(markdown).to_be_visible()
    shown = markdown.inner_text()
    for word in re.findall(r"[A-Za-z0-9]+", result["text"]):
        assert word in shown
    screenshot(page, "ui-image-markdown")

    page.focus("#tab-markdown")
    page.keyboard.press("ArrowRight")  # the tabs work from the keyboard
    expect(page.locator("#tab-raw")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#tab-raw")).to_be_focused()
    expect(page.locator("#panel-raw")).to_be_visible()
    expect(markdown).to_be_hidden()
    assert page.locator("#panel-raw pre").text_content() == raw

    page.click("#tab-page")
    sheet = page.locator("#sheet img")
    expect(sheet).to_be_visible()
    assert sheet.get_attribute("src") == result["pages"][0]["imageData"]
    assert sheet.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
    items = result["pages"][0]["layout"]["items"]
    expect(page.locator("#sheet-caption")).to_have_text(
        f"Page 1 · 320×240 px · {len(items)} region{'' if len(items) == 1 else 's'}")
    expect(page.locator("#sheet .box")).to_have_count(sum(len(item["boxes"]) for item in items))
    screenshot(page, "ui-image-page")

    page.click("#tab-figures")
    expect(page.locator("#panel-figures")).to_be_visible()

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "letter.md"
    assert Path(download.path()).read_text(encoding="utf-8") == result["text"]
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=real_server.url)
    page.click("#copy")
    expect(page.locator("#copy-status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == result["text"]

    entry = page.locator(f'#history-list button[data-id="{result["historyId"]}"]')
    expect(entry).to_contain_text("letter.png")
    expect(entry).to_have_attribute("aria-current", "true")


def test_a_two_page_pdf_shows_both_pages_and_reopens_from_the_history(real_server: Server, page, tmp_path: Path) -> None:
    upload = tmp_path / "report.pdf"
    upload.write_bytes(make_pdf(((200, 100), (150, 150))))
    read_document(page, upload)
    result = shown_result(real_server.url, page)
    assert [entry["page"] for entry in result["pages"]] == [1, 2]
    bar = page.locator("#progress-bar")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("2", "2")  # from the progress events
    expect(page.locator("#summary")).to_contain_text("report.pdf · 2 pages")
    expect(page.locator("#panel-markdown .md-page .page-heading")).to_have_text(["Page 1", "Page 2"])

    page.click("#tab-raw")
    expect(page.locator("#panel-raw pre")).to_have_count(2)
    assert page.locator("#panel-raw pre").all_text_contents() == [entry["rawText"] for entry in result["pages"]]

    page.click("#tab-page")
    buttons = page.locator("#page-picker button")
    expect(buttons).to_have_text(["Page 1", "Page 2"])
    buttons.nth(1).click()
    expect(buttons.nth(1)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#sheet-caption")).to_contain_text("Page 2 · ")
    assert page.get_attribute("#sheet img", "src") == result["pages"][1]["imageData"]
    screenshot(page, "ui-pdf-two-pages")

    page.reload()
    expect(page.locator("#mode")).to_be_enabled()
    expect(page.locator("#result")).to_be_hidden()
    page.click(f'#history-list button[data-id="{result["historyId"]}"]')
    expect(page.locator("#result")).to_be_visible()
    expect(page.locator("#summary")).to_contain_text("report.pdf · 2 pages")
    expect(page.locator("#panel-markdown .md-page")).to_have_count(2)
    screenshot(page, "ui-pdf-from-history")


def test_refusals_show_the_services_detail(real_server: Server, page, tmp_path: Path) -> None:
    upload = tmp_path / "notes.txt"
    upload.write_text("not a document")
    expected = httpx.post(f"{real_server.url}/api/ocr/stream", files={"image": ("notes.txt", upload.read_bytes())},
                          timeout=60)
    assert expected.status_code == 415
    read_document(page, upload, expected_state="error")
    error = page.locator("#error")
    expect(error).to_contain_text("Error 415: ")
    expect(error).to_contain_text(expected.json()["detail"])
    screenshot(page, "ui-unsupported-415")

    pdf = tmp_path / "short.pdf"
    pdf.write_bytes(make_pdf(((200, 100),)))
    page.fill("#pages", "7")
    expected = httpx.post(f"{real_server.url}/api/ocr/stream", files={"image": ("short.pdf", pdf.read_bytes())},
                          data={"pages": "7"}, timeout=60)
    assert expected.status_code == 422
    read_document(page, pdf, expected_state="error")
    expect(error).to_contain_text("Error 422: ")
    expect(error).to_contain_text(expected.json()["detail"])


def test_the_demo_checkpoint_is_announced(real_server: Server) -> None:
    health = httpx.get(f"{real_server.url}/health", timeout=30).json()
    for page in open_page(f"{real_server.url}/"):
        notice = page.locator("#demo-notice")
        expect(notice).to_be_visible() if health.get("demo") is True else expect(notice).to_be_hidden()

    def as_demo(route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "demo": True})

    for page in browser_page():
        page.route("**/health", as_demo)
        page.goto(f"{real_server.url}/")
        expect(page.locator("#demo-notice")).to_be_visible()
        expect(page.locator("#demo-notice")).to_have_text("Demo checkpoint: random weights, the text is meaningless.")
        screenshot(page, "ui-demo-notice")


def test_regions_are_drawn_labelled_and_linked_to_their_text_and_model_markup_never_runs(
    standin_service: Server, standin: Path, tmp_path: Path
) -> None:
    set_answer(standin, GROUNDED)
    upload = tmp_path / "quarterly.png"
    upload.write_bytes(image_bytes((800, 600)))
    for page in open_page(f"{standin_service.url}/"):
        read_document(page, upload)
        result = shown_result(standin_service.url, page)
        markdown = page.locator("#panel-markdown")
        expect(markdown.locator("h1")).to_have_text("Quarterly report")
        expect(markdown.locator("td")).to_have_text(["a", "b"])
        expect(markdown.locator("script")).to_have_count(0)
        expect(markdown.locator("[onerror]")).to_have_count(0)
        expect(markdown.locator('a[href^="javascript"]')).to_have_count(0)
        assert page.title() == "DeepSeek-OCR"  # nothing of the model's markup ran
        screenshot(page, "ui-regions-markdown")

        page.click("#tab-page")
        items = result["pages"][0]["layout"]["items"]
        assert [item["label"] for item in items] == ["title", "text", "image", "table"]
        boxes = page.locator("#sheet .box")
        expect(boxes).to_have_count(5)
        sheet = page.locator("#sheet img").bounding_box()
        for number, item in enumerate(items):
            for box in item["boxes"]:
                drawn_box = page.locator(f'#sheet .box[data-item="{number}"][data-box="{box["index"]}"]')
                expect(drawn_box.locator(".box-label")).to_have_text(item["label"])
                drawn = drawn_box.bounding_box()
                x1, y1, x2, y2 = box["normalized"]
                assert abs((drawn["x"] - sheet["x"]) / sheet["width"] - x1) < 0.01
                assert abs((drawn["y"] - sheet["y"]) / sheet["height"] - y1) < 0.01
                assert abs(drawn["width"] / sheet["width"] - (x2 - x1)) < 0.01
                assert abs(drawn["height"] / sheet["height"] - (y2 - y1)) < 0.01

        regions = page.locator("#regions .region")
        expect(regions.locator(".chip")).to_have_text([item["label"] for item in items])
        texts = [region["text"] for region in result["pages"][0]["regions"]]
        assert texts[1].startswith("Revenue grew <img")  # the model's markup, shown as text
        expect(regions.locator(".region-text")).to_have_text([texts[0], texts[1], "(no text)", texts[3]])
        page.locator('#sheet .box[data-item="1"]').hover(position={"x": 8, "y": 8})  # hovering a region highlights its text
        expect(regions.nth(1)).to_have_class(re.compile(r"\bactive\b"))
        expect(regions.nth(0)).not_to_have_class(re.compile(r"\bactive\b"))
        page.locator('#sheet .box[data-item="2"]').hover()  # the figure inside that paragraph stays reachable
        expect(regions.nth(2)).to_have_class(re.compile(r"\bactive\b"))
        page.locator('#sheet .box[data-item="1"]').hover(position={"x": 8, "y": 8})
        screenshot(page, "ui-regions-hover")
        page.mouse.move(0, 0)
        expect(regions.nth(1)).not_to_have_class(re.compile(r"\bactive\b"))
        regions.nth(3).focus()  # and from the keyboard, the text highlights its boxes (both of them)
        expect(page.locator('#sheet .box[data-item="3"].active')).to_have_count(2)
        expect(regions.nth(1)).not_to_have_class(re.compile(r"\bactive\b"))

        page.click("#tab-figures")
        figures = page.locator("#panel-figures img")
        expect(figures).to_have_count(1)
        url = re.search(r"!\[\]\(([^)]+)\)", result["text"]).group(1)
        assert figures.first.get_attribute("src") == url
        assert figures.first.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
        screenshot(page, "ui-figures")


def test_the_page_asks_for_the_api_key_once_and_keeps_it(standin: Path, tmp_path: Path) -> None:
    require_browser()
    set_answer(standin, "# Hello\n\nThe key was accepted.")
    upload = tmp_path / "hello.png"
    upload.write_bytes(image_bytes((320, 240)))
    with serving(standin_env(standin, tmp_path / "runs", DEEPSEEK_OCR_API_KEYS="right-key")) as server:
        missing = httpx.get(f"{server.url}/api/modes", timeout=30).json()["detail"]
        wrong = httpx.get(f"{server.url}/api/modes", headers={"Authorization": "Bearer wrong-key"}, timeout=30)
        for page in browser_page():
            sent: list[tuple[str, str | None]] = []
            page.on("request", lambda request: sent.append((request.url, request.headers.get("authorization"))))
            page.goto(f"{server.url}/")
            dialog = page.locator("#key-dialog")
            expect(dialog).to_be_visible()
            expect(page.locator("#key-reason")).to_contain_text(missing)
            screenshot(page, "ui-api-key-asked")
            page.fill("#key-input", "wrong-key")
            page.click("#key-save")
            expect(page.locator("#key-reason")).to_contain_text(wrong.json()["detail"])  # asked again, saying why
            page.fill("#key-input", "right-key")
            page.press("#key-input", "Enter")
            expect(dialog).to_be_hidden()
            expect(page.locator("#mode")).to_be_enabled()
            assert page.evaluate(f"localStorage.getItem('{KEY_STORAGE}')") == "right-key"

            read_document(page, upload)
            expect(page.locator("#panel-markdown h1")).to_have_text("Hello")
            assert [auth for url, auth in sent if url.endswith("/api/ocr/stream")] == ["Bearer right-key"]
            result = shown_result(server.url, page, headers={"Authorization": "Bearer right-key"})

            page.reload()  # kept: not asked again
            expect(page.locator("#mode")).to_be_enabled()
            expect(dialog).to_be_hidden()
            expect(page.locator(f'#history-list button[data-id="{result["historyId"]}"]')).to_contain_text("hello.png")
            screenshot(page, "ui-api-key-kept")


class PrefixProxy:
    """A reverse proxy on a loopback port of its own serving the service under PREFIX and stripping it, as
    nginx's `location /ocr/ { proxy_pass http://service/; }` does; anything outside PREFIX is 404."""

    HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "host"}

    def __init__(self, upstream_port: int) -> None:
        hop_by_hop = self.HOP_BY_HOP

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                self.forward()

            do_POST = do_HEAD = do_GET

            def forward(self) -> None:
                if not self.path.startswith(PREFIX + "/"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=PAGE_TIMEOUT_MS / 1000)
                upstream.request(self.command, self.path[len(PREFIX):], body=body, headers=headers)
                response = upstream.getresponse()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in hop_by_hop | {"date", "server"}:
                        self.send_header(key, value)
                self.send_header("Connection", "close")  # the body (a stream, too) ends with the connection
                self.end_headers()
                while chunk := response.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
                upstream.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_page_and_the_docs_work_under_a_path_prefix(standin: Path, tmp_path: Path) -> None:
    require_browser()
    set_answer(standin, WITH_FIGURE)
    upload = tmp_path / "prefixed.png"
    upload.write_bytes(image_bytes((640, 480)))
    env = standin_env(standin, tmp_path / "runs", DEEPSEEK_OCR_ROOT_PATH=PREFIX)
    with serving(env) as server:
        proxy = PrefixProxy(server.port)
        try:
            for page in browser_page():
                failed: list[str] = []
                page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
                outside: list[str] = []
                page.on("request", lambda r: None if r.url.startswith(proxy.url + PREFIX + "/")
                        or r.url.startswith(("data:", "blob:")) else outside.append(r.url))

                page.goto(f"{proxy.url}{PREFIX}/")
                expect(page.locator("#mode")).to_be_enabled(timeout=PAGE_TIMEOUT_MS)
                read_document(page, upload)
                expect(page.locator("#panel-markdown h1")).to_have_text("Quarterly report")
                page.click("#tab-figures")
                figure = page.locator("#panel-figures img").first
                assert figure.get_attribute("src").startswith(f"{PREFIX}/api/runs/")  # as the service gives it
                expect(figure).to_be_visible()
                assert figure.evaluate("img => img.decode().then(() => img.naturalWidth)") > 0
                screenshot(page, "ui-under-prefix")

                page.goto(f"{proxy.url}{PREFIX}/docs")
                expect(page.locator(".swagger-ui .info .title")).to_contain_text("DeepSeek-OCR service",
                                                                                    timeout=PAGE_TIMEOUT_MS)
                expect(page.locator(".swagger-ui .opblock-summary-path").first).to_be_visible()
                screenshot(page, "ui-docs-under-prefix")
                assert failed == []
                assert outside == []  # every request stayed under the prefix: nothing from the internet
        finally:
            proxy.stop()
