"""Concurrency on the real server: batching, backpressure, deadlines, dropped clients, metrics."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from helpers import image_bytes, make_pdf, metric, metric_value, parse_events, read_answer, server_env, wait_until
from live_server import Server

PAGES = [image_bytes((640, 480), color=color) for color in ("white", "black", "gray", "red")]


def start_server(checkpoint: Path, runs: Path, **env: str) -> Server:
    server = Server(server_env(checkpoint, runs, **env))
    server.wait_ready()
    return server


def ocr(server: Server, data: bytes, **fields: str) -> dict:
    response = httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", data)}, data=fields, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


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
        answer = read_answer(sock)
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
        return metric_value(client.get("/metrics").text, name)

    wait_until(lambda: sample("deepseek_ocr_inference_seconds_count") == 1)  # the batch has ended...
    assert 0 < sample("deepseek_ocr_generated_tokens_total") < 5000  # ...long before its 5000 tokens
