"""Makes docs/report.png, a realistic one-page report, and docs/page.png: the page at / after reading that report
on the demo checkpoint.

Run it from the repository root in the environment `./start.sh test` makes (it needs Playwright for Python and a
Chromium; Debian's /usr/bin/chromium by default, CHROMIUM_PATH to pick another):

    .venv/bin/python docs/screenshot.py [--tab markdown|raw|page] [--out docs/page.png]

It draws the report with PIL (the README's curl example uploads it too), starts `uvicorn app:app` with
DEEPSEEK_OCR_MODEL_PATH=demo on a free loopback port (history and runs in a temporary folder), uploads the report
through the page, waits for the result, and stops the server by its process id. The demo's weights are random,
and so is the text it reads; the page says so in its banner.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
FONTS = Path("/usr/share/fonts/truetype/dejavu")
STARTUP_TIMEOUT_S = 180
READ_TIMEOUT_MS = 300_000
# A4 at 100 DPI: big enough to look like a scan, small enough to read quickly on a CPU.
PAGE_SIZE = (827, 1169)
MARGIN = 70

PARAGRAPHS = [
    "Parcel volumes rose for the third quarter in a row, driven by the new cross-dock in Leipzig and the renewed "
    "contract with two regional grocers. Average delivery time fell from 2.4 to 2.1 days.",
    "Fuel costs stayed high through August. The electric vans added in June now cover 18% of urban routes and "
    "are expected to reach a quarter of them by the end of the year.",
]
TABLE = [("Region", "Parcels (k)", "Revenue (EUR m)", "Change"),
         ("North", "412", "18.6", "+6.1%"),
         ("Central", "538", "24.9", "+9.4%"),
         ("South", "301", "13.2", "-1.8%"),
         ("Total", "1,251", "56.7", "+5.3%")]
BARS = [("Q4", 0.62), ("Q1", 0.70), ("Q2", 0.81), ("Q3", 0.93)]


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONTS / name), size)


def wrap(draw: ImageDraw.ImageDraw, text: str, face: ImageFont.FreeTypeFont, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if draw.textlength(candidate, font=face) <= width:
            line = candidate
        else:
            lines.append(line)
            line = word
    return lines + [line]


def draw_report(path: Path) -> None:
    """A one-page quarterly report: a title, paragraphs, a table and a bar chart with its caption."""
    page = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(page)
    body, bold = font("DejaVuSerif.ttf", 15), font("DejaVuSerif-Bold.ttf", 15)
    width = PAGE_SIZE[0] - 2 * MARGIN
    y = MARGIN
    draw.text((MARGIN, y), "Northwind Logistics", font=font("DejaVuSerif-Bold.ttf", 30), fill="black")
    y += 44
    draw.text((MARGIN, y), "Quarterly report, third quarter 2026", font=font("DejaVuSerif-Italic.ttf", 18),
              fill="#333")
    y += 36
    draw.line((MARGIN, y, PAGE_SIZE[0] - MARGIN, y), fill="#555", width=2)
    y += 24
    draw.text((MARGIN, y), "1. Summary", font=font("DejaVuSerif-Bold.ttf", 20), fill="black")
    y += 34
    for paragraph in PARAGRAPHS:
        for line in wrap(draw, paragraph, body, width):
            draw.text((MARGIN, y), line, font=body, fill="black")
            y += 22
        y += 12

    y += 8
    draw.text((MARGIN, y), "2. Results by region", font=font("DejaVuSerif-Bold.ttf", 20), fill="black")
    y += 36
    columns = [MARGIN, MARGIN + 190, MARGIN + 350, MARGIN + 540, PAGE_SIZE[0] - MARGIN]
    for row_number, row in enumerate(TABLE):
        face = bold if row_number in (0, len(TABLE) - 1) else body
        for column, cell in enumerate(row):
            draw.text((columns[column] + 10, y + 8), cell, font=face, fill="black")
        draw.line((MARGIN, y, columns[-1], y), fill="black", width=2 if row_number == 0 else 1)
        y += 34
    draw.line((MARGIN, y, columns[-1], y), fill="black", width=2)
    for x in columns:
        draw.line((x, y - 34 * len(TABLE), x, y), fill="black", width=1)

    y += 40
    draw.text((MARGIN, y), "3. Volume trend", font=font("DejaVuSerif-Bold.ttf", 20), fill="black")
    y += 36
    chart = (MARGIN + 60, y, PAGE_SIZE[0] - MARGIN - 60, y + 240)
    draw.rectangle(chart, outline="#444", width=1)
    slot = (chart[2] - chart[0]) // len(BARS)
    for index, (label, share) in enumerate(BARS):
        left = chart[0] + index * slot + slot // 4
        top = chart[3] - int(share * (chart[3] - chart[1] - 20))
        draw.rectangle((left, top, left + slot // 2, chart[3]), fill="#3b6ea5")
        draw.text((left + slot // 4 - 10, chart[3] + 8), label, font=body, fill="black")
    y = chart[3] + 40
    draw.text((MARGIN + 60, y), "Figure 1. Parcels handled per quarter, indexed to the Q3 peak.",
              font=font("DejaVuSerif-Italic.ttf", 14), fill="#333")
    draw.text((PAGE_SIZE[0] // 2 - 5, PAGE_SIZE[1] - 50), "3", font=body, fill="#555")
    page.save(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(history: str, log: object) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.upper().startswith("DEEPSEEK_")}
    env.update(DEEPSEEK_OCR_MODEL_PATH="demo", DEEPSEEK_OCR_HISTORY_DIR=history,
               DEEPSEEK_OCR_RUNS_DIR=str(Path(history) / "runs"))
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port",
                               str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the demo server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.terminate()
    raise SystemExit("the demo server did not become ready")


def screenshot(url: str, report: Path, tab: str, out: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(url + "/")
            expect(page.locator("#mode")).to_be_enabled(timeout=READ_TIMEOUT_MS)
            page.set_input_files("#file", str(report))
            page.click("#run")
            expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=READ_TIMEOUT_MS)
            page.click(f"#tab-{tab}")
            page.mouse.move(0, 0)
            page.screenshot(path=str(out))
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tab", choices=["markdown", "raw", "page"], default="page")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "page.png")
    parser.add_argument("--report", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="screenshot-") as work, open(Path(work) / "server.log", "w") as log:
        draw_report(args.report)
        server, url = start_demo(work, log)
        try:
            screenshot(url, args.report, args.tab, args.out)
        finally:
            server.terminate()
            server.wait(timeout=60)
    image = Image.open(args.out)
    # Screenshots are RGB; a 256-colour palette keeps the file small without visible loss on a flat page.
    image.convert("RGB").quantize(256).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
