"""DEEPSEEK_OCR_ENGINE=vllm against STAND-IN vLLM servers (tests/openai_standin.py), which record what they
receive: the request each page becomes, streaming, modes, spreading over servers, retries, failures, recovery.
The real vLLM server is tested in test_vllm_real.py."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from helpers import app_starter, assert_error, image_bytes, make_pdf, metric_value, parse_events, post, wait_until
from live_server import free_port
from openai_standin import OpenAIStandIn
from settings import Settings, load_settings

WAIT_S = 30
PAGE = image_bytes((700, 500))


@pytest.fixture
def start_vllm_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """`start(urls, ready=True, **overrides)`: the app in front of the vLLM servers at `urls`."""
    def settings_for(urls: list[str], **overrides: object) -> Settings:
        return load_settings(ocr_engine="vllm", ocr_vllm_urls=",".join(urls), ocr_runs_dir=tmp_path / "runs",
                             ocr_history_dir=tmp_path / "history", ocr_vllm_probe_interval_s=0.05, **overrides)

    yield from app_starter(settings_for)


def test_a_page_becomes_one_streamed_chat_completion_with_upstreams_sampling(start_vllm_client, standins) -> None:
    client = start_vllm_client([standins[0].url], ocr_max_new_tokens=777, ocr_vllm_api_key="sekrit")
    response = post(client, PAGE, prompt="<image>\n<|grounding|>OCR this image.")
    assert response.status_code == 200, response.text
    [body] = standins[0].bodies
    assert body["model"] == "deepseek-ai/DeepSeek-OCR"
    [message] = body["messages"]
    image_part, text_part = message["content"]
    assert text_part == {"type": "text", "text": "<|grounding|>OCR this image."}
    head, payload = image_part["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (700, 500)
    assert (body["temperature"], body["max_tokens"], body["skip_special_tokens"], body["stream"]) == (0, 777, False, True)
    assert body["vllm_xargs"] == {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [128821, 128822]}
    assert standins[0].headers[0]["authorization"] == "Bearer sekrit"
    answer = response.json()
    assert (answer["rawText"], answer["text"], answer["finishReason"]) == ("# Title\n\nSome text.", "# Title\n\nSome text.", "stop")
    assert answer["model"] == "deepseek-ai/DeepSeek-OCR"


def test_the_servers_mode_is_the_only_mode_and_the_family_comes_from_the_served_model(start_vllm_client) -> None:
    server = OpenAIStandIn("ocr2", root="deepseek-ai/DeepSeek-OCR-2").start()
    try:
        client = start_vllm_client([server.url])
        modes = client.get("/api/modes").json()
        assert (modes["engine"], modes["family"], list(modes["modes"])) == ("vllm", "deepseek-ocr-2", ["gundam"])
        health = client.get("/health").json()
        assert (health["engine"], health["model"], health["modes"]) == ("vllm", "ocr2", ["gundam"])
        refused = post(client, PAGE, mode="base")
        assert refused.status_code == 422 and "valid modes are gundam" in refused.json()["detail"]
    finally:
        server.stop()


def test_the_stream_carries_vllms_deltas_and_its_finish_reason(start_vllm_client, standins) -> None:
    standins[0].script.pieces = ["<|ref|>title<|/ref|><|det|>[[0, 0, 999, 99]]<|/det|>\n", "# Big ", "title"]
    standins[0].script.finish_reason = "length"
    client = start_vllm_client([standins[0].url], ocr_page_retries=0)  # a page ended by the cap is read once here
    with client.stream("POST", "/api/ocr/stream", files={"image": ("p.png", image_bytes(), "image/png")}) as response:
        events = parse_events(response.iter_lines())
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert deltas == standins[0].script.pieces
    name, result = events[-1]
    assert name == "result" and result["finishReason"] == "length" and result["text"] == "# Big title"
    assert result["layout"]["items"][0]["label"] == "title"


def test_concurrent_pages_reach_the_servers_concurrently_and_spread_over_them(start_vllm_client, standins) -> None:
    hold = threading.Event()
    for server in standins:
        server.script.hold = hold
    client = start_vllm_client([server.url for server in standins])
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, client, make_pdf(tuple((100 + i, 100) for i in range(6))))
        wait_until(lambda: sum(server.active for server in standins) == 6)  # all six pages at once
        assert [server.active for server in standins] == [3, 3]  # the fewest in flight first
        hold.set()
        response = answer.result(WAIT_S)
    assert response.status_code == 200 and len(response.json()["pages"]) == 6
    metrics = client.get("/metrics").text
    for server in standins:
        assert f'deepseek_ocr_vllm_requests_total{{outcome="ok",server="{server.url}"}} 3.0' in metrics
        assert f'deepseek_ocr_vllm_inflight{{server="{server.url}"}} 0.0' in metrics
    assert "deepseek_ocr_time_to_first_token_seconds_count 6.0" in metrics


def test_pages_beyond_max_inflight_wait_in_the_service(start_vllm_client, standins) -> None:
    hold = threading.Event()
    standins[0].script.hold = hold
    client = start_vllm_client([standins[0].url], ocr_vllm_max_inflight=2)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, client, make_pdf(tuple((100 + i, 100) for i in range(5))))
        wait_until(lambda: standins[0].active == 2)
        assert 'deepseek_ocr_vllm_inflight{server="' + standins[0].url + '"} 2.0' in client.get("/metrics").text
        hold.set()
        assert answer.result(WAIT_S).status_code == 200
    assert standins[0].max_active == 2 and len(standins[0].bodies) == 5


def test_a_server_that_is_down_costs_no_request(start_vllm_client, standins) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = start_vllm_client([down, standins[0].url])
    answers = [post(client, PAGE) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200] * 4
    assert len(standins[0].bodies) == 4


def test_a_5xx_before_the_first_token_is_retried_once_on_another_server(start_vllm_client, standins) -> None:
    standins[0].script.fail_status = 500
    client = start_vllm_client([server.url for server in standins])
    response = post(client, PAGE)
    assert response.status_code == 200, response.text
    assert len(standins[1].bodies) == 1
    assert len(standins[0].bodies) == 1  # tried first: equally busy, first in the list


def test_with_no_server_up_health_and_ocr_are_503_and_both_recover(start_vllm_client, standins) -> None:
    for server in standins:
        server.script.healthy = False
    client = start_vllm_client([server.url for server in standins], ready=False)
    wait_until(lambda: client.get("/health").json().get("status") == "error")
    health = client.get("/health")
    assert health.status_code == 503 and all(server.url in health.json()["detail"] for server in standins)
    refused = post(client, PAGE)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    standins[1].script.healthy = True
    wait_until(lambda: client.get("/health").status_code == 200)
    assert post(client, PAGE).status_code == 200 and len(standins[1].bodies) == 1


def test_a_page_vllm_refuses_is_a_422_with_its_reason(start_vllm_client, standins) -> None:
    standins[0].script.fail_status = 400
    client = start_vllm_client([standins[0].url])
    response = post(client, PAGE)
    assert response.status_code == 422
    assert "maximum context length is 4096" in response.json()["detail"]


def test_a_client_that_leaves_mid_generation_aborts_it_in_vllm(start_vllm_client, standins) -> None:
    standins[0].script.pieces = ["piece "] * 400
    standins[0].script.piece_delay_s = 0.05
    client = start_vllm_client([standins[0].url])
    with client.stream("POST", "/api/ocr/stream", files={"image": ("p.png", image_bytes(), "image/png")}) as response:
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                break  # leave after the first piece
    wait_until(lambda: standins[0].aborted == 1)
    assert standins[0].completed == 0
    wait_until(lambda: f'deepseek_ocr_vllm_inflight{{server="{standins[0].url}"}} 0.0' in client.get("/metrics").text)


def test_serving_through_vllm_loads_neither_torch_nor_transformers(standins, tmp_path: Path) -> None:
    script = f"""
