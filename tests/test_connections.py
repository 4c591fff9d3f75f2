"""Connections as the real server (`uvicorn app:app --http dsocr.api.connections:GuardedH11Protocol`, as start.sh and
the container start it) accepts them: a request head that does not arrive in time closes its connection,
connections past DEEPSEEK_OCR_MAX_CONNECTIONS are closed at once, and a flood past the process's file descriptors
leaves the probes answering once it passes and the log quiet. Driven over raw sockets; the service serves through
vLLM at an address where nothing listens, so that no model loads (/health/live answers all the same)."""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx

from helpers import ROOT, wait_until
from live_server import free_port

GUARDED_HTTP = "dsocr.api.connections:GuardedH11Protocol"
STARTUP_TIMEOUT_S = 60


@contextlib.contextmanager
def guarded_server(tmp_path: Path, fd_limit: int | None = None, **env: str) -> Iterator[tuple[str, Path]]:
    """The server as start.sh starts it, with `env`; yields its address and its log file."""
    port = free_port()
    log = tmp_path / "server.log"
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
    base.update(DEEPSEEK_OCR_ENGINE="vllm", DEEPSEEK_OCR_VLLM_URLS=f"http://127.0.0.1:{free_port()}",
                DEEPSEEK_OCR_RUNS_DIR=str(tmp_path / "runs"), DEEPSEEK_OCR_DATA_DIR=str(tmp_path / "data"),
                DEEPSEEK_OCR_HISTORY_DIR=str(tmp_path / "history"), **env)

    def limit_descriptors() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port), "--http",
             GUARDED_HTTP], cwd=ROOT, env=base, stdout=output, stderr=subprocess.STDOUT, preexec_fn=limit_descriptors)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: live(url) or process.poll() is not None, STARTUP_TIMEOUT_S)
        assert process.poll() is None, log.read_text()
        yield url, log
    finally:
        process.terminate()
        process.wait(60)


def live(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/live", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes the connection (or resets it) within `within_s`, sending nothing."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_request_head_that_does_not_arrive_in_time_closes_the_connection(tmp_path: Path) -> None:
    with guarded_server(tmp_path, DEEPSEEK_OCR_HEADER_TIMEOUT_S="1") as (url, _):
        silent, partial, kept_alive = connect(url), connect(url), connect(url)
        partial.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")  # the head's blank line never comes
        kept_alive.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b'"alive"}' not in answer:  # the whole answer: its head and body may come in two reads
            chunk = kept_alive.recv(4096)
            assert chunk, answer
            answer += chunk
        assert b"200 OK" in answer
        kept_alive.sendall(b"GET /health/live HTTP/1.1\r\n")  # a second request's head, unfinished
        for sock in (silent, partial, kept_alive):
            assert closed_by_server(sock, within_s=10)
            sock.close()
        assert live(url)  # whole heads are answered as ever


def test_connections_past_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    with guarded_server(tmp_path, DEEPSEEK_OCR_MAX_CONNECTIONS="20", DEEPSEEK_OCR_HEADER_TIMEOUT_S="5") as (url, log):
        socks = [connect(url) for _ in range(40)]
        try:
            # The server sends nothing on these: a readable one is closed. Well before the head deadline (5 s),
            # twenty are closed, the first twenty stay open.
            wait_until(lambda: len(select.select(socks, [], [], 0)[0]) >= 20, timeout_s=2)
            assert len(select.select(socks, [], [], 0)[0]) == 20
            wait_until(lambda: live(url))  # the rest are closed by the head deadline: room again
            assert "closed at once" in log.read_text() and "DEEPSEEK_OCR_MAX_CONNECTIONS=20" in log.read_text()
        finally:
            for sock in socks:
                sock.close()


def test_a_flood_past_the_descriptor_limit_passes_and_the_log_stays_quiet(tmp_path: Path) -> None:
    with guarded_server(tmp_path, fd_limit=128, DEEPSEEK_OCR_HEADER_TIMEOUT_S="2") as (url, log):
        socks = [connect(url) for _ in range(300)]  # more than the server has descriptors: accept() fails
        try:
            wait_until(lambda: "socket.accept() failed" in log.read_text())
            wait_until(lambda: live(url))  # the head deadline frees the descriptors
        finally:
            for sock in socks:
                sock.close()
        text = log.read_text()
        assert "Traceback" not in text, text[-3000:]
        assert text.count("socket.accept()") == 1, text[-3000:]
        assert "DEEPSEEK_OCR_MAX_CONNECTIONS" in text


def test_a_flood_of_requests_uvicorn_cannot_parse_logs_one_line(tmp_path: Path) -> None:
    with guarded_server(tmp_path) as (url, log):
        for _ in range(30):
            with connect(url) as sock:
                sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                assert b"400 Bad Request" in sock.recv(4096)
        assert live(url)
        assert log.read_text().count("Invalid HTTP request received.") == 1, log.read_text()[-3000:]
