"""The jobs API in one process: submit (checks, 202, idempotency), status with long-polling, events, results as
JSON, markdown and zip, cancel, delete, listing, API keys, and signed webhooks with retries. The native engine on
the tiny checkpoint reads the pages, through the same worker a deployment runs."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from helpers import assert_error, image_bytes, make_pdf, parse_events, post, wait_until


def submit(client: TestClient, *files: tuple[str, bytes], headers: dict[str, str] | None = None,
           **fields: str):
    return client.post("/api/jobs", files=[("file", (name, data, "application/octet-stream")) for name, data in files],
                       data=fields, headers=headers)


def finished(client: TestClient, job_id: str, headers: dict[str, str] | None = None) -> dict:
    view: dict = {}

    def ended() -> bool:
        nonlocal view
        view = client.get(f"/api/jobs/{job_id}", params={"wait": 5}, headers=headers).json()
        return view["status"] in ("succeeded", "partial", "failed", "cancelled")

    wait_until(ended)
    return view


@pytest.fixture(scope="module")
def jobs_client(native_checkpoint, tmp_path_factory) -> Iterator[TestClient]:
    from app import create_app
    from helpers import wait_ready
    from helpers import make_settings

    settings = make_settings(native_checkpoint, tmp_path_factory.mktemp("jobs") / "runs",
                             ocr_webhook_hosts=["127.0.0.1"], ocr_webhook_secret="s3cret")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def test_a_job_reads_every_document_as_api_ocr_would(jobs_client: TestClient) -> None:
    answer = submit(jobs_client, ("scan.png", image_bytes()), ("report.pdf", make_pdf(((200, 100), (150, 150)))))
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert answer.headers["location"] == f"/api/jobs/{job['jobId']}"
    # Queued as submitted, unless a worker (polling, or another replica's) claimed a page before the answer was read.
    assert job["status"] in ("queued", "running") and job["pagesTotal"] == 3
    assert [(d["fileName"], d["pages"]) for d in job["documents"]] == [("scan.png", 1), ("report.pdf", 2)]
    view = finished(jobs_client, job["jobId"])
    assert view["status"] == "succeeded" and view["pagesDone"] == 3 and view["pagesFailed"] == 0
    result = jobs_client.get(f"/api/jobs/{job['jobId']}/result").json()
    sync = post(jobs_client, image_bytes()).json()
    for document, expected in zip(result["documents"], job["documents"]):
        assert document["documentId"] == expected["documentId"] and document["status"] == "succeeded"
        assert set(sync) <= set(document)  # every field /api/ocr answers
    pdf = result["documents"][1]
    assert pdf["isPdf"] and [page["page"] for page in pdf["pages"]] == [1, 2]
    assert pdf["text"] == "\n\n<--- Page Split --->\n\n".join(page["text"] for page in pdf["pages"])
    names = [name for name, _ in parse_events(
        jobs_client.get(f"/api/jobs/{job['jobId']}/events").text.splitlines())]
    assert names[0] == "state" and names[-1] == "end"
    assert names.count("page") == 3 and names.count("document") == 2


def test_events_resume_after_the_last_event_id(jobs_client: TestClient) -> None:
    job_id = submit(jobs_client, ("a.png", image_bytes())).json()["jobId"]
    finished(jobs_client, job_id)
    stream = jobs_client.get(f"/api/jobs/{job_id}/events").text
    ids = [line.split(":", 1)[1].strip() for line in stream.splitlines() if line.startswith("id:")]
    again = jobs_client.get(f"/api/jobs/{job_id}/events", headers={"Last-Event-ID": ids[0]}).text
    names = [name for name, _ in parse_events(again.splitlines())]
    assert names == ["state", "document", "end"]  # the page event was seen already


def test_a_bad_file_refuses_the_whole_job_by_name(jobs_client: TestClient) -> None:
    before = jobs_client.get("/api/jobs").json()["jobs"]
    answer = submit(jobs_client, ("good.png", image_bytes()), ("notes.txt", b"just text"))
    assert_error(answer, 415, "notes.txt")
    answer = submit(jobs_client, ("broken.pdf", b"%PDF-1.7\n garbage"))
    assert_error(answer, 400, "broken.pdf")
    assert jobs_client.get("/api/jobs").json()["jobs"] == before  # nothing was queued
    assert_error(jobs_client.post("/api/jobs", data={"mode": "gundam"}), 415, "multipart")
    assert_error(jobs_client.post("/api/jobs", files={"mode": (None, "gundam")}), 422, "file")
    assert_error(submit(jobs_client, ("a.png", image_bytes()), mode="huge"), 422, "mode")


def test_idempotency_key_returns_the_same_job(jobs_client: TestClient) -> None:
    headers = {"Idempotency-Key": "retry-me"}
    first = submit(jobs_client, ("a.png", image_bytes()), headers=headers).json()
    again = submit(jobs_client, ("a.png", image_bytes()), headers=headers).json()
    assert again["jobId"] == first["jobId"]
    listed = [job["jobId"] for job in jobs_client.get("/api/jobs").json()["jobs"]]
    assert listed.count(first["jobId"]) == 1


def test_result_as_markdown_and_zip(jobs_client: TestClient) -> None:
    one = submit(jobs_client, ("page.png", image_bytes())).json()["jobId"]
    finished(jobs_client, one)
    text = jobs_client.get(f"/api/jobs/{one}/result").json()["documents"][0]["text"]
    markdown = jobs_client.get(f"/api/jobs/{one}/result", params={"format": "md"})
    assert markdown.headers["content-type"].startswith("text/markdown") and markdown.text == text
    two = submit(jobs_client, ("a.png", image_bytes()), ("../../b.png", image_bytes(color="gray"))).json()["jobId"]
    finished(jobs_client, two)
    assert_error(jobs_client.get(f"/api/jobs/{two}/result", params={"format": "md"}), 422, "zip")
    archive = zipfile.ZipFile(io.BytesIO(jobs_client.get(f"/api/jobs/{two}/result", params={"format": "zip"}).content))
    assert sorted(archive.namelist()) == ["a.json", "a.md", "b.json", "b.md"]  # no path leaves the archive
    assert json.loads(archive.read("b.json"))["fileName"] == "../../b.png"


def test_cancel_and_delete(jobs_client: TestClient) -> None:
    job_id = submit(jobs_client, ("long.pdf", make_pdf(((100, 100),) * 6))).json()["jobId"]
    cancelled = jobs_client.post(f"/api/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    view = finished(jobs_client, job_id)
    assert view["pagesDone"] < 6
    assert_error(jobs_client.post(f"/api/jobs/{job_id}/cancel"), 409, "ended")
    assert jobs_client.get(f"/api/jobs/{job_id}/result").json()["status"] == "cancelled"
    assert jobs_client.delete(f"/api/jobs/{job_id}").status_code == 204
    assert_error(jobs_client.get(f"/api/jobs/{job_id}"), 404)
    assert_error(jobs_client.delete(f"/api/jobs/{job_id}"), 404)


def test_unfinished_result_is_a_conflict(jobs_client: TestClient) -> None:
    job_id = submit(jobs_client, ("long.pdf", make_pdf(((100, 100),) * 4))).json()["jobId"]
    assert_error(jobs_client.get(f"/api/jobs/{job_id}/result"), 409, "not ended")
    jobs_client.delete(f"/api/jobs/{job_id}")


def test_jobs_belong_to_their_api_key(start_client: Callable[..., TestClient]) -> None:
    client = start_client(ocr_api_keys=["alpha", "beta"])
    alpha, beta = {"X-API-Key": "alpha"}, {"X-API-Key": "beta"}
    assert_error(submit(client, ("a.png", image_bytes())), 401)
    job_id = submit(client, ("a.png", image_bytes()), headers=alpha).json()["jobId"]
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/result", f"/api/jobs/{job_id}/events"):
        assert_error(client.get(path, headers=beta), 404)
    assert_error(client.post(f"/api/jobs/{job_id}/cancel", headers=beta), 404)
    assert client.get("/api/jobs", headers=beta).json()["jobs"] == []
    assert finished(client, job_id, headers=alpha)["status"] == "succeeded"


class Receiver:
    """A webhook receiver on loopback: answers 500 to the first `failures` deliveries, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((dict(self.headers), body))
                self.send_response(500 if len(receiver.received) <= receiver.failures else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_signed_webhook_is_retried_until_delivered(jobs_client: TestClient) -> None:
    receiver = Receiver(failures=1)
    try:
        job_id = submit(jobs_client, ("a.png", image_bytes()), callbackUrl=receiver.url).json()["jobId"]
        wait_until(lambda: len(receiver.received) >= 2)
    finally:
        receiver.close()
    headers, body = receiver.received[-1]
    payload = json.loads(body)
    assert payload["jobId"] == job_id and payload["status"] == "succeeded" and payload["pagesDone"] == 1
    signature = dict(part.split("=", 1) for part in headers["X-DeepSeek-OCR-Signature"].split(","))
    expected = hmac.new(b"s3cret", f"{signature['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature["v1"], expected)


def test_callbacks_only_to_allowed_hosts(jobs_client: TestClient) -> None:
    for url in ("http://169.254.169.254/latest", "http://localhost:1/x", "ftp://127.0.0.1/x", "http://u:p@127.0.0.1/",
                "http://@127.0.0.1/", "http://127.0.0.1\t/", " http://127.0.0.1/", "http://127.0.0.1:0/"):
        assert_error(submit(jobs_client, ("a.png", image_bytes()), callbackUrl=url), 422, "callbackUrl")


def test_odd_inputs_are_clear_client_errors(jobs_client: TestClient) -> None:
    job_id = submit(jobs_client, ("a.png", image_bytes())).json()["jobId"]
    finished(jobs_client, job_id)
    for last in ("\u00b2", "\u0661\u0662", "abc", "9" * 40):  # not ASCII digits: the stream starts from the start
        names = [name for name, _ in parse_events(
            jobs_client.get(f"/api/jobs/{job_id}/events", params={"lastEventId": last}).text.splitlines())]
        assert names[0] == "state" and names[-1] == "end"
    broken = jobs_client.post("/api/jobs", content=b"--x\r\nno headers\r\n--x--\r\n",
                              headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert broken.status_code == 400 and "MAX_JOB_FILES" not in broken.json()["detail"]
    dotted = submit(jobs_client, ("..\\..\\.hidden.png", image_bytes())).json()["jobId"]
    finished(jobs_client, dotted)
    markdown = jobs_client.get(f"/api/jobs/{dotted}/result", params={"format": "md"})
    assert markdown.headers["content-disposition"].endswith("''hidden.md")
