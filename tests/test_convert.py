"""`python -m dsocr convert` (dsocr/cli/): a folder tree of images, PDFs, a broken PDF and a text file converted
against the real server (`uvicorn app:app` on the tiny checkpoint) and in-process; outputs mirror the tree, a
second run sends nothing, a run killed mid-way resumes without a second job for any document. The walking,
the ledger, the retries and the writing are also checked on their own, where a failure is easier to read."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath

import httpx
import pytest

from dsocr.cli.display import PlainLines, Report, summary
from dsocr.cli.jobs_client import BACKOFF_FIRST_S, CONNECTION_TRIES, JobsClient, RequestFailed, retry_after_s
from dsocr.cli.ledger import LEDGER_NAME, Ledger
from dsocr.cli.outputs import write_outputs
from dsocr.cli.walking import find_documents, output_bases
from helpers import ROOT, image_bytes, make_pdf

# --- the tree every test converts ------------------------------------------------------------------------------

GOOD = {  # input (relative to the tree) -> the markdown it gives (relative to the output folder)
    "cover.png": "cover.md",
    "a/scan.jpg": "a/scan.md",
    "a/b/report.pdf": "a/b/report.md",
    "a/b/untitled": "a/b/untitled.md",  # a PDF without an extension, known by its content
}
BROKEN = "a/broken.pdf"
TEXT = "a/b/notes.txt"


def make_tree(root: Path) -> Path:
    files = {
        "cover.png": image_bytes((320, 240)),
        "a/scan.jpg": image_bytes((240, 320), fmt="JPEG"),
        "a/b/report.pdf": make_pdf(((200, 100), (100, 200))),
        "a/b/untitled": make_pdf(((150, 150),)),
        BROKEN: b"%PDF-1.7\nthis is no PDF at all\n",
        TEXT: b"plain text, no document\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


# --- finding documents and naming outputs ----------------------------------------------------------------------

def test_documents_are_found_by_content_and_their_outputs_mirror_the_tree(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    out = tree / "out"  # inside the tree: never read as input
    out.mkdir()
    (out / "old.png").write_bytes(image_bytes())
    found = find_documents([str(tree)], [], exclude=out)
    bases, clashes = output_bases(found.sources)
    outputs = {source.relative.as_posix(): f"{base}.md" for source, base in bases.items()}
    assert outputs == {**GOOD, BROKEN: "a/broken.md"}  # the broken PDF starts like one: the server judges it
    assert found.ignored == [tree / TEXT]
    assert not clashes and not found.unreadable


def test_a_list_on_stdin_keeps_its_relative_paths_and_a_file_argument_lands_on_top(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    found = find_documents(["-", str(tmp_path / "cover.png")], ["a/scan.jpg\n", "\n", "a/b/report.pdf\n"])
    assert [source.relative.as_posix() for source in found.sources] == ["a/scan.jpg", "a/b/report.pdf", "cover.png"]


def test_the_same_file_named_twice_is_converted_once_and_clashing_outputs_are_named(tmp_path: Path) -> None:
    make_tree(tmp_path / "one")
    (tmp_path / "one" / "a" / "b" / "report.png").write_bytes(image_bytes())
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "cover.png").write_bytes(image_bytes())
    found = find_documents([str(tmp_path / "one"), str(tmp_path / "one" / "cover.png"), str(tmp_path / "two")], [])
    assert [str(s.path) for s in found.sources].count(str(tmp_path / "one" / "cover.png")) == 1
    bases, clashes = output_bases(found.sources)
    # Beside each other, report.pdf and report.png both keep their extension; the same path in two roots cannot.
    assert {str(base) for base in bases.values()} >= {"a/b/report.pdf", "a/b/report.png"}
    assert {str(loser.path): str(winner.path) for loser, winner in clashes.items()} == {
        str(tmp_path / "two" / "cover.png"): str(tmp_path / "one" / "cover.png")}


def test_an_unreadable_file_is_reported_and_the_others_still_found(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "a" / "gone.pdf").symlink_to(tmp_path / "nowhere.pdf")  # unreadable, even for root
    found = find_documents([str(tmp_path)], [])
    assert [(path.name, why) for path, why in found.unreadable] == [("gone.pdf", "No such file or directory")]
    assert len(found.sources) == len(GOOD) + 1  # and the broken PDF


# --- the ledger ------------------------------------------------------------------------------------------------

def test_the_ledger_finds_an_unfinished_job_again_even_after_a_line_cut_short(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    first = ledger.submitting("a/report", [10, 1], {"mode": "tiny"})
    ledger.submitted(first, "job-1")
    done = ledger.submitting("cover", [5, 1], {})
    ledger.submitted(done, "job-2")
    ledger.finished(done, "succeeded")
    ledger.close()
    with open(tmp_path / LEDGER_NAME, "a") as file:
        file.write('{"event": "submitting", "output": "a/scan", "ke')  # the process killed mid-line

    again = Ledger(tmp_path)
    again.load()
    pending = again.pending("a/report", [10, 1], {"mode": "tiny"})
    assert pending is not None and (pending.key, pending.job_id) == (first.key, "job-1")
    assert again.pending("a/report", [11, 1], {"mode": "tiny"}) is None  # the file changed since
    assert again.pending("a/report", [10, 1], {"mode": "base"}) is None  # other options
    assert again.pending("cover", [5, 1], {}) is None and again.complete("cover")
    third = again.submitting("a/scan", [1, 1], {})
    again.close()

    lines = (tmp_path / LEDGER_NAME).read_text().splitlines()
    assert json.loads(lines[-1])["key"] == third.key  # on a line of its own, after the cut one


def test_a_refusal_is_remembered_for_that_file_and_a_partial_output_is_converted_again(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.refused(ledger.submitting("broken", [3, 1], {}), "broken.pdf: not a PDF (HTTP 400)")
    partial = ledger.submitting("report", [9, 1], {})
    ledger.submitted(partial, "job-3")
    ledger.finished(partial, "partial")
    ledger.close()
    again = Ledger(tmp_path)
    again.load()
    assert again.refusal("broken", [3, 1], {}) == "broken.pdf: not a PDF (HTTP 400)"
    assert again.refusal("broken", [4, 1], {}) is None
    assert not again.complete("report")


# --- retries ---------------------------------------------------------------------------------------------------

class Script:
    """A stand-in transport playing a list of answers (or connection failures) in turn: a busy server and a
    lost connection, in the order a test needs, cannot be had from the real one on demand. Records what was
    sent."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def scripted_client(script: Script) -> tuple[JobsClient, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    return JobsClient("http://service.test", "k3y", transport=httpx.MockTransport(script), sleep=sleep), waits


