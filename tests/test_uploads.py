"""The real server: `uvicorn app:app` on a loopback port, driven over sockets like a client would."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import image_bytes
from live_server import STARTUP_TIMEOUT_S, Server

@pytest.fixture
def server(native_checkpoint: Path, tmp_path: Path) -> Iterator[Server]:
    running = Server({
        "DEEPSEEK_OCR_MODEL_PATH": str(native_checkpoint),
        "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
        "DEEPSEEK_OCR_MAX_NEW_TOKENS": "300",
        "DEEPSEEK_MAX_IMAGE_MB": "1",
    })
    running.wait_ready()
    yield running
    running.stop()


def test_a_real_image_through_the_real_server(server: Server, tmp_path: Path) -> None:
    data = image_bytes((900, 700), fmt="JPEG")
    response = httpx.post(f"{server.url}/api/ocr", files={"image": ("scan.jpg", data, "image/jpeg")},
                          data={"mode": "base", "prompt": "Free OCR."}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["mode"], body["prompt"], body["fileName"], body["fileSize"]) == ("base", "<image>\nFree OCR.", "scan.jpg", len(data))
    assert (body["imageWidth"], body["imageHeight"], body["finishReason"]) == (900, 700, "length")
    assert body["rawText"]
    assert list((tmp_path / "runs").iterdir()) == []


def test_probes_answer_while_the_model_works(server: Server) -> None:
    done = threading.Event()

    def ocr() -> None:
        httpx.post(f"{server.url}/api/ocr", files={"image": ("big.png", image_bytes((1000, 800)))}, timeout=300)
        done.set()

    worker = threading.Thread(target=ocr)
    worker.start()
    time.sleep(0.5)  # let the request reach the model: 300 tokens after a six-tile prefill take seconds here
    answers = [httpx.get(f"{server.url}{path}", timeout=30).status_code for path in ("/health", "/health/live")]
    answered_during_ocr = not done.is_set()
    worker.join()
    assert answers == [200, 200]
    assert answered_during_ocr


def _read_status(sock: socket.socket) -> int:
    response = b""
    while b"\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            break
        response += chunk
    return int(response.split(b" ")[1])


def _request_head(port: int, extra: str) -> bytes:
    return (f"POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=xyz\r\n{extra}\r\n").encode()


def test_declared_oversize_body_is_refused_before_it_is_sent(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, f"Content-Length: {10 * 1024 * 1024 * 1024}\r\n"))
        # Not one byte of the 10 GB body is sent: the answer must come from the header alone.
        assert _read_status(sock) == 413


def test_chunked_oversize_body_is_refused_while_streaming(server: Server) -> None:
    sent = 0
    planned = 50 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, "Transfer-Encoding: chunked\r\n"))
        part = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        block = b"\0" * (256 * 1024)
        sock.settimeout(0.05)
        status = None
        while sent < planned and status is None:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                sent += len(block)
                status = _read_status(sock)
            except socket.timeout:
                continue
            except OSError:  # the server closed the connection after answering
                break
        if status is None:
            sock.settimeout(30)
            status = _read_status(sock)
    assert status == 413
    assert sent < planned  # refused long before the whole body arrived
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


def test_a_missing_model_path_ends_startup_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(missing), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs")})
    try:
        server.process.wait(timeout=STARTUP_TIMEOUT_S)
    finally:
        server.stop()
    output = server.output()
    assert server.process.returncode != 0
    assert str(missing) in output and "DEEPSEEK_OCR_MODEL_PATH" in output


def test_a_client_that_leaves_mid_upload_is_counted_as_gone_not_as_a_fault(server: Server) -> None:
    from live_server import metric

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, "Content-Length: 100000\r\n"))
        sock.sendall(b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + b"\0" * 1000)
    deadline = time.monotonic() + 30
    while metric(server.url, "deepseek_ocr_failures_total", reason="client_disconnected") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert metric(server.url, "deepseek_ocr_failures_total", reason="internal") == 0
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


def test_after_a_413_on_a_chunked_body_the_connection_is_closed_not_read_on(server: Server) -> None:
    block = b"\0" * (64 * 1024)
    sent_after_answer = 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, "Transfer-Encoding: chunked\r\n"))
        part = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        answered = False
        try:
            while sent_after_answer < 64 * 1024 * 1024:
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                if answered:
                    sent_after_answer += len(block)
                    continue
                sock.settimeout(0.001)
                try:
                    answered = sock.recv(4096).startswith(b"HTTP/1.1 413")
                except socket.timeout:
                    pass
                sock.settimeout(30)
        except OSError:  # the server closed the connection: what we wanted
            pass
    assert sent_after_answer < 16 * 1024 * 1024  # not read on for the whole body


@pytest.fixture
def impatient_server(native_checkpoint: Path, tmp_path: Path) -> Iterator[Server]:
    running = Server({"DEEPSEEK_OCR_MODEL_PATH": str(native_checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
                      "DEEPSEEK_OCR_UPLOAD_TIMEOUT_S": "1", "DEEPSEEK_OCR_MAX_QUEUE": "1"})
    running.wait_ready()
    yield running
    running.stop()


def test_a_stalled_upload_is_408_and_gives_its_queue_slot_back(impatient_server: Server) -> None:
    from live_server import metric

    server = impatient_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, "Content-Length: 100000\r\n") + b"--xyz\r\n")  # then nothing
        sock.settimeout(60)
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"DEEPSEEK_OCR_UPLOAD_TIMEOUT_S" in answer
    assert metric(server.url, "deepseek_ocr_admitted") == 0
    response = httpx.post(f"{server.url}/api/ocr", files={"image": ("a.png", image_bytes())}, timeout=120)
    assert response.status_code == 200  # the only slot is free again
