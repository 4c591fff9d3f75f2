"""The process as an orchestrator sees it: SIGTERM drains before stopping, ends the streams still open, and a model
that cannot serve ends the process with a non-zero status so that it is restarted. The real server (`uvicorn
app:app`) on the tiny checkpoint, or in front of a stand-in vLLM server (tests/openai_standin.py) whose pages wait
for the test."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx

from helpers import image_bytes, metric, parse_events, server_env, wait_until
from live_server import Server, serving
from openai_standin import OpenAIStandIn

EXIT_TIMEOUT_S = 120
# After SIGTERM, the process may outlive its grace by this much (uvicorn's own shutdown, the lifespan's end).
STOP_MARGIN_S = 10


@contextlib.contextmanager
def sigterm_while_reading(checkpoint: Path, runs: Path, **env: str) -> Iterator[tuple[Server, threading.Thread, list]]:
    """A real server sent SIGTERM while the model reads a page; yields it, the request's thread and its answer."""
    with serving(server_env(checkpoint, runs, **env)) as server:
        answers: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{server.url}/api/ocr", files={"image": ("p.png", image_bytes())}, data={"mode": "base"}, timeout=300)))
        worker.start()
        wait_until(lambda: metric(server.url, "deepseek_ocr_running") >= 1)
        server.process.send_signal(signal.SIGTERM)
        yield server, worker, answers


def test_sigterm_drains_refuses_new_work_and_lets_admitted_work_finish(native_checkpoint: Path, tmp_path: Path) -> None:
    with sigterm_while_reading(native_checkpoint, tmp_path / "runs", DEEPSEEK_OCR_MAX_NEW_TOKENS="1000",
                               DEEPSEEK_OCR_SHUTDOWN_GRACE_S="300") as (server, worker, answers):
        wait_until(lambda: httpx.get(f"{server.url}/health").status_code == 503)
        health = httpx.get(f"{server.url}/health").json()
        assert (health["status"], health["modelLoaded"]) == ("draining", False)
        refused = httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", image_bytes())})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        worker.join(EXIT_TIMEOUT_S)
        assert answers[0].status_code == 200 and answers[0].json()["rawText"]  # admitted before: finished
        server.process.wait(EXIT_TIMEOUT_S)


def test_past_the_grace_admitted_work_fails_with_503_and_the_process_stops(native_checkpoint: Path, tmp_path: Path) -> None:
    with sigterm_while_reading(native_checkpoint, tmp_path / "runs", DEEPSEEK_OCR_MAX_NEW_TOKENS="1000000",
                               DEEPSEEK_OCR_SHUTDOWN_GRACE_S="0.5") as (server, worker, answers):
        worker.join(EXIT_TIMEOUT_S)
        assert answers[0].status_code == 503
        assert "shut down" in answers[0].json()["detail"]
        server.process.wait(EXIT_TIMEOUT_S)  # the generation was stopped: nothing holds the process


def test_a_failed_load_logs_its_cause_once_and_exits_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "broken-checkpoint"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "deepseek_ocr2"}))  # no weights, no tokenizer
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(broken), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs")})
    try:
        assert server.process.wait(EXIT_TIMEOUT_S) != 0
        output = server.output()
        assert output.count("Traceback") == 1, output
        assert f"Loading the model from {broken.resolve()} failed" in output
    finally:
        server.stop()


def test_a_missing_model_path_ends_startup_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(missing), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs")})
    try:
        assert server.process.wait(EXIT_TIMEOUT_S) != 0
        output = server.output()
        assert str(missing) in output and "DEEPSEEK_OCR_MODEL_PATH" in output
    finally:
        server.stop()


# --- in front of vLLM: streams and pages still open when the grace ends ---------------------------------------

@contextlib.contextmanager
def held_standin() -> Iterator[OpenAIStandIn]:
    """A stand-in vLLM server whose pages wait until the test ends."""
    standin = OpenAIStandIn().start()
    standin.script.hold = threading.Event()
    try:
        yield standin
    finally:
        standin.stop()


def vllm_env(standin: OpenAIStandIn, tmp_path: Path, grace_s: str) -> dict[str, str]:
    return {"DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": standin.url,
            "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"), "DEEPSEEK_OCR_SHUTDOWN_GRACE_S": grace_s}


def read_stream(method: str, url: str, lines: list[str], **request: object) -> threading.Thread:
    """A thread reading the event stream at `url` into `lines` as they come, until it ends."""
    def read() -> None:
        with httpx.stream(method, url, timeout=EXIT_TIMEOUT_S, **request) as response:
            lines.extend(response.iter_lines())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader


def test_sigterm_ends_progress_and_ocr_streams_with_a_final_event_within_the_grace(tmp_path: Path) -> None:
    with held_standin() as standin, serving(vllm_env(standin, tmp_path, grace_s="1")) as server:
        idle, busy = (httpx.post(f"{server.url}/api/task/create").json()["taskId"] for _ in range(2))
        streams: dict[str, list[str]] = {"idle": [], "busy": [], "ocr": []}
        readers = [
            read_stream("GET", f"{server.url}/api/progress/{idle}", streams["idle"]),
            read_stream("GET", f"{server.url}/api/progress/{busy}", streams["busy"]),
            read_stream("POST", f"{server.url}/api/ocr/stream", streams["ocr"], data={"task_id": busy},
                        files={"image": ("p.png", image_bytes())}),
        ]
        wait_until(lambda: standin.active == 1 and bool(streams["idle"]) and bool(streams["busy"]))
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(1 + STOP_MARGIN_S)
        assert time.monotonic() - signalled < 1 + STOP_MARGIN_S
        for reader in readers:
            reader.join(STOP_MARGIN_S)
        name, last = parse_events(streams["ocr"])[-1]
        assert (name, last["status"]) == ("error", 503) and "shut down" in last["detail"]
        for task in ("idle", "busy"):
            name, last = parse_events(streams[task])[-1]
            assert (name, last["stage"]) == ("complete", "error"), streams[task]
        assert "shutting down" in parse_events(streams["idle"])[-1][1]["message"]


def test_sigterm_while_a_page_waits_on_vllm_answers_503_with_retry_after(tmp_path: Path) -> None:
    with held_standin() as standin, serving(vllm_env(standin, tmp_path, grace_s="0.5")) as server:
        answers: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{server.url}/api/ocr", files={"image": ("p.png", image_bytes())}, timeout=EXIT_TIMEOUT_S)))
        worker.start()
        wait_until(lambda: standin.active == 1)
        server.process.send_signal(signal.SIGTERM)
        worker.join(EXIT_TIMEOUT_S)
        assert answers[0].status_code == 503, answers[0].text
        assert answers[0].headers["retry-after"] and "shut down" in answers[0].json()["detail"]
        server.process.wait(STOP_MARGIN_S)
        assert standin.aborted == 1  # its stream was closed: the generation stopped in vLLM