def test_a_submit_waits_out_busy_answers_and_lost_connections_and_resends_the_whole_file(tmp_path: Path) -> None:
    document = tmp_path / "scan.png"
    document.write_bytes(image_bytes())
    script = Script(
        httpx.Response(503, headers={"Retry-After": "7"}, json={"detail": "the queue is full"}),
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.ConnectError("refused"),
        httpx.Response(502),
        httpx.Response(202, json={"jobId": "j1", "status": "queued", "pagesTotal": 1}),
    )
    client, waits = scripted_client(script)
    accepted = asyncio.run(client.submit(document, "scan.png", "image/png", {"mode": "tiny"}, "key-1"))
    assert accepted["jobId"] == "j1"
    assert waits == [7, 0.5, BACKOFF_FIRST_S, BACKOFF_FIRST_S * 2]  # "Retry-After: 0" is no busy loop
    assert {request.headers["Idempotency-Key"] for request in script.requests} == {"key-1"}
    assert all(document.read_bytes() in request.content for request in script.requests)
    assert all(request.headers["Authorization"] == "Bearer k3y" for request in script.requests)


def test_a_server_out_of_reach_fails_after_backing_off_and_a_refusal_at_once() -> None:
    client, waits = scripted_client(Script(*[httpx.ConnectError("refused")] * CONNECTION_TRIES))
    with pytest.raises(RequestFailed, match="cannot reach http://service.test") as failure:
        asyncio.run(client.job("j1"))
    assert failure.value.fatal
    assert len(waits) == CONNECTION_TRIES - 1 and waits == sorted(waits) and waits[-1] <= 30

    client, waits = scripted_client(Script(httpx.Response(415, json={"detail": "x.pdf: not an image or a PDF"})))
    with pytest.raises(RequestFailed, match=r"x.pdf: not an image or a PDF \(HTTP 415\)") as refused:
        asyncio.run(client.result("j1"))
    assert refused.value.status == 415 and waits == []


def test_retry_after_may_be_a_date_and_is_kept_within_bounds() -> None:
    later = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=40), usegmt=True)
    assert 30 < retry_after_s(httpx.Response(503, headers={"Retry-After": later})) <= 40
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "86400"})) == 300
    assert retry_after_s(httpx.Response(503, headers={"Retry-After": "soon"})) == 5


# --- writing ---------------------------------------------------------------------------------------------------

def test_figures_are_downloaded_beside_the_markdown_which_links_to_them(tmp_path: Path) -> None:
    link = "/api/runs/" + "0" * 32
    answer = {"text": f"# Title\n\n![]({link}/pages/1/images/0.jpg)\ntext\n\n![]({link}/pages/2/images/0.jpg)\n",
              "pages": [{"page": 1}, {"page": 2}]}
    fetched: list[str] = []

    async def download(url: str) -> bytes:
        fetched.append(url)
        return url.encode()

    target = tmp_path / "a" / "report.md"
    asyncio.run(write_outputs(target, answer, True, True, download))
    assert fetched == [f"{link}/pages/1/images/0.jpg", f"{link}/pages/2/images/0.jpg"]
    assert target.read_text() == ("# Title\n\n![](report_figures/figure-1.jpg)\ntext\n\n"
                                  "![](report_figures/figure-2.jpg)\n")
    assert (tmp_path / "a" / "report_figures" / "figure-2.jpg").read_bytes() == fetched[1].encode()
    assert json.loads((tmp_path / "a" / "report.json").read_text()) == answer
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json", "report.md", "report_figures"]


def test_plain_lines_and_the_summary_name_every_failure() -> None:
    stream = io.StringIO()
    lines = PlainLines(stream)
    lines.start(2)
    lines.done("docs/a.png", "converted, 1 page -> md/a.md")
    lines.done("docs/b.pdf", "failed: b.pdf: broken (HTTP 400)")
    assert stream.getvalue().splitlines() == ["[1/2] docs/a.png: converted, 1 page -> md/a.md",
                                              "[2/2] docs/b.pdf: failed: b.pdf: broken (HTTP 400)"]
    report = Report(converted=["docs/a.png"], skipped=["docs/c.png"], failed=[("docs/b.pdf", "broken")],
                    ignored=["docs/notes.txt"], pages=1)
    assert summary(report, "md") == (
        "Converted 1 document (1 page) into md, skipped 1 (up to date), failed 1; ignored 1 file that is neither "
        "an image nor a PDF.\nFailed:\n  docs/b.pdf: broken")
