"""Fixtures: tiny real checkpoints built once per session, and the app started on them."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app import create_app
from settings import Settings, load_settings
from tiny_checkpoint import build_native_checkpoint

# Random weights never end their answer: every test caps generation.
TEST_MAX_NEW_TOKENS = 6
READY_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def native_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_native_checkpoint(tmp_path_factory.mktemp("native-checkpoint"))


@pytest.fixture(scope="session")
def stopping_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_native_checkpoint(tmp_path_factory.mktemp("stopping-checkpoint"), stops_at_once=True)


def wait_ready(client: TestClient) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200 or response.json().get("status") == "error":
            return
        time.sleep(0.05)
    raise TimeoutError("the model did not load")


def make_settings(checkpoint: Path, runs_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "ocr_model_path": str(checkpoint),
        "ocr_runs_dir": runs_dir,
        "ocr_max_new_tokens": TEST_MAX_NEW_TOKENS,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def start_client(tmp_path: Path, native_checkpoint: Path) -> Iterator[Callable[..., TestClient]]:
    """Starts the app (lifespan included) with settings overrides; `checkpoint=` picks another checkpoint."""
    clients: list[TestClient] = []

    def start(checkpoint: Path | None = None, raise_server_exceptions: bool = True, **overrides: object) -> TestClient:
        settings = make_settings(checkpoint or native_checkpoint, tmp_path / "runs", **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(start_client: Callable[..., TestClient]) -> TestClient:
    return start_client()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def image_bytes(size: tuple[int, int] = (640, 480), fmt: str = "PNG", color: str = "white", **save: object) -> bytes:
    image = Image.new("RGB", size, color)
    # A dark block so that the page is not blank.
    image.paste((20, 20, 20), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()
