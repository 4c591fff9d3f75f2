"""`python -m dsocr convert` (dsocr/cli/): a folder tree of images, PDFs, a broken PDF and a text file converted
against the real server (`uvicorn app:app` on the tiny checkpoint) and in-process; outputs mirror the tree, a
second run sends nothing, a run killed mid-way resumes without a second job for any document. The walking,
the ledger, the retries and the writing are also checked on their own, where a failure is easier to read."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from dsocr.__main__ import main
from dsocr.cli.display import PlainLines, ProgressBar, Report, display_for, summary
from dsocr.cli.jobs_client import BACKOFF_FIRST_S, CONNECTION_TRIES, JobsClient, RequestFailed, retry_after_s
from dsocr.cli.ledger import COMPACT_SLACK, LEDGER_NAME, Ledger
from dsocr.cli.outputs import write_outputs
from dsocr.cli.walking import find_documents, output_bases
from helpers import ROOT, TEST_MAX_NEW_TOKENS, image_bytes, make_pdf, server_env, subprocess_env, wait_until
from live_server import Server, serving
from openai_standin import OpenAIStandIn

# --- the tree every test converts ------------------------------------------------------------------------------

GOOD = {  # input (relative to the tree) -> the markdown it gives (relative to the output folder)
    "cover.png": "cover.md",
    "a/scan.jpg": "a/scan.md",
    "a/b/report.pdf": "a/b/report.md",
    "a/b/untitled": "a/b/untitled.md",  # a PDF without an extension, known by its content
}
PAGES = {"cover.png": 1, "a/scan.jpg": 1, "a/b/report.pdf": 2, "a/b/untitled": 1}
BROKEN = "a/broken.pdf"
TEXT = "a/b/notes.txt"
CONVERT_TIMEOUT_S = 600


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


def test_the_ledger_is_rewritten_shorter_once_it_has_grown_and_keeps_what_matters(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for _ in range(COMPACT_SLACK):  # converted again and again
        entry = ledger.submitting("cover", [5, 1], {})
        ledger.submitted(entry, "job")
        ledger.finished(entry, "succeeded")
    pending = ledger.submitting("a/report", [9, 1], {})
    ledger.submitted(pending, "job-9")
    ledger.refused(ledger.submitting("broken", [3, 1], {}), "broken.pdf: not a PDF (HTTP 400)")
    ledger.close()
    again = Ledger(tmp_path)
    again.load()
    assert len((tmp_path / LEDGER_NAME).read_text().splitlines()) == 3 + 2 + 2
    again.close()
    compacted = Ledger(tmp_path)
    compacted.load()
    found = compacted.pending("a/report", [9, 1], {})
    assert found is not None and (found.key, found.job_id) == (pending.key, "job-9")
    assert compacted.refusal("broken", [3, 1], {}) == "broken.pdf: not a PDF (HTTP 400)"
    assert compacted.complete("cover") and compacted.pending("cover", [5, 1], {}) is None


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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_bars_of_documents_and_pages_with_failures_above_them() -> None:
    screen = Terminal()
    bar = display_for(screen)
    assert isinstance(bar, ProgressBar) and isinstance(display_for(io.StringIO()), PlainLines)
    bar.start(3)
    bar.add_pages(4)
    bar.pages_done(1)
    bar.pages_done(2)
    bar.done("docs/a.pdf", "converted, 3 pages -> md/a.md")
    bar.done("docs/b.pdf", "failed: b.pdf: broken (HTTP 400)")
    bar.stop()
    drawn = screen.getvalue()
    assert "docs/b.pdf: failed: b.pdf: broken (HTTP 400)" in drawn and "docs/a.pdf" not in drawn
    assert "2/3" in drawn and "3/4" in drawn and "pages/s" in drawn


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


def test_a_mistake_in_the_command_is_named_before_anything_is_read(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    tree = make_tree(tmp_path / "docs")
    (tmp_path / "taken").write_text("a file, not a folder")
    assert main(["convert", str(tree), "--out", str(tmp_path / "taken"), "--server", "http://127.0.0.1:9"]) == 1
    assert f"Cannot use {tmp_path / 'taken'} as the output folder" in capsys.readouterr().err
    assert main(["convert", str(tree), "--out", str(tmp_path / "md"), "--server", "http://127.0.0.1:9",
                 "--model", "demo"]) == 2
    assert "--model is for a conversion without --server" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["convert", str(tree), "--out", str(tmp_path / "md"), "--concurrency", "0"])
    assert usage.value.code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err


# --- against the real server, and in-process -------------------------------------------------------------------

@pytest.fixture(scope="module")
def jobs_server(native_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server on the tiny checkpoint, its database in a folder of its own."""
    folder = tmp_path_factory.mktemp("convert-server")
    env = server_env(native_checkpoint, folder / "runs", DEEPSEEK_OCR_DATA_DIR=str(folder / "data"),
                     DEEPSEEK_OCR_MAX_NEW_TOKENS=str(TEST_MAX_NEW_TOKENS))
    with serving(env) as server:
        yield server


