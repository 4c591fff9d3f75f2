"""Jobs that outlive a process: the service killed with SIGKILL mid-way and started again finishes every job and
never reads a finished page twice; two replicas on one PostgreSQL serve each other's jobs, and one finishes the
pages of the other after it is killed. Real service processes (`uvicorn app:app`) in front of the vLLM stand-in,
which answers each page with its image's hash: the test counts how often every page was read."""

from __future__ import annotations

import json
import os
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest

from helpers import image_bytes, make_pdf, parse_events, wait_until
from live_server import Server
from openai_standin import OpenAIStandIn, image_hash

FINAL = ("succeeded", "partial", "failed", "cancelled")


@pytest.fixture
def standin(openai_standin: OpenAIStandIn) -> OpenAIStandIn:
    openai_standin.script.echo_image = True
    openai_standin.script.piece_delay_s = 0.05  # a page takes a moment: there is something to kill mid-way
    return openai_standin


def service_env(standin: OpenAIStandIn, data_dir: Path, replica: str, **extra: str) -> dict[str, str]:
    return {
        "DEEPSEEK_OCR_ENGINE": "vllm",
        "DEEPSEEK_OCR_VLLM_URLS": standin.url,
        "DEEPSEEK_OCR_VLLM_PROBE_INTERVAL_S": "0.5",
        "DEEPSEEK_OCR_DATA_DIR": str(data_dir),
        "DEEPSEEK_OCR_RUNS_DIR": str(data_dir / "runs"),
        "DEEPSEEK_OCR_REPLICA_ID": replica,
        "DEEPSEEK_OCR_JOB_CONCURRENCY": "3",
        **extra,
    }


def started(env: dict[str, str]) -> Server:
    server = Server(env)
    server.wait_ready()
    return server


def submit(url: str, *files: tuple[str, bytes]) -> str:
    answer = httpx.post(f"{url}/api/jobs", files=[("file", file) for file in files], timeout=30)
    assert answer.status_code == 202, answer.text
    return answer.json()["jobId"]


def job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/api/jobs/{job_id}", timeout=30).json()


def wait_for_end(url: str, job_ids: list[str]) -> None:
    wait_until(lambda: all(job(url, job_id)["status"] in FINAL for job_id in job_ids), timeout_s=180)


def pages_read(url: str, job_ids: list[str]) -> list[str]:
    """The hash each finished page was answered with, over all the jobs' documents."""
    hashes = []
    for job_id in job_ids:
        result = httpx.get(f"{url}/api/jobs/{job_id}/result", timeout=30).json()
        for document in result["documents"]:
            hashes += [page["text"].removeprefix("image ") for page in document["pages"]]
    return hashes


def documents() -> list[tuple[str, bytes]]:
    """Eleven documents, 30 pages, each page a different picture."""
    images = [(f"scan-{n}.png", image_bytes((300 + 10 * n, 400))) for n in range(10)]
    return [*images, ("report.pdf", make_pdf(tuple((100 + 5 * n, 140) for n in range(20))))]


def test_sigkill_mid_way_then_restart_finishes_every_job_reading_no_finished_page_twice(
    standin: OpenAIStandIn, tmp_path: Path
) -> None:
    env = service_env(standin, tmp_path / "data", "replica-a")
    server = started(env)
    try:
        job_ids = [submit(server.url, document) for document in documents()]
        wait_until(lambda: standin.completed >= 8)
    finally:
        server.process.kill()  # SIGKILL: no drain, no hand-back
        server.process.wait()
        server.stop()
    with sqlite3.connect(tmp_path / "data" / "dsocr.sqlite3") as database:
        kept = [json.loads(result)["text"].removeprefix("image ")
                for (result,) in database.execute("SELECT result FROM pages WHERE status = 'done'")]
    assert 0 < len(kept) < 30, "the kill was not mid-way"

    server = started(env)  # the same replica: it takes back its pages at once
    try:
        wait_for_end(server.url, job_ids)
        assert {job(server.url, job_id)["status"] for job_id in job_ids} == {"succeeded"}
        read = pages_read(server.url, job_ids)
    finally:
        server.stop()
    sent = Counter(image_hash(body) for body in standin.bodies)
    assert len(read) == 30 and len(set(read)) == 30  # every page, each its own
    assert {page: sent[page] for page in kept} == {page: 1 for page in kept}  # finished pages never read again


@pytest.fixture(scope="module")
def postgres(postgres_server_url: str) -> str:
    from postgres import fresh_database

    return fresh_database(postgres_server_url)


