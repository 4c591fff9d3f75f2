"""The process as an orchestrator sees it: SIGTERM drains before stopping, and a model that cannot serve ends the
process with a non-zero status so that it is restarted. The real server (`uvicorn app:app`) on the tiny checkpoint."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Iterator

import httpx

from helpers import image_bytes, metric, server_env, wait_until
from live_server import Server, serving

EXIT_TIMEOUT_S = 120


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
