"""Probes: liveness always, readiness only once the model is loaded, both answered while the model works;
/api/modes describes the loaded family."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app import create_app
from dsocr.engines.loading import ModelPathError
from helpers import image_bytes, make_settings, metric, server_env, wait_until
from live_server import serving


def test_ready_health_names_model_engine_device_dtype_and_attention(client, native_checkpoint: Path) -> None:
    for path in ("/health", "/health/ready"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {
            "status": "ok",
            "modelLoaded": True,
            "modes": ["base", "gundam"],
            "model": str(native_checkpoint.resolve()),
            "engine": "transformers",
            "family": "deepseek-ocr-2",
            "device": "cpu",
            "dtype": "float32",
            # The default flash_attention_2 cannot run without CUDA: the service falls back to sdpa.
            "attnImplementation": "sdpa",
            "demo": False,
        }


def test_probes_answer_while_the_model_works(native_checkpoint: Path, tmp_path: Path) -> None:
    answer: list[httpx.Response] = []
    # 300 tokens after a six-tile prefill: seconds of work for the model on a CPU.
    with serving(server_env(native_checkpoint, tmp_path / "runs", DEEPSEEK_OCR_MAX_NEW_TOKENS="300")) as server:
        worker = threading.Thread(target=lambda: answer.append(httpx.post(
            f"{server.url}/api/ocr", files={"image": ("big.png", image_bytes((1000, 800)))}, timeout=300)))
        worker.start()
        wait_until(lambda: metric(server.url, "deepseek_ocr_running") == 1)  # the page has reached the model
        probes = [httpx.get(f"{server.url}{path}", timeout=30).status_code for path in ("/health", "/health/live")]
        # Still in the model once both probes were answered: they did not wait for it.
        still_working = worker.is_alive() and metric(server.url, "deepseek_ocr_running") == 1
        worker.join()
    assert probes == [200, 200]
    assert still_working
    assert answer[0].status_code == 200 and answer[0].json()["rawText"]


def test_before_the_model_loads_health_is_503_loading_and_live_is_200(native_checkpoint: Path, tmp_path: Path) -> None:
    client = TestClient(create_app(make_settings(native_checkpoint, tmp_path / "runs")))  # lifespan not started
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "loading" and response.json()["detail"]
    assert response.json()["modelLoaded"] is False
    assert client.get("/health/ready").status_code == 503
    assert client.get("/health/live").status_code == 200
    assert client.get("/api/modes").status_code == 503


def test_a_failed_load_is_503_error_and_the_process_stays_up(start_client, tmp_path: Path) -> None:
    broken = tmp_path / "broken-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "deepseek_ocr2"}))  # no weights, no tokenizer
    client = start_client(checkpoint=broken)
    response = client.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "error"
    assert str(broken) in response.json()["detail"]
    # The family is known from config.json although the weights never loaded.
    assert (response.json()["modelLoaded"], response.json()["modes"]) == (False, ["base", "gundam"])
    assert client.get("/health/live").status_code == 200
    ocr = client.post("/api/ocr", files={"image": ("a.png", b"\x89PNG\r\n\x1a\n")})
    assert ocr.status_code == 503 and "failed" in ocr.json()["detail"]


@pytest.mark.parametrize("kind", ["missing", "file", "no-config", "bad-config"])
def test_an_unusable_model_path_stops_startup_naming_path_and_fix(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "model"
    if kind == "file":
        target.write_text("not a folder")
    elif kind != "missing":
        target.mkdir()
        if kind == "bad-config":
            (target / "config.json").write_text("{not json")
    client = TestClient(create_app(make_settings(target, tmp_path / "runs")))
    with pytest.raises(ModelPathError) as failure:
        client.__enter__()
    message = str(failure.value)
    assert str(target) in message
    assert "DEEPSEEK_OCR_MODEL_PATH" in message and "deepseek-community/DeepSeek-OCR-2" in message


def test_default_mode_of_another_family_fails_the_load_naming_the_variable(start_client) -> None:
    response = start_client(ocr_default_mode="tiny").get("/health")
    assert response.status_code == 503
    assert "DEEPSEEK_OCR_DEFAULT_MODE" in response.json()["detail"]


def test_modes_lists_the_native_families_modes(client) -> None:
    body = client.get("/api/modes").json()
    assert body["engine"] == "transformers" and body["family"] == "deepseek-ocr-2"
    assert [(name, m["base_size"], m["image_size"], m["crop_mode"], m["visionTokens"]) for name, m in body["modes"].items()] == [
        ("gundam", 1024, 768, True, 256 + 6 * 144),  # the default mode first
        ("base", 1024, 1024, False, 256),
    ]
    assert all(m["description"] and m["label"] for m in body["modes"].values())
    assert body["defaultMode"] == "gundam"
    assert body["defaultPrompt"] == "<image>\n<|grounding|>Convert the document to markdown."
    assert body["maxImageMb"] == 15
    prompts = {p["name"]: p["prompt"] for p in body["prompts"]}
    assert prompts["free"] == "<image>\nFree OCR."
    assert len(prompts) == 6 and all(p.startswith("<image>\n") for p in prompts.values())


def test_modes_reflects_the_settings(start_client) -> None:
    body = start_client(max_image_mb=3, ocr_default_mode="base", ocr_default_prompt="<image>\nFree OCR.").get("/api/modes").json()
    assert (body["maxImageMb"], body["defaultMode"], body["defaultPrompt"]) == (3, "base", "<image>\nFree OCR.")
    assert list(body["modes"]) == ["base", "gundam"]


def test_cors_wildcard_never_allows_credentials(client) -> None:
    response = client.get("/health", headers={"Origin": "https://app.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


def test_cors_allow_list(start_client) -> None:
    client = start_client(allowed_origins="https://a.example, https://b.example")
    allowed = client.options("/api/ocr", headers={"Origin": "https://b.example", "Access-Control-Request-Method": "POST"})
    assert allowed.headers["access-control-allow-origin"] == "https://b.example"
    refused = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready", "/api/modes", "/metrics", "/"])
def test_head_is_answered_as_get_without_a_body(client, path: str) -> None:
    got, head = client.get(path), client.head(path)
    assert (head.status_code, got.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # its figures move between the two requests
        assert head.headers["content-length"] == got.headers["content-length"]


def test_head_on_a_stream_answers_its_head_and_ends(client) -> None:
    task = client.post("/api/task/create").json()["taskId"]
    head = client.head(f"/api/progress/{task}")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""


def test_head_where_get_is_not_answered_is_a_json_405(client) -> None:
    response = client.head("/api/ocr")
    assert response.status_code == 405 and "POST" in response.headers["allow"]
