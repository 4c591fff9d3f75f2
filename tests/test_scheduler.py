"""Concurrency on the real server: batching, backpressure, deadlines, dropped clients, metrics."""

from __future__ import annotations

import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from conftest import image_bytes
from live_server import Server, metric
from sse import parse_events

PAGES = [image_bytes((640, 480), color=color) for color in ("white", "black", "gray", "red")]
WAIT_TIMEOUT_S = 120


def start_server(checkpoint: Path, runs: Path, **env: str) -> Server:
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(runs), **env})
    server.wait_ready()
    return server


def ocr(server: Server, data: bytes, **fields: str) -> dict:
    response = httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", data)}, data=fields, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def batches(server: Server) -> tuple[float, float]:
    """(number of batches run, pages in them) so far."""
    return metric(server.url, "deepseek_ocr_batch_size_count"), metric(server.url, "deepseek_ocr_batch_size_sum")


@pytest.fixture(scope="module")
def batching_server(native_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A wide gathering window, so that requests sent together surely meet in one batch.
    server = start_server(native_checkpoint, tmp_path_factory.mktemp("runs"), DEEPSEEK_OCR_MAX_BATCH_SIZE="4",
                          DEEPSEEK_OCR_BATCH_WAIT_MS="1500", DEEPSEEK_OCR_MAX_NEW_TOKENS="8")
    yield server
    server.stop()


def test_concurrent_requests_share_a_batch_and_read_the_same_as_alone(batching_server: Server) -> None:
    alone = [ocr(batching_server, page)["rawText"] for page in PAGES]
    before = batches(batching_server)
    with ThreadPoolExecutor(len(PAGES)) as pool:
        together = list(pool.map(lambda page: ocr(batching_server, page), PAGES))
    after = batches(batching_server)
    assert [body["rawText"] for body in together] == alone
    assert after[1] - before[1] == len(PAGES)
    assert after[0] - before[0] < len(PAGES)  # fewer batches than requests: they shared
    assert all(body["timings"]["inferenceMs"] > 0 and body["timings"]["queueMs"] >= 0 for body in together)


def test_a_batch_holds_one_mode(batching_server: Server) -> None:
    modes = ["base", "gundam", "base", "gundam"]
    alone = [ocr(batching_server, page, mode=mode)["rawText"] for page, mode in zip(PAGES, modes)]
    before = batches(batching_server)
    with ThreadPoolExecutor(len(PAGES)) as pool:
        together = list(pool.map(lambda args: ocr(batching_server, args[0], mode=args[1]), zip(PAGES, modes)))
    after = batches(batching_server)
    assert [body["rawText"] for body in together] == alone
    assert after[0] - before[0] >= 2


def test_a_documents_pages_batch_together(batching_server: Server) -> None:
    from test_pdf import make_pdf

    before = batches(batching_server)
    body = ocr(batching_server, make_pdf())
    after = batches(batching_server)
    assert len(body["pages"]) == 3
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)


def test_streams_that_share_a_batch_each_get_their_text(batching_server: Server) -> None:
    alone = [ocr(batching_server, page)["rawText"] for page in PAGES[:2]]

    def stream(page: bytes) -> list[tuple[str, dict]]:
        with httpx.stream("POST", f"{batching_server.url}/api/ocr/stream", files={"image": ("p.png", page)},
                          timeout=300) as response:
            return parse_events(response.iter_lines())

    with ThreadPoolExecutor(2) as pool:
        streams = list(pool.map(stream, PAGES[:2]))
    for events, expected in zip(streams, alone):
        started = [data for name, data in events if name == "started"]
        assert started and started[0]["batchSize"] == 2
        assert "".join(data["text"] for name, data in events if name == "delta").strip() == expected
        assert events[-1][0] == "result" and events[-1][1]["rawText"] == expected


@pytest.fixture
def busy_server(native_checkpoint: Path, tmp_path: Path) -> Iterator[Server]:
    # One page at a time, long answers: requests pile up behind the first.
    server = start_server(native_checkpoint, tmp_path / "runs", DEEPSEEK_OCR_MAX_BATCH_SIZE="1",
                          DEEPSEEK_OCR_MAX_QUEUE="2", DEEPSEEK_OCR_MAX_NEW_TOKENS="300", DEEPSEEK_OCR_BATCH_WAIT_MS="0")
    yield server
    server.stop()


def read_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return (head + b"\r\n\r\n" + body).decode("latin-1")


def long_request(server: Server) -> threading.Thread:
    worker = threading.Thread(target=ocr, args=(server, image_bytes((1000, 800))))
    worker.start()
    return worker


def test_past_the_queue_limit_requests_are_refused_before_their_upload_is_read(busy_server: Server) -> None:
    workers = [long_request(busy_server) for _ in range(2)]
    wait_until(lambda: metric(busy_server.url, "deepseek_ocr_admitted") == 2)
    with socket.create_connection(("127.0.0.1", busy_server.port), timeout=30) as sock:
        sock.sendall(f"POST /api/ocr HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     f"Content-Length: {5 * 1024 * 1024}\r\n\r\n".encode())
        # Not a byte of the body is sent: the refusal cannot have waited for it.
        answer = read_response(sock)
    assert answer.startswith("HTTP/1.1 503")
    assert "retry-after: 5" in answer.lower() and "DEEPSEEK_OCR_MAX_QUEUE" in answer
    assert httpx.get(f"{busy_server.url}/health", timeout=30).status_code == 200  # probes never queue
    for worker in workers:
        worker.join()
    assert metric(busy_server.url, "deepseek_ocr_failures_total", reason="overloaded") == 1


def test_a_client_that_leaves_while_queued_is_dropped_unrun(busy_server: Server) -> None:
    worker = long_request(busy_server)
    wait_until(lambda: metric(busy_server.url, "deepseek_ocr_running") == 1)
    body = image_bytes((500, 400))
    boundary = "qq"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n").encode() \
        + body + f"\r\n--{boundary}--\r\n".encode()
    sock = socket.create_connection(("127.0.0.1", busy_server.port), timeout=30)
    sock.sendall(f"POST /api/ocr HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                 f"Content-Length: {len(form)}\r\n\r\n".encode() + form)
    wait_until(lambda: metric(busy_server.url, "deepseek_ocr_queue_depth") == 1)
    sock.close()
    wait_until(lambda: metric(busy_server.url, "deepseek_ocr_queue_depth") == 0)
    assert worker.is_alive()  # the first request still runs: the second left the queue because its client left
    worker.join()
    wait_until(lambda: metric(busy_server.url, "deepseek_ocr_failures_total", reason="client_disconnected") == 1)
    assert batches(busy_server) == (1, 1)  # only the first request's page ever ran


def test_a_request_past_its_deadline_is_504_and_its_generation_stops(start_client) -> None:
    client = start_client(ocr_request_timeout_s=0.5, ocr_max_new_tokens=5000)
    response = client.post("/api/ocr", files={"image": ("a.png", image_bytes((1000, 800)))})
    assert response.status_code == 504
    assert "DEEPSEEK_OCR_REQUEST_TIMEOUT_S" in response.json()["detail"]

    def sample(name: str) -> float:
        found = re.search(f"^{name} (\\S+)$", client.get("/metrics").text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    wait_until(lambda: sample("deepseek_ocr_inference_seconds_count") == 1)  # the batch has ended...
    assert 0 < sample("deepseek_ocr_generated_tokens_total") < 5000  # ...long before its 5000 tokens
