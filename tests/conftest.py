"""Fixtures: tiny real checkpoints built once per session, and the app started on them."""

from __future__ import annotations

import io
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

# Set before transformers is imported: no network, and remote code copied into a throwaway module cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="hf-modules-"))

import transformers  # noqa: E402

from app import create_app  # noqa: E402
from settings import Settings, load_settings  # noqa: E402
from standin_checkpoint import build_standin_checkpoint  # noqa: E402

# The remote-code profile pins transformers 4.46.3, which predates the native DeepSeek-OCR-2 classes.
HAS_NATIVE_CLASSES = hasattr(transformers, "DeepseekOcr2ForConditionalGeneration")

# Random weights never end their answer: every test caps generation.
TEST_MAX_NEW_TOKENS = 6
READY_TIMEOUT_S = 120


def _native(folder: Path, **options: object) -> Path:
    if not HAS_NATIVE_CLASSES:
        pytest.skip(f"transformers {transformers.__version__} has no native DeepSeek-OCR-2 classes")
    from dsocr.tiny.checkpoint import build_native_checkpoint

    return build_native_checkpoint(folder, **options)


@pytest.fixture(scope="session")
def native_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _native(tmp_path_factory.mktemp("native-checkpoint"))


@pytest.fixture(scope="session")
def stopping_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _native(tmp_path_factory.mktemp("stopping-checkpoint"), stops_at_once=True)


@pytest.fixture
def standin_v1(tmp_path: Path) -> Path:
    """Stand-in for an original deepseek-ai/DeepSeek-OCR folder (remote code); see standin_checkpoint.py."""
    return build_standin_checkpoint(tmp_path / "standin-deepseek-ocr", family="v1")


@pytest.fixture
def standin_v2(tmp_path: Path) -> Path:
    """Stand-in for an original deepseek-ai/DeepSeek-OCR-2 folder (remote code)."""
    return build_standin_checkpoint(tmp_path / "standin-deepseek-ocr-2", family="v2")


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
        "ocr_history_dir": runs_dir.parent / "history",
        "ocr_max_new_tokens": TEST_MAX_NEW_TOKENS,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def start_client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., TestClient]]:
    """Starts the app (lifespan included) with settings overrides; `checkpoint=` picks another checkpoint
    than the native one."""
    clients: list[TestClient] = []

    def start(checkpoint: Path | None = None, raise_server_exceptions: bool = True, **overrides: object) -> TestClient:
        checkpoint = checkpoint or request.getfixturevalue("native_checkpoint")
        settings = make_settings(checkpoint, tmp_path / "runs", **overrides)
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
