"""Fixtures: tiny real checkpoints built once per session, and the app started on them. Plain helper functions
are in helpers.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

# Set before transformers is imported: no network, and remote code copied into a throwaway module cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="hf-modules-"))
# Every server a test starts runs on asyncio's loop, as start.sh and the container run it (uvloop, installed for
# tests/test_page_images.py, would otherwise be uvicorn's choice).
os.environ["UVICORN_LOOP"] = "asyncio"

import transformers  # noqa: E402

from helpers import app_starter, has_native_classes, make_settings, server_env  # noqa: E402
from live_server import Server, serving  # noqa: E402
from openai_standin import OpenAIStandIn  # noqa: E402
from settings import Settings  # noqa: E402
from standin_checkpoint import build_standin_checkpoint  # noqa: E402


def _native(folder: Path, **options: object) -> Path:
    if not has_native_classes():
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


def _settings_for(runs: Path, request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """The tests' settings with `overrides`, on `checkpoint` or the native one, their runs in `runs`."""
    def settings_for(checkpoint: Path | None = None, **overrides: object) -> Settings:
        return make_settings(checkpoint or request.getfixturevalue("native_checkpoint"), runs, **overrides)

    return settings_for


@pytest.fixture
def start_client(runs_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., TestClient]]:
    """`start(checkpoint=None, raise_server_exceptions=True, **overrides)`: an app of the test's own on the tests'
    settings with `overrides` (see helpers.app_starter), for tests that change settings or state. `checkpoint=`
    picks another checkpoint than the native one."""
    yield from app_starter(_settings_for(runs_dir, request))


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """The runs folder of the apps `start_client` starts."""
    return tmp_path / "runs"


@pytest.fixture(scope="module")
def start_module_client(client_runs_dir: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., TestClient]]:
    """Starts apps that serve every test of the module from then on (see helpers.app_starter), for tests that only read
    or set what they read themselves: a test that changes settings or state another test could see (history
    listings, tasks, metrics, files) starts an app of its own with `start_client`."""
    yield from app_starter(_settings_for(client_runs_dir, request))


@pytest.fixture(scope="module")
def client_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runs folder of the module's shared apps (`client`, `start_module_client`)."""
    return tmp_path_factory.mktemp("shared-app") / "runs"


@pytest.fixture(scope="module")
def client(start_module_client: Callable[..., TestClient]) -> TestClient:
    """One app per test module, on the native checkpoint with the tests' settings (see start_module_client)."""
    return start_module_client()


@pytest.fixture(scope="module")
def real_server(native_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server (`uvicorn app:app`) on the native checkpoint, one per test module."""
    env = server_env(native_checkpoint, tmp_path_factory.mktemp("real-server-runs"), DEEPSEEK_OCR_MAX_NEW_TOKENS="8")
    with serving(env) as server:
        yield server


@pytest.fixture
def openai_standin() -> Iterator[OpenAIStandIn]:
    """A stand-in vLLM server (an OpenAI-compatible one that records what it receives; see openai_standin.py)."""
    server = OpenAIStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def standins() -> Iterator[list[OpenAIStandIn]]:
    """Two stand-in vLLM servers, for what the service does between servers (balancing, retries, health)."""
    servers = [OpenAIStandIn().start(), OpenAIStandIn().start()]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def module_standin() -> Iterator[OpenAIStandIn]:
    """One stand-in vLLM server for a whole module (see openai_standin.py); a test that changes its script puts it
    back, or is the module's last."""
    server = OpenAIStandIn().start()
    yield server
    server.stop()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DEEPSEEK_* variable of the shell that runs the tests reaches the settings under test."""
    for name in list(os.environ):
        if name.upper().startswith("DEEPSEEK_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (a throwaway cluster; see tests/postgres.py)."""
    from postgres import postgres_server

    yield from postgres_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend of the store in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite3'}"
    from postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_server_url"))