import sys
from fastapi.testclient import TestClient
from app import create_app
from settings import load_settings
settings = load_settings(ocr_engine="vllm", ocr_vllm_urls={standins[0].url!r}, ocr_runs_dir={str(tmp_path / "runs")!r},
                         ocr_history_dir={str(tmp_path / "history")!r})
with TestClient(create_app(settings)) as client:
    import time
    while client.get("/health").status_code != 200:
        time.sleep(0.05)
    files = {{"image": ("p.png", open({str(tmp_path / "p.png")!r}, "rb").read(), "image/png")}}
    assert client.post("/api/ocr", files=files).status_code == 200
print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""
    (tmp_path / "p.png").write_bytes(image_bytes())
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')) == []


def test_vllm_needs_its_urls_and_says_which_variable() -> None:
    from settings import SettingsError

    with pytest.raises(SettingsError, match="DEEPSEEK_OCR_VLLM_URLS"):
        load_settings(ocr_engine="vllm")
    with pytest.raises(SettingsError, match="DEEPSEEK_OCR_VLLM_URLS"):
        load_settings(ocr_engine="vllm", ocr_vllm_urls="gpu-1:8000")


# --- servers that misbehave -----------------------------------------------------------------------------------

def vllm_outcomes(client: TestClient, server: OpenAIStandIn, outcome: str) -> float:
    return metric_value(client.get("/metrics").text, "deepseek_ocr_vllm_requests_total", outcome=outcome,
                        server=server.url)


def test_a_reset_before_the_first_byte_is_retried_on_the_healthy_server(start_vllm_client, standins) -> None:
    standins[0].script.reset = "before"
    client = start_vllm_client([server.url for server in standins])
    response = post(client, PAGE)
    assert response.status_code == 200, response.text
    assert (len(standins[0].bodies), len(standins[1].bodies)) == (1, 1)  # tried first, then the other
    assert vllm_outcomes(client, standins[0], "retried") == 1
    assert client.get("/health").status_code == 200


