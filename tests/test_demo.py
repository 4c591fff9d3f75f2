"""The demo (`./start.sh demo`, DEEPSEEK_OCR_MODEL_PATH=demo): a tiny random checkpoint built once into a cache
folder and served with every endpoint working; and where the checkpoint comes from when none is named."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import dsocr.demo as demo
from app import create_app
from dsocr.engines.loading import DEFAULT_REPO, ModelPathError, detect_engine, detect_family, fetch_config, model_source
from dsocr.catalogue import ModelFamily
from helpers import (
    ROOT, fake_hub_repo, has_native_classes, image_bytes, make_pdf, metric, parse_events, subprocess_env,
)
from live_server import free_port, serving
from settings import EngineChoice, load_settings

needs_native = pytest.mark.skipif(not has_native_classes(), reason="the demo needs transformers' native DeepSeek-OCR-2 classes")
pytestmark = pytest.mark.usefixtures("clean_env")


# --- the demo checkpoint: built once, atomically, rebuilt when the builder changes ---------------------------------


def test_the_demo_folder_is_in_the_user_cache_unless_moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert demo.demo_dir() == tmp_path / "cache" / "deepseek-ocr-service" / "demo-checkpoint"
    monkeypatch.setenv("DEEPSEEK_OCR_DEMO_DIR", str(tmp_path / "elsewhere"))
    assert demo.demo_dir() == tmp_path / "elsewhere"


@needs_native
def test_the_demo_checkpoint_is_built_once_reused_and_rebuilt_for_a_new_builder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import dsocr.tiny.checkpoint as tiny_checkpoint  # the native classes: not in the remote-code profile

    folder = demo.ensure_demo_checkpoint(tmp_path / "demo-checkpoint")
    assert demo.is_current(folder)
    assert {"config.json", "model.safetensors", "tokenizer.json", demo.STAMP_FILE} <= {p.name for p in folder.iterdir()}
    stamp, weights = (folder / demo.STAMP_FILE).stat(), (folder / "model.safetensors").stat()

    def no_build(*args: object, **kwargs: object) -> Path:
        raise AssertionError("a built demo checkpoint was built again")

    monkeypatch.setattr(tiny_checkpoint, "build_native_checkpoint", no_build)
    assert demo.ensure_demo_checkpoint(folder) == folder
    assert (folder / demo.STAMP_FILE).stat().st_mtime_ns == stamp.st_mtime_ns
    assert (folder / "model.safetensors").stat().st_mtime_ns == weights.st_mtime_ns

    # Another builder (its code, or the transformers that writes the checkpoint): built again, in place.
    monkeypatch.undo()
    monkeypatch.setattr(demo, "builder_version", lambda: "a-newer-builder")
    assert demo.ensure_demo_checkpoint(folder) == folder
    assert (folder / demo.STAMP_FILE).read_text().strip() == "a-newer-builder"
    assert (folder / "model.safetensors").stat().st_ino != weights.st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo-checkpoint.lock", "demo-checkpoint"]


KILLED_BUILD = """
import sys
import dsocr.tiny.checkpoint as checkpoint
from dsocr.demo import ensure_demo_checkpoint

build = checkpoint.build_native_checkpoint

def build_then_wait(folder, **options):
    build(folder, **options)
    print(folder, flush=True)
    sys.stdin.read()  # killed here: the checkpoint is written, not yet moved into place

