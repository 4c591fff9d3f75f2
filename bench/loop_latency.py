"""Event-loop health while a long PDF runs through an engine that answers at once (the regime of a fast GPU):
polls /health throughout and prints its p50, p99 and worst latency.

    python bench/loop_latency.py              # 40 A4 pages at 150 DPI through the remote-code STAND-IN engine

The stand-in (tests/standin_checkpoint.py) answers instantly, so what is measured is the service around the model:
rendering, queueing, cleaning, artifacts, previews, history. Goal: /health p99 under 300 ms, worst under 1 s.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the service's code, and the tests' helpers

from live_server import Server  # noqa: E402
from standin_checkpoint import build_standin_checkpoint, set_answer  # noqa: E402

A4_POINTS = (595, 842)


def a4_pdf(pages: int) -> bytes:
    images = []
    for number in range(pages):
        image = Image.new("RGB", A4_POINTS, "white")
        draw = ImageDraw.Draw(image)
        for line in range(40):
            draw.text((40, 40 + line * 19), f"page {number + 1} line {line + 1}: the quick brown fox", fill="black")
        images.append(image)
    buffer = io.BytesIO()
    images[0].save(buffer, "PDF", save_all=True, append_images=images[1:], resolution=72)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--dpi", type=float, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_standin_checkpoint(Path(folder) / "standin", family="v2")
        set_answer(checkpoint, "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\nSome text.")
        server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(checkpoint), "DEEPSEEK_OCR_RUNS_DIR": f"{folder}/runs",
                         "DEEPSEEK_OCR_PDF_DPI": str(args.dpi), "DEEPSEEK_OCR_MAX_NEW_TOKENS": "4096",
                         "DEEPSEEK_OCR_MAX_PDF_PAGES": str(args.pages), "DEEPSEEK_MAX_IMAGE_MB": "100"})
        try:
            server.wait_ready()
            pdf = a4_pdf(args.pages)
            latencies: list[float] = []
            done = threading.Event()

            def poll() -> None:
                with httpx.Client(base_url=server.url, timeout=60) as client:
                    while not done.is_set():
                        started = time.perf_counter()
                        client.get("/health")
                        latencies.append(time.perf_counter() - started)

            poller = threading.Thread(target=poll)
            poller.start()
            started = time.perf_counter()
            response = httpx.post(f"{server.url}/api/ocr", files={"image": ("a4.pdf", pdf, "application/pdf")},
                                  data={"mode": "base"}, timeout=600)
            elapsed = time.perf_counter() - started
            done.set()
            poller.join()
        finally:
            server.stop()
    assert response.status_code == 200, response.text
    ms = sorted(latency * 1000 for latency in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{args.pages} A4 pages at {args.dpi:g} DPI in {elapsed:.1f} s; /health polled {len(ms)} times: "
          f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, worst {ms[-1]:.1f} ms")


if __name__ == "__main__":
    main()
