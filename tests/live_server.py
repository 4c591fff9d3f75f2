"""The real server for tests: `uvicorn app:app` in a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator

import httpx

from helpers import ROOT, TEST_MAX_NEW_TOKENS

STARTUP_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, env: dict[str, str], capped: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's logging.
        self.log = tempfile.TemporaryFile("w+")
        # Nothing of the server's is left in the repository: the history goes to a folder of its own.
        self.history = tempfile.TemporaryDirectory(prefix="history-")
        # Random weights never end their answer: generation is capped, and a page read once (not again for ending
        # by the cap), unless the test says otherwise.
        defaults = {"DEEPSEEK_OCR_HISTORY_DIR": self.history.name, "DEEPSEEK_OCR_DATA_DIR": self.history.name,
                    "DEEPSEEK_OCR_PAGE_RETRIES": "0"}
        if capped:  # `capped=False`: the checkpoint's own cap (the demo's) is what the test looks at
            defaults["DEEPSEEK_OCR_MAX_NEW_TOKENS"] = str(TEST_MAX_NEW_TOKENS)
        env = {**defaults, **env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env={**base, **env}, stdout=self.log, stderr=subprocess.STDOUT, text=True,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self) -> None:
        wait_healthy(self.url, lambda: self.process.poll() is None, self.output)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.history.cleanup()


def wait_healthy(url: str, running: Callable[[], bool], output: Callable[[], str],
                 timeout_s: float = STARTUP_TIMEOUT_S, interval_s: float = 0.1) -> None:
    """Until GET {url}/health answers 200; fails at once, with the output, if the server stops `running` first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not running():
            raise RuntimeError(f"{url} exited: {output()[-4000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"{url} did not become ready within {timeout_s:g} s: {output()[-4000:]}")


@contextlib.contextmanager
def serving(env: dict[str, str], capped: bool = True) -> Iterator[Server]:
    """A ready server for the `with` block, stopped (by its process id) afterwards."""
    server = Server(env, capped)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()