checkpoint.build_native_checkpoint = build_then_wait
ensure_demo_checkpoint()
"""


@needs_native
def test_a_build_killed_midway_leaves_no_checkpoint_and_the_next_start_builds_one(tmp_path: Path) -> None:
    folder = tmp_path / "demo-checkpoint"
    child = subprocess.Popen([sys.executable, "-c", KILLED_BUILD], cwd=ROOT, text=True, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, env=subprocess_env(DEEPSEEK_OCR_DEMO_DIR=str(folder)))
    try:
        temporary = Path(child.stdout.readline().strip())
    finally:
        child.kill()
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert temporary.parent == tmp_path and (temporary / "config.json").exists()
    assert not folder.exists()  # never half a checkpoint where the service looks

    assert demo.ensure_demo_checkpoint(folder) == folder
    assert demo.is_current(folder)
    assert not temporary.exists()  # the leftover is cleared


def test_a_folder_that_is_not_a_demo_checkpoint_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "my-models"
    mine.mkdir()
    (mine / "precious.bin").write_text("keep me")
    with pytest.raises(demo.DemoError, match="DEEPSEEK_OCR_DEMO_DIR"):
        demo.ensure_demo_checkpoint(mine)
    assert (mine / "precious.bin").read_text() == "keep me"


# --- the demo served ------------------------------------------------------------------------------------------------


def test_the_demo_caps_generation_unless_the_cap_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo.demo_settings(load_settings(ocr_model_path="demo")).ocr_max_new_tokens == demo.DEMO_MAX_NEW_TOKENS
    assert demo.demo_settings(load_settings(ocr_model_path="demo", ocr_max_new_tokens=9)).ocr_max_new_tokens == 9
    monkeypatch.setenv("DEEPSEEK_OCR_MAX_NEW_TOKENS", "8192")
    assert demo.demo_settings(load_settings(ocr_model_path="demo")).ocr_max_new_tokens == 8192


def test_health_says_demo_before_the_model_loads(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "deepseek_ocr2"}))
    for model_path, expected in (("demo", True), (str(folder), False)):
        settings = load_settings(ocr_model_path=model_path, ocr_runs_dir=tmp_path / "runs")
        response = TestClient(create_app(settings)).get("/health")  # lifespan not started: loading
        assert response.status_code == 503
        assert response.json()["demo"] is expected


def test_the_demo_is_refused_on_the_remote_code_engine(tmp_path: Path) -> None:
    settings = load_settings(ocr_model_path="demo", ocr_engine=EngineChoice.remote_code)
    with pytest.raises(ModelPathError, match="native"):
        model_source(settings)


@needs_native
def test_a_demo_server_says_so_and_serves_images_pdfs_and_streams(tmp_path: Path) -> None:
    env = {"DEEPSEEK_OCR_MODEL_PATH": "demo", "DEEPSEEK_OCR_DEMO_DIR": str(tmp_path / "demo-checkpoint"),
           "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs")}
    with serving(env, capped=False) as server:
        health = httpx.get(f"{server.url}/health", timeout=30).json()
        assert (health["status"], health["demo"], health["engine"]) == ("ok", True, "transformers")
        assert health["model"] == str(tmp_path / "demo-checkpoint")
        warnings = [line for line in server.output().splitlines() if "WARNING" in line and "DEMO" in line]
        assert len(warnings) == 1 and "random" in warnings[0]

        page = httpx.post(f"{server.url}/api/ocr", files={"image": ("page.png", image_bytes((1240, 1754)), "image/png")},
                          data={"mode": "gundam"}, timeout=300)
        assert page.status_code == 200, page.text
        assert page.json()["rawText"] and page.json()["finishReason"] == "length"
        # The demo's cap, since DEEPSEEK_OCR_MAX_NEW_TOKENS is not set: random weights never stop before it.
        assert metric(server.url, "deepseek_ocr_generated_tokens_total") == demo.DEMO_MAX_NEW_TOKENS

        pdf = httpx.post(f"{server.url}/api/ocr", files={"image": ("doc.pdf", make_pdf(), "application/pdf")},
                         data={"mode": "base", "pages": "1-2"}, timeout=300)
        assert pdf.status_code == 200, pdf.text
        assert [p["page"] for p in pdf.json()["pages"]] == [1, 2]

        with httpx.stream("POST", f"{server.url}/api/ocr/stream", files={"image": ("a.png", image_bytes(), "image/png")},
                          data={"mode": "base"}, timeout=300) as response:
            assert response.status_code == 200
            events = parse_events(response.iter_lines())
        names = [name for name, _ in events]
        assert "delta" in names and names[-1] == "result"


# --- where the checkpoint comes from when DEEPSEEK_OCR_MODEL_PATH is not set ---------------------------------------


def test_unset_the_model_path_is_the_seeds_folder_when_it_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seed = tmp_path / "ocr_project" / "model"
    seed.mkdir(parents=True)
    (seed / "config.json").write_text(json.dumps({"model_type": "deepseek_ocr2"}))
    (tmp_path / "service" / "main").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "service" / "main")
    assert model_source(load_settings()) == str(seed.resolve())


def test_unset_and_without_the_seeds_folder_it_is_the_hub_repo_from_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from huggingface_hub import constants

    fake_hub_repo(tmp_path / "hub", DEFAULT_REPO, {"model_type": "deepseek_ocr2"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="deepseek_ocr"):
        assert model_source(load_settings()) == DEFAULT_REPO
    assert str(tmp_path / "hub") in caplog.text  # where it comes from is logged


def test_a_repo_id_of_the_original_layout_runs_through_remote_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    original = {"model_type": "deepseek_vl_v2", "architectures": ["DeepseekOCRForCausalLM"],
                "auto_map": {"AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM"}}
    fake_hub_repo(tmp_path / "hub", "deepseek-ai/DeepSeek-OCR", original)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert model_source(load_settings(ocr_model_path="deepseek-ai/DeepSeek-OCR")) == "deepseek-ai/DeepSeek-OCR"
    config = fetch_config("deepseek-ai/DeepSeek-OCR")
    assert (detect_engine(config), detect_family(config)) == (EngineChoice.remote_code, ModelFamily.v1)


def start_sh_profile(tmp_path: Path, **env: str) -> str:
    done = subprocess.run(["bash", str(ROOT / "start.sh"), "--dry-run"], capture_output=True, text=True, timeout=60,
                          env=subprocess_env(HF_HUB_CACHE=str(tmp_path / "hub"), **env))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0]


def test_start_sh_picks_the_profile_of_a_repo_id_from_the_hub_cache(tmp_path: Path) -> None:
    fake_hub_repo(tmp_path / "hub", "someone/original-ocr", {"model_type": "deepseek_vl_v2", "auto_map": {"AutoModel": "m.M"}})
    fake_hub_repo(tmp_path / "hub", "someone/native-ocr", {"model_type": "deepseek_ocr2"})
    assert "remote-code" in start_sh_profile(tmp_path, DEEPSEEK_OCR_MODEL_PATH="someone/original-ocr")
    assert "native" in start_sh_profile(tmp_path, DEEPSEEK_OCR_MODEL_PATH="someone/native-ocr")
    # Not cached: the official original checkpoints are known; anything else is native.
    assert "remote-code" in start_sh_profile(tmp_path, DEEPSEEK_OCR_MODEL_PATH="deepseek-ai/DeepSeek-OCR-2")
    assert "native" in start_sh_profile(tmp_path, DEEPSEEK_OCR_MODEL_PATH="someone/unknown")


def test_start_sh_demo_serves_the_demo_in_the_native_profile(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(ROOT / "start.sh"), "demo", "--dry-run"], capture_output=True, text=True,
                          timeout=60, env=subprocess_env())
    assert done.returncode == 0, done.stderr
    assert "profile: native" in done.stdout and "model: demo" in done.stdout
    refused = subprocess.run(["bash", str(ROOT / "start.sh"), "--profile", "remote-code", "demo"], capture_output=True,
                             text=True, timeout=60, env=subprocess_env())
    assert refused.returncode != 0 and "native" in refused.stderr
    assert "./start.sh demo" in subprocess.run(["bash", str(ROOT / "start.sh"), "--help"], capture_output=True,
                                               text=True, timeout=60).stdout


def start_without_a_model_path(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """`uvicorn app:app` with DEEPSEEK_OCR_MODEL_PATH unset, from a folder where ../../ocr_project/model is absent."""
    cwd = tmp_path / "service" / "main"
    cwd.mkdir(parents=True)
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(ROOT), "--host", "127.0.0.1", "--port", "0"],
        cwd=cwd, capture_output=True, text=True, timeout=120,
        env=subprocess_env(HF_HUB_CACHE=str(tmp_path / "empty-hub"), DEEPSEEK_OCR_RUNS_DIR=str(tmp_path / "runs"),
                           DEEPSEEK_OCR_HISTORY_DIR=str(tmp_path / "history"), **env),
    )


def assert_one_line_naming_the_demo(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if "./start.sh demo" in line]
    assert len(lines) == 1, done.stderr
    assert "DEEPSEEK_OCR_MODEL_PATH" in lines[0] and DEFAULT_REPO in lines[0]
    return lines[0]


def test_offline_without_a_checkpoint_startup_fails_at_once_naming_the_demo(tmp_path: Path) -> None:
    line = assert_one_line_naming_the_demo(start_without_a_model_path(tmp_path, HF_HUB_OFFLINE="1"))
    assert "HF_HUB_OFFLINE" in line


def test_an_unreachable_hub_fails_startup_at_once_without_retrying(tmp_path: Path) -> None:
    # Nothing listens on this port: the connection is refused, as without network.
    done = start_without_a_model_path(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    line = assert_one_line_naming_the_demo(done)
    assert "cannot be reached" in line
    assert "Retrying" not in done.stderr  # huggingface_hub's own retries (half a minute) never start
