"""Uploads as the real server (`uvicorn app:app` on a loopback port) receives them, driven over sockets like a
client would: size limits declared or found while streaming, clients that leave or stall mid-upload."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from helpers import image_bytes, metric, parse_answer, read_answer, server_env, wait_until
from live_server import Server, serving

LIMIT_MB = 1


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads") / "runs"


@pytest.fixture(scope="module")
def server(native_checkpoint: Path, runs: Path) -> Iterator[Server]:
    with serving(server_env(native_checkpoint, runs, DEEPSEEK_OCR_MAX_NEW_TOKENS="300",
                            DEEPSEEK_MAX_IMAGE_MB=str(LIMIT_MB))) as running:
        yield running


def test_a_real_image_through_the_real_server(server: Server, runs: Path) -> None:
    data = image_bytes((900, 700), fmt="JPEG")
    response = httpx.post(f"{server.url}/api/ocr", files={"image": ("scan.jpg", data, "image/jpeg")},
                          data={"mode": "base", "prompt": "Free OCR."}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["mode"], body["prompt"], body["fileName"], body["fileSize"]) == ("base", "<image>\nFree OCR.", "scan.jpg", len(data))
    assert (body["imageWidth"], body["imageHeight"], body["finishReason"]) == (900, 700, "length")
    assert body["rawText"]
    assert list(runs.iterdir()) == []


def _request_head(port: int, extra: str) -> bytes:
    return (f"POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=xyz\r\n{extra}\r\n").encode()


def _assert_too_large(answer: bytes) -> None:
    """The 413 a client receives: its status and the JSON sentence naming the limit and its variable."""
    parsed = parse_answer(answer)
    assert parsed is not None, f"no whole answer arrived: {answer!r}"
    status, body = parsed
    assert status == 413, answer
    detail = json.loads(body)["detail"]
    assert f"the limit is {LIMIT_MB} MB" in detail and "DEEPSEEK_MAX_IMAGE_MB" in detail, detail


def _stream_chunks(sock: socket.socket, block_size: int, limit: int, go_on_after_the_answer: bool) -> tuple[bytes, int, int]:
    """Sends a chunked upload of up to `limit` bytes in blocks, reading what the server answers between blocks.
    Returns (the answer, bytes sent before it was whole, bytes sent after), until the server closes the
    connection, the limit is sent, or the answer is whole and `go_on_after_the_answer` is false."""
    sock.sendall(_request_head(sock.getpeername()[1], "Transfer-Encoding: chunked\r\n"))
    part = b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
    block = b"\0" * block_size
    answer, before, after = b"", 0, 0
    try:
        while before + after < limit:
            answered = parse_answer(answer) is not None
            if answered and not go_on_after_the_answer:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
            if answered:
                after += len(block)
                continue
            before += len(block)
            sock.settimeout(0.001)
            try:
                answer += sock.recv(65536)
            except socket.timeout:
                pass
            sock.settimeout(30)
    except OSError:  # the server closed the connection after answering
        pass
    if parse_answer(answer) is None:  # what it sent before closing is still there to read
        sock.settimeout(30)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer, before, after


def test_declared_oversize_body_is_refused_before_it_is_sent(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, f"Content-Length: {10 * 1024 * 1024 * 1024}\r\n"))
        # Not one byte of the 10 GB body is sent: the answer must come from the header alone.
        _assert_too_large(read_answer(sock).encode("latin-1"))


def test_chunked_oversize_body_is_refused_while_streaming(server: Server) -> None:
    planned = 50 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        answer, sent, _ = _stream_chunks(sock, 256 * 1024, planned, go_on_after_the_answer=False)
    _assert_too_large(answer)
    assert sent < planned  # refused long before the whole body arrived
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


def test_a_client_that_leaves_mid_upload_is_counted_as_gone_not_as_a_fault(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request_head(server.port, "Content-Length: 100000\r\n"))
        sock.sendall(b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + b"\0" * 1000)
    wait_until(lambda: metric(server.url, "deepseek_ocr_failures_total", reason="client_disconnected") >= 1, timeout_s=30)
    assert metric(server.url, "deepseek_ocr_failures_total", reason="internal") == 0
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200


def test_after_a_413_on_a_chunked_body_the_connection_is_closed_not_read_on(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        answer, _, sent_after_answer = _stream_chunks(sock, 64 * 1024, 64 * 1024 * 1024, go_on_after_the_answer=True)
    _assert_too_large(answer)  # the client was told why
    assert sent_after_answer < 16 * 1024 * 1024  # and the server did not read on for the whole body


@pytest.fixture
def impatient_server(native_checkpoint: Path, tmp_path: Path) -> Iterator[Server]:
    # A short answer: the test is about the queue slot, not the generation (8192 tokens by default).
    with serving(server_env(native_checkpoint, tmp_path / "runs", DEEPSEEK_OCR_UPLOAD_TIMEOUT_S="1",
                            DEEPSEEK_OCR_MAX_QUEUE="1", DEEPSEEK_OCR_MAX_NEW_TOKENS="8")) as running:
        yield running


def test_a_stalled_upload_is_408_and_gives_its_queue_slot_back(impatient_server: Server) -> None:
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