def convert_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "dsocr", "convert", *args]


def convert(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, its output a pipe (not a terminal), as a script runs it."""
    return subprocess.run(convert_command(*args), check=False, cwd=cwd, capture_output=True, text=True,
                          timeout=CONVERT_TIMEOUT_S, env=subprocess_env(PYTHONPATH=str(ROOT), **env))


def job_ids(server: Server) -> set[str]:
    answer = httpx.get(f"{server.url}/api/jobs", params={"limit": 100}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {job["jobId"] for job in answer.json()["jobs"]}


def api_requests(server: Server) -> list[str]:
    """The requests to /api/ the server's access log shows so far."""
    return re.findall(r'"(?:GET|POST|DELETE) /api/[^"]*"', server.output())


def markdown_files(out: Path) -> dict[str, str]:
    return {path.relative_to(out).as_posix(): path.read_text() for path in sorted(out.rglob("*.md"))}


def assert_mirrored(tree: Path, out: Path, run: subprocess.CompletedProcess, with_json: bool) -> None:
    """Every good document converted, where the tree has it; the broken one named, with the server's reason."""
    assert run.returncode == 1, run.stdout + run.stderr
    assert sorted(markdown_files(out)) == sorted(GOOD.values()), run.stdout + run.stderr
    for source, markdown in GOOD.items():
        if with_json:
            answer = json.loads((out / markdown).with_suffix(".json").read_text())
            assert answer["fileName"] == Path(source).name and answer["status"] == "succeeded"
            assert len(answer["pages"]) == PAGES[source]
            # As bytes: read_text() would turn a "\r" in the random text into "\n".
            assert (out / markdown).read_bytes().decode() == answer["text"]
    failed = run.stdout[run.stdout.index("\nFailed:\n"):]
    assert f"  {tree / BROKEN}: broken.pdf: " in failed and "(HTTP 400)" in failed, run.stdout
    assert str(tree / TEXT) not in run.stdout  # ignored, counted
    assert "ignored 1 file that is neither an image nor a PDF" in run.stdout


def test_a_tree_converts_through_a_server_and_a_second_run_sends_nothing(jobs_server: Server, tmp_path: Path) -> None:
    tree, out = make_tree(tmp_path / "docs"), tmp_path / "md"
    before = job_ids(jobs_server)
    run = convert(str(tree), "--server", jobs_server.url, "--out", str(out), "--json")
    assert_mirrored(tree, out, run, with_json=True)
    assert len(job_ids(jobs_server) - before) == len(GOOD)  # one job a document; the broken one was refused
    # Not a terminal: plain lines, one per document, and no bar drawn.
    progress = [line for line in run.stdout.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in progress] == [f"[{n}/{len(GOOD) + 1}" for n in range(1, len(GOOD) + 2)]
    named = {line.split("] ", 1)[1].split(": ")[0] for line in progress}
    assert named == {str(tree / name) for name in [*GOOD, BROKEN]}
    assert "\x1b" not in run.stdout and "Converted 4 documents (5 pages)" in run.stdout

    written = {path: path.stat().st_mtime_ns for path in out.rglob("*.md")}
    requests = api_requests(jobs_server)
    assert sum('"POST /api/jobs ' in request for request in requests) >= len(GOOD) + 1  # the log shows them
    again = convert(str(tree), "--server", jobs_server.url, "--out", str(out), "--json")
    assert again.returncode == 1 and "skipped 4 (up to date)" in again.stdout, again.stdout + again.stderr
    assert f"{tree / BROKEN}: broken.pdf: " in again.stdout and "not sent again" in again.stdout
    assert api_requests(jobs_server) == requests  # not one request, for the converted files nor the broken one
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*.md")} == written


def test_a_run_killed_midway_resumes_without_a_second_job_for_any_document(jobs_server: Server, tmp_path: Path) -> None:
    tree, out = make_tree(tmp_path / "docs"), tmp_path / "md"
    args = (str(tree), "--server", jobs_server.url, "--out", str(out))
    before = job_ids(jobs_server)
    ledger = out / LEDGER_NAME

    def submitted() -> list[str]:
        return [line for line in ledger.read_text().splitlines() if '"submitted"' in line] if ledger.exists() else []

    first = subprocess.Popen(convert_command(*args, "--concurrency", "2"), cwd=ROOT, env=subprocess_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(submitted()) >= 2 or first.poll() is not None)
    finally:
        first.kill()
        first.wait()
    assert len(submitted()) >= 2, "the first run ended before two jobs were submitted"
    # As if the kill had come between sending the second submit and writing down its answer: the next run knows
    # that document's idempotency key only, not its job.
    lines = ledger.read_text().splitlines()
    lines.remove(submitted()[-1])
    ledger.write_text("".join(line + "\n" for line in lines))

    resumed = convert(*args)
    assert_mirrored(tree, out, resumed, with_json=False)
    made = job_ids(jobs_server) - before
    assert len(made) == len(GOOD), resumed.stdout  # re-attached, found by its key, or submitted: never twice
    recorded = {json.loads(line)["jobId"] for line in ledger.read_text().splitlines() if '"submitted"' in line}
    assert recorded == made


def test_without_a_server_the_service_runs_inside_the_command(native_checkpoint: Path, tmp_path: Path) -> None:
    tree, out = make_tree(tmp_path / "docs"), tmp_path / "md"
    run = convert(str(tree), "--out", str(out), "--model", str(native_checkpoint), "--json", cwd=tmp_path,
                  DEEPSEEK_OCR_MAX_NEW_TOKENS=str(TEST_MAX_NEW_TOKENS))
    assert "the service in this process" in run.stdout
    assert_mirrored(tree, out, run, with_json=True)
    # Its database, runs and history lived in a temporary folder: nothing of the service is left behind.
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["docs", "md"], left


def test_figures_are_fetched_from_the_server_and_the_markdown_links_to_them(openai_standin: OpenAIStandIn,
                                                                            tmp_path: Path) -> None:
    """Through the vLLM engine on the stand-in server, whose answer has a figure: the tiny checkpoint's random
    text never has one."""
    openai_standin.script.pieces = ["# Report\n\n", "<|ref|>image<|/ref|><|det|>[[100, 100, 600, 500]]<|/det|>\n",
                                    "A caption."]
    tree, out = tmp_path / "docs", tmp_path / "md"
    (tree / "a").mkdir(parents=True)
    (tree / "a" / "report.pdf").write_bytes(make_pdf(((200, 100), (100, 200))))
    env = {"DEEPSEEK_OCR_ENGINE": "vllm", "DEEPSEEK_OCR_VLLM_URLS": openai_standin.url,
           "DEEPSEEK_OCR_DATA_DIR": str(tmp_path / "data"), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs")}
    with serving(env) as server:
        run = convert(str(tree), "--server", server.url, "--out", str(out), "--figures")
    assert run.returncode == 0, run.stdout + run.stderr
    markdown = (out / "a" / "report.md").read_text()
    assert markdown.count("![](report_figures/figure-") == 2 and "/api/runs/" not in markdown
    for number in (1, 2):  # one figure a page, each the crop the server made
        with Image.open(out / "a" / "report_figures" / f"figure-{number}.jpg") as figure:
            assert figure.format == "JPEG" and figure.width > 1 and figure.height > 1