def test_two_replicas_share_jobs_and_finish_each_others_pages(
    standin: OpenAIStandIn, postgres: str, tmp_path: Path
) -> None:
    shared = {"DEEPSEEK_OCR_DATABASE_URL": postgres, "DEEPSEEK_OCR_JOB_LEASE_S": "3"}
    first = started(service_env(standin, tmp_path / "data", "replica-a", **shared))
    second = started(service_env(standin, tmp_path / "data", "replica-b", **shared))
    try:
        # Submitted on one, followed and fetched on the other, read by both.
        job_id = submit(first.url, ("report.pdf", make_pdf(tuple((100 + 5 * n, 140) for n in range(12)))))
        with httpx.stream("GET", f"{second.url}/api/jobs/{job_id}/events", timeout=120) as stream:
            events = parse_events(stream.iter_lines())
        assert events[0][0] == "state" and events[-1] == ("end", events[-1][1])
        assert events[-1][1]["status"] == "succeeded" and [name for name, _ in events].count("page") == 12
        result = httpx.get(f"{second.url}/api/jobs/{job_id}/result", timeout=30).json()
        assert result["status"] == "succeeded" and len(result["documents"][0]["pages"]) == 12
        import psycopg

        with psycopg.connect(postgres) as database:
            workers = {row[0] for row in database.execute("SELECT worker FROM pages WHERE job_id = %s", (job_id,))}
        assert workers == {"replica-a", "replica-b"}

        # The history and progress tasks too: a task made on one replica follows a request read by the other.
        task_id = httpx.post(f"{second.url}/api/task/create", timeout=30).json()["taskId"]
        answer = httpx.post(f"{first.url}/api/ocr", files={"image": ("a.png", image_bytes(), "image/png")},
                            data={"task_id": task_id}, timeout=60).json()
        kept = httpx.get(f"{second.url}/api/history/{answer['historyId']}", timeout=30).json()
        assert kept["text"] == answer["text"] and kept["historyId"] == answer["historyId"]
        listed = httpx.get(f"{second.url}/api/history", timeout=30).json()["items"]
        assert [item["id"] for item in listed] == [answer["historyId"]]
        followed = parse_events(httpx.get(f"{second.url}/api/progress/{task_id}", timeout=60).text.splitlines())
        assert followed[-1][0] == "complete" and followed[-1][1]["stage"] == "complete"

        # One replica killed while it holds pages: the other takes them when their leases run out.
        standin.script.piece_delay_s = 0.3
        job_id = submit(second.url, ("long.pdf", make_pdf(tuple((100 + 5 * n, 150) for n in range(10)))))
        wait_until(lambda: _held_by(postgres, job_id, "replica-a") > 0)
        first.process.kill()
        standin.script.piece_delay_s = 0.02
        wait_for_end(second.url, [job_id])
        assert job(second.url, job_id)["status"] == "succeeded"
        assert _held_by(postgres, job_id, "replica-a", status="done") < 10
    finally:
        for server in (first, second):
            server.stop()


def _held_by(url: str, job_id: str, worker: str, status: str = "running") -> int:
    import psycopg

    with psycopg.connect(url) as database:
        return database.execute("SELECT count(*) FROM pages WHERE job_id = %s AND worker = %s AND status = %s",
                                (job_id, worker, status)).fetchone()[0]


def test_a_worker_process_reads_the_jobs_an_http_only_replica_takes(standin: OpenAIStandIn, tmp_path: Path) -> None:
    """`python -m dsocr worker` beside a replica that serves HTTP only (DEEPSEEK_OCR_JOB_WORKER=false), sharing
    one SQLite file: the replica takes the job, the worker reads its pages, and stops cleanly on SIGTERM."""
    import signal
    import subprocess
    import sys

    from helpers import ROOT

    env = service_env(standin, tmp_path / "data", "front", DEEPSEEK_OCR_JOB_WORKER="false")
    front = started(env)
    worker_env = {**{k: v for k, v in os.environ.items() if not k.startswith("DEEPSEEK_")},
                  **service_env(standin, tmp_path / "data", "worker-1")}
    worker = subprocess.Popen([sys.executable, "-m", "dsocr", "worker"], cwd=ROOT, env=worker_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job_id = submit(front.url, ("report.pdf", make_pdf(((120, 140), (130, 140), (140, 140)))))
        wait_for_end(front.url, [job_id])
        assert job(front.url, job_id)["status"] == "succeeded"
        assert len(pages_read(front.url, [job_id])) == 3
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        front.stop()
    assert worker.returncode == 0, output
    assert "working on jobs" in output
