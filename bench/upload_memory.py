"""Peak memory of the service while it reads small files that decode or render large, and while a long PDF waits in
the queue: samples the resident memory of the server and its PDF workers and prints the growth over the idle
process for each upload.

    python bench/upload_memory.py

Uses the remote-code STAND-IN engine (tests/standin_checkpoint.py), which answers at once, so what is measured is
the service around the model: decoding, rendering, previews, artifacts. Uploads:
- a 7000x7000 PNG (about 150 KB), read in `base` mode;
- a one-page PDF whose page is 14400 pt square (under 1 KB);
- a 50-page A4 PDF at 144 DPI.
"""

from __future__ import annotations

import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the service's code, and the tests' helpers
sys.path.insert(0, str(ROOT / "bench"))

from live_server import Server  # noqa: E402
from loop_latency import a4_pdf  # noqa: E402
from standin_checkpoint import build_standin_checkpoint, set_answer  # noqa: E402

SAMPLE_S = 0.02


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its children (the PDF workers)."""
    total = 0
    pids = [pid]
    try:
        pids += [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for each in pids:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def big_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (7000, 7000), "white").save(buffer, "PNG")
    return buffer.getvalue()


def poster_pdf() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=14400, height=14400)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def peak_during(server: Server, name: str, data: bytes, **fields: str) -> tuple[int, float]:
    """(peak growth in bytes over the memory before the upload, seconds) for one upload."""
    before = rss_bytes(server.process.pid)
    peak = before
    done = threading.Event()
    answer: list[httpx.Response] = []

    def post() -> None:
        answer.append(httpx.post(f"{server.url}/api/ocr", files={"image": (name, data)}, data=fields, timeout=600))
        done.set()

    started = time.perf_counter()
    threading.Thread(target=post, daemon=True).start()
    while not done.wait(SAMPLE_S):
        peak = max(peak, rss_bytes(server.process.pid))
    elapsed = time.perf_counter() - started
    if answer[0].status_code != 200:
        raise RuntimeError(f"{name}: {answer[0].status_code} {answer[0].text[:200]}")
    return peak - before, elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = build_standin_checkpoint(Path(folder) / "standin", family="v2")
        set_answer(checkpoint, "<|ref|>text<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\nSome text.")
        server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(checkpoint), "DEEPSEEK_OCR_RUNS_DIR": f"{folder}/runs",
                         "DEEPSEEK_OCR_MAX_NEW_TOKENS": "4096", "DEEPSEEK_MAX_IMAGE_MB": "100"})
        try:
            server.wait_ready()
            uploads = [
                ("7000x7000 PNG, base mode", "big.png", big_png(), {"mode": "base"}),
                ("14400 pt PDF page, gundam", "poster.pdf", poster_pdf(), {}),
                ("50-page A4 PDF, gundam", "long.pdf", a4_pdf(50), {}),
            ]
            print(f"idle: {rss_bytes(server.process.pid) / 2**20:.0f} MiB (server and PDF workers)")
            for label, name, data, fields in uploads:
                growth, seconds = peak_during(server, name, data, **fields)
                print(f"{label} ({len(data) / 1024:.0f} KiB): peak +{growth / 2**20:.0f} MiB, {seconds:.1f} s")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
