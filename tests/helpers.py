"""What the test modules share, as plain functions: making uploads, posting them, reading answers, waiting.
Fixtures live in conftest.py; the real server's harness in live_server.py; stand-in checkpoints and servers in
standin_checkpoint.py and openai_standin.py."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import httpx
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry

from settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent

# Random weights never end their answer: every test caps generation, and reads a page once (a page ended by the
# cap would be read again: tests of that turn it on).
TEST_MAX_NEW_TOKENS = 6
WAIT_TIMEOUT_S = 120
PDF_COLORS = ("white", "black", "gray")


def has_native_classes() -> bool:
    """Whether transformers has the native DeepSeek-OCR-2 classes: the remote-code profile pins 4.46.3, which
    predates them. Imported here, not at the top: conftest.py sets the hub's variables before transformers loads."""
    import transformers

    return hasattr(transformers, "DeepseekOcr2ForConditionalGeneration")


def make_settings(checkpoint: Path, runs_dir: Path, **overrides: object) -> Settings:
    """The tests' settings: their own runs and history folders (side by side), generation capped."""
    values: dict[str, object] = {
        "ocr_model_path": str(checkpoint),
        "ocr_runs_dir": runs_dir,
        "ocr_history_dir": runs_dir.parent / "history",
        "ocr_data_dir": runs_dir.parent / "data",
        "ocr_max_new_tokens": TEST_MAX_NEW_TOKENS,
        "ocr_page_retries": 0,
    }
    values.update(overrides)
    return load_settings(**values)


def server_env(checkpoint: Path, runs_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a real server (live_server.Server) on `checkpoint`, its runs in `runs_dir`."""
    return {"DEEPSEEK_OCR_MODEL_PATH": str(checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(runs_dir),
            "DEEPSEEK_OCR_DATA_DIR": str(runs_dir.parent / "data"), **extra}


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child process, without the service's and the hub's variables."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("DEEPSEEK_", "HF_HUB_", "HF_ENDPOINT"))}
    return {**env, **extra}


def fake_hub_repo(cache: Path, repo: str, config: dict) -> Path:
    """A repo in a Hugging Face hub cache, laid out as huggingface_hub keeps it (refs/main → snapshots/<sha>)."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(config))
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(revision)
    return snapshot


# --- uploads ---------------------------------------------------------------------------------------------------

def image_bytes(size: tuple[int, int] = (640, 480), fmt: str = "PNG", color: str = "white", **save: object) -> bytes:
    """An image file with a dark block on it, so that the page is not blank."""
    image = Image.new("RGB", size, color)
    image.paste((20, 20, 20), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def make_pdf(sizes: tuple[tuple[int, int], ...] = ((200, 100), (150, 150), (100, 200))) -> bytes:
    """A PDF whose page N has sizes[N] points (72 per inch), each page a differently coloured picture."""
    pages = [Image.new("RGB", size, PDF_COLORS[i % len(PDF_COLORS)]) for i, size in enumerate(sizes)]
    buffer = io.BytesIO()
    pages[0].save(buffer, "PDF", save_all=True, append_images=pages[1:], resolution=72)
    return buffer.getvalue()


# --- requests and answers --------------------------------------------------------------------------------------

def post(client: httpx.Client, data: bytes, filename: str = "page.png", content_type: str = "image/png",
         headers: dict[str, str] | None = None, **fields: str) -> httpx.Response:
    """POST /api/ocr with `data` as the image file and `fields` as the form's text fields."""
    return client.post("/api/ocr", files={"image": (filename, data, content_type)}, data=fields, headers=headers)


def post_pdf(client: httpx.Client, data: bytes, **fields: str) -> httpx.Response:
    return post(client, data, filename="doc.pdf", content_type="application/pdf", **fields)


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    """A refusal as a user reads it: the status, and a sentence in `detail` that names each of `words`."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word.lower() in detail.lower(), detail


def parse_answer(data: bytes) -> tuple[int, bytes] | None:
    """(status, body) of an HTTP answer read off a raw socket; None while it has not all arrived."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in lines[1:] if line.lower().startswith(b"content-length:")), 0)
    return (int(lines[0].split(b" ")[1]), body[:length]) if len(body) >= length else None


def read_answer(sock: socket.socket) -> str:
    """The HTTP answer on a raw socket, head and body (as long as its Content-Length says), as text."""
    data = b""
    while parse_answer(data) is None:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a whole answer came: {data!r}"
        data += chunk
    return data.decode("latin-1")


def parse_events(lines: Iterable[str]) -> list[tuple[str, dict]]:
    """A text/event-stream body as (event, data) pairs; comments (keep-alives) are left out."""
    events, name, data = [], None, []
    for line in lines:
        if line == "":
            if name is not None or data:
                events.append((name or "message", json.loads("\n".join(data))))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].strip())
    return events


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent); prometheus_client writes labels sorted."""
    label_text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(label_text) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + "$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def registry_sample(registry: CollectorRegistry, name: str) -> float:
    """One series of an in-process Prometheus registry (Metrics().registry), summed over its labels; 0 when absent."""
    return sum(sample.value for family in registry.collect() for sample in family.samples if sample.name == name)


def metric(server_url: str, name: str, **labels: str) -> float:
    """One sample of a running server's /metrics (0 when absent)."""
    return metric_value(httpx.get(f"{server_url}/metrics", timeout=30).text, name, **labels)


# --- apps ------------------------------------------------------------------------------------------------------

def app_starter(settings_for: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """For a fixture to `yield from`: `start(*args, raise_server_exceptions=True, ready=True, **kwargs)` starts
    the app on `settings_for(*args, **kwargs)`, lifespan entered and, if `ready`, its model loaded (or failed);
    every app started is stopped when the fixture ends."""
    from app import create_app

    clients: list[TestClient] = []

    def start(*args: object, raise_server_exceptions: bool = True, ready: bool = True, **kwargs: object) -> TestClient:
        client = TestClient(create_app(settings_for(*args, **kwargs)), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        if ready:
            wait_ready(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


# --- waiting ---------------------------------------------------------------------------------------------------

def wait_ready(client: httpx.Client) -> None:
    """Until the app has loaded its model, or failed to: its /health says so."""
    def settled() -> bool:
        response = client.get("/health")
        return response.status_code == 200 or response.json().get("status") == "error"

    wait_until(settled)


def wait_until(condition: Callable[[], bool], timeout_s: float = WAIT_TIMEOUT_S, interval_s: float = 0.05) -> None:
    """Polls `condition` until it holds; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(interval_s)
