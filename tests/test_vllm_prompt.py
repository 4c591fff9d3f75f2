"""The prompt a vLLM server renders for a page (dsocr.engines.vllm.plain_template_for, asked by the vLLM pool the
first time a server is healthy), against the STAND-IN vLLM server (tests/openai_standin.py), told to render chat
messages as vLLM does with DeepSeek-OCR's template (plain) or DeepSeek-VL2's (role markers). The real vLLM server
started with a role-marker --chat-template is tested in test_vllm_real.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from dsocr.engines.vllm import PLAIN_CHAT_TEMPLATE
from helpers import app_starter, image_bytes, make_pdf, post, post_pdf
from settings import Settings, load_settings

ROLE_MARKERS = "role markers"


@pytest.fixture
def start_vllm_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    def settings_for(urls: list[str]) -> Settings:
        return load_settings(ocr_engine="vllm", ocr_vllm_urls=",".join(urls), ocr_runs_dir=tmp_path / "runs",
                             ocr_history_dir=tmp_path / "history", ocr_data_dir=tmp_path / "data",
                             ocr_vllm_probe_interval_s=0.05)

    yield from app_starter(settings_for)


def read_twice(client: TestClient) -> None:
    for _ in range(2):
        response = post(client, image_bytes())
        assert response.status_code == 200, response.text


def test_a_server_that_renders_upstreams_plain_prompt_gets_no_template(start_vllm_client, standins, caplog) -> None:
    caplog.set_level(logging.INFO, "deepseek_ocr.vllm")
    read_twice(start_vllm_client([standins[0].url]))
    assert all("chat_template" not in body for body in standins[0].bodies)
    assert ROLE_MARKERS not in caplog.text


def test_a_server_that_renders_role_markers_gets_a_plain_template_with_each_page_said_once(
    start_vllm_client, standins, caplog
) -> None:
    caplog.set_level(logging.INFO, "deepseek_ocr.vllm")
    marked, plain = standins
    marked.script.chat_rendering = "roles"
    for server in standins:
        server.script.piece_delay_s = 0.2  # pages overlap, so that they spread over both servers
    client = start_vllm_client([marked.url, plain.url])
    for _ in range(2):
        response = post_pdf(client, make_pdf(((100, 100),) * 4))
        assert response.status_code == 200, response.text
    assert marked.bodies and plain.bodies
    assert all(body["chat_template"] == PLAIN_CHAT_TEMPLATE for body in marked.bodies)
    assert all("chat_template" not in body for body in plain.bodies)
    said = [record.getMessage() for record in caplog.records if ROLE_MARKERS in record.getMessage()]
    assert len(said) == 1 and marked.url in said[0] and "plain chat template" in said[0]


def test_a_server_that_refuses_a_template_from_requests_is_named_with_the_flags_to_start_it_with(
    start_vllm_client, standins, caplog
) -> None:
    caplog.set_level(logging.INFO, "deepseek_ocr.vllm")
    standins[0].script.chat_rendering = "roles"
    standins[0].script.trust_request_chat_template = False
    read_twice(start_vllm_client([standins[0].url]))  # read as the server renders them, rather than refused
    assert all("chat_template" not in body for body in standins[0].bodies)
    [said] = [record for record in caplog.records if ROLE_MARKERS in record.getMessage()]
    assert said.levelno == logging.WARNING
    assert "--chat-template" in said.getMessage() and "--trust-request-chat-template" in said.getMessage()