def test_a_stream_without_end_is_closed_past_what_max_tokens_allows_and_is_a_502(start_vllm_client, standins) -> None:
    standins[0].script.endless = True
    client = start_vllm_client([standins[0].url], ocr_max_new_tokens=50)
    response = post(client, PAGE)
    assert_error(response, 502, standins[0].url, "max_tokens", "closed")
    wait_until(lambda: standins[0].aborted == 1)  # the service closed the stream
    assert vllm_outcomes(client, standins[0], "overlong") == 1
    assert metric_value(client.get("/metrics").text, "deepseek_ocr_failures_total", reason="upstream_overlong") == 1
    assert client.get("/health").status_code == 200


def test_a_line_without_end_is_bounded_too(start_vllm_client, standins) -> None:
    standins[0].script.raw_chunks = ["x" * 1_000_000]  # one "line" far past what 5 tokens may take
    client = start_vllm_client([standins[0].url], ocr_max_new_tokens=5)
    assert_error(post(client, PAGE), 502, "bytes", "max_tokens")


@pytest.mark.parametrize(("chunk", "problem"), [
    ("[1, 2]", "not a chat completion chunk"),
    ('{"choices": "none"}', "choices"),
    ('{"choices": [{"delta": {"content": 5}}]}', "content"),
    ("{not json", "not a chat completion chunk"),
])
def test_a_malformed_chunk_is_a_502_naming_the_server_and_counted_against_it(start_vllm_client, standins, chunk: str,
                                                                             problem: str) -> None:
    standins[0].script.raw_chunks = [chunk]
    client = start_vllm_client([server.url for server in standins])
    assert_error(post(client, PAGE), 502, standins[0].url, problem)
    assert vllm_outcomes(client, standins[0], "malformed") == 1
    assert vllm_outcomes(client, standins[1], "malformed") == 0
    assert client.get("/health").status_code == 200


def test_a_reset_mid_stream_is_a_502_naming_the_server(start_vllm_client, standins) -> None:
    standins[0].script.reset = "mid"
    client = start_vllm_client([standins[0].url])
    assert_error(post(client, PAGE), 502, standins[0].url, "dropped the page mid-answer")
    assert vllm_outcomes(client, standins[0], "malformed") == 1


def test_a_server_that_never_answers_times_out_is_marked_unhealthy_and_the_page_goes_elsewhere(
    start_vllm_client, standins
) -> None:
    client = start_vllm_client([server.url for server in standins], ocr_vllm_first_byte_timeout_s=0.5)
    standins[0].script.never_answer = True  # accepts every request, /health included, and never answers
    response = post(client, PAGE)
    assert response.status_code == 200, response.text
    assert (len(standins[0].bodies), len(standins[1].bodies)) == (1, 1)
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "deepseek_ocr_vllm_requests_total", outcome="timed_out", server=standins[0].url) == 1
    assert metric_value(metrics, "deepseek_ocr_vllm_healthy", server=standins[0].url) == 0
    assert client.get("/health").status_code == 200
    assert post(client, PAGE).status_code == 200 and len(standins[0].bodies) == 1  # no more pages for it


def test_with_no_other_server_a_first_byte_timeout_is_a_502_naming_the_setting(start_vllm_client, standins) -> None:
    client = start_vllm_client([standins[0].url], ocr_vllm_first_byte_timeout_s=0.5)
    standins[0].script.never_answer = True
    assert_error(post(client, PAGE), 502, "DEEPSEEK_OCR_VLLM_FIRST_BYTE_TIMEOUT_S")


@pytest.mark.parametrize("broken", [
    {"models_answer": {"data": "nope"}},
    {"models_answer": {"data": [7]}},
    {"models_answer": ["not", "an", "object"]},
    {"tokenize_answer": {"tokens": "x"}},
    {"tokenize_answer": {"count": 1}},
])
def test_a_server_that_describes_itself_wrongly_is_asked_again_until_it_answers_well(start_vllm_client, standins,
                                                                                      broken: dict) -> None:
    for name, answer in broken.items():
        setattr(standins[0].script, name, answer)
    client = start_vllm_client([standins[0].url], ready=False)
    wait_until(lambda: standins[0].model_lists >= 2)  # asked again after the malformed answer
    assert client.get("/health").json()["status"] == "loading"
    for name in broken:
        setattr(standins[0].script, name, None)  # the server is fixed
    wait_until(lambda: client.get("/health").status_code == 200)
    assert post(client, PAGE).status_code == 200


def test_a_server_that_describes_itself_wrongly_leaves_the_others_serving(start_vllm_client, standins) -> None:
    standins[0].script.models_answer = {"data": "nope"}
    client = start_vllm_client([server.url for server in standins])
    assert client.get("/health").status_code == 200
    assert post(client, PAGE).status_code == 200


def test_pages_one_after_another_reuse_their_connections(start_vllm_client, standins) -> None:
    client = start_vllm_client([standins[0].url])
    for _ in range(6):
        assert post(client, PAGE).status_code == 200
    # A page and a health probe at most at a time: two connections, each kept, where each page used to open one.
    assert len(standins[0].client_ports) == 6 and len(set(standins[0].client_ports)) <= 2
