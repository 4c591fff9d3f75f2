"""Inputs a hostile (or unlucky) client sends, each found by attacking the running service: none may produce a
500, hang another request or be misread."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from PIL import Image

from dsocr.pipeline.runs import RunStore
from helpers import ROOT, image_bytes, make_pdf, metric, post, wait_until
from live_server import Server, free_port, serving
from openai_standin import OpenAIStandIn
from standin_checkpoint import calls, set_answer


# The most pixels a side of a page gundam (the default mode) can use: a row of six 768-pixel tiles.
GUNDAM_SIDE = 768 * 6


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(3000, 1), (1, 3000), (20000, 8)])
def test_an_image_of_extreme_aspect_ratio_is_padded_and_read(client, size: tuple[int, int]) -> None:
    response = post(client, png(size))
    assert response.status_code == 200, response.text
    body = response.json()
    long_side = min(max(size), GUNDAM_SIDE)  # no larger than the mode can use
    assert max(body["imageWidth"], body["imageHeight"]) == long_side
    assert min(body["imageWidth"], body["imageHeight"]) == -(-long_side // 20)  # padded to 1:20


def test_a_pdf_page_of_extreme_aspect_ratio_is_read(client) -> None:
    response = post(client, make_pdf(((3000, 1), (200, 100))), filename="strip.pdf")
    assert response.status_code == 200, response.text
    assert len(response.json()["pages"]) == 2


def test_a_prompt_short_in_characters_but_long_in_tokens_is_422(client) -> None:
    response = post(client, image_bytes(), prompt="𝔸" * 3990)
    assert response.status_code == 422
    assert "DEEPSEEK_OCR_MAX_PROMPT_TOKENS" in response.json()["detail"]


@pytest.mark.parametrize("pages", ["1" * 5000, "1-" + "9" * 5000, "١", "1-٣"])
def test_page_selections_of_huge_or_non_ascii_numbers_are_422(client, pages: str) -> None:
    response = post(client, make_pdf(), filename="doc.pdf", pages=pages)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("path", ["images/0%00.png", "a/" * 3000 + "x.jpg"])
def test_odd_artifact_paths_are_404(client, path: str) -> None:
    response = client.get(f"/api/runs/{'0' * 32}/{path}")
    assert response.status_code == 404 and isinstance(response.json()["detail"], str)


def test_a_png_with_pdf_magic_in_its_first_kib_is_an_image(client) -> None:
    image = Image.new("RGB", (300, 200), "white")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=_text_chunk("Comment", "%PDF-1.7 in a comment"))
    data = buffer.getvalue()
    assert b"%PDF-" in data[:1024]
    response = post(client, data)
    assert response.status_code == 200 and response.json()["isPdf"] is False


def _text_chunk(key: str, value: str):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


def test_a_broken_pdf_that_mentions_encrypt_is_broken_not_encrypted(client) -> None:
    response = post(client, b"%PDF-1.7\n1 0 obj << /Encrypt 2 0 R >> garbage", filename="x.pdf")
    assert response.status_code == 400
    assert "broken" in response.json()["detail"]


def test_a_content_type_that_only_starts_like_multipart_is_415(client) -> None:
    response = client.post("/api/ocr", content=b"--x\r\n", headers={"Content-Type": "multipart/form-dataX; boundary=x"})
    assert response.status_code == 415


def test_a_pdf_without_artifacts_leaves_no_folder(client, client_runs_dir: Path) -> None:
    assert post(client, make_pdf(), filename="doc.pdf").status_code == 200
    assert list(client_runs_dir.iterdir()) == []  # no empty pages/N/ folders left for the TTL


def test_runs_finishing_together_never_trip_over_each_others_sweep(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs", ttl_s=3600, max_bytes=2000)
    store.prepare()
    runs = []
    for _ in range(60):
        run = store.create()
        (run.path / "images").mkdir()
        (run.path / "images" / "0.jpg").write_bytes(b"x" * 100)
        runs.append(run)
    failures: list[BaseException] = []

    def keep(run) -> None:
        try:
            store.keep(run)
        except BaseException as exc:  # noqa: BLE001 - the test collects every failure
            failures.append(exc)

    threads = [threading.Thread(target=keep, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum(1 for _ in (tmp_path / "runs").iterdir()) <= 20  # within the size cap


def test_a_departed_client_stops_the_remote_code_generation(standin_v1: Path, tmp_path: Path) -> None:
    set_answer(standin_v1, "word " * 300, token_delay_s=0.02)  # some 30 s of generation if nobody stops it
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(standin_v1), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
                     "DEEPSEEK_OCR_MAX_NEW_TOKENS": "4096"})
    try:
        server.wait_ready()
        request = httpx.Request("POST", f"{server.url}/api/ocr", files={"image": ("p.png", image_bytes())})
        head = "POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in request.headers.items() if name.lower() != "host")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head.encode() + b"\r\n" + request.read())
            # Leave once tokens are being generated.
            wait_until(lambda: (standin_v1 / "generating").exists(), timeout_s=60, interval_s=0.01)
        wait_until(lambda: calls(standin_v1), timeout_s=60)  # infer has returned
        [call] = calls(standin_v1)
        assert call["generated_tokens"] < 1500 / 2  # stopped, not run to the end of the scripted answer
        assert "Traceback" not in server.output()  # its removed run folder is no error of the page
    finally:
        server.stop()


def test_only_the_model_threads_prints_are_discarded(start_client, standin_v1: Path, capsys) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096)
    set_answer(standin_v1, "word " * 100, token_delay_s=0.02)
    answer: list = []
    worker = threading.Thread(target=lambda: answer.append(post(client, image_bytes())))
    worker.start()
    wait_until(lambda: client.app.state.model.scheduler.running, timeout_s=60, interval_s=0.01)
    print("another thread's line")
    worker.join(60)
    assert answer[0].status_code == 200
    printed = capsys.readouterr().out
    assert "another thread's line" in printed
    assert "stand-in streaming output" not in printed


def test_a_500_is_logged_once_with_its_request_id(standin_v1: Path, tmp_path: Path) -> None:
    set_answer(standin_v1, raise_message="stand-in failure")
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(standin_v1), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs")})
    try:
        server.wait_ready()
        response = httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", image_bytes())}, timeout=120)
        assert response.status_code == 500
        request_id = response.json()["requestId"]
        wait_until(lambda: metric(server.url, "deepseek_ocr_failures_total", reason="internal") >= 1, timeout_s=30)
        output = server.output()
        assert output.count("Traceback") == 1, output
        assert request_id in output
    finally:
        server.stop()


def test_an_unwritable_runs_dir_stops_startup_naming_the_variable(native_checkpoint: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", "1"], cwd=ROOT, capture_output=True, text=True,
        timeout=120, env={"PATH": "/usr/bin:/bin", "DEEPSEEK_OCR_MODEL_PATH": str(native_checkpoint),
                          "DEEPSEEK_OCR_RUNS_DIR": str(blocker / "runs"), "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode != 0
    assert "DEEPSEEK_OCR_RUNS_DIR" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("mode,side", [("gundam", GUNDAM_SIDE), ("base", 1024)])
def test_a_poster_sized_pdf_page_is_rendered_no_larger_than_the_mode_can_use(client, mode: str, side: int) -> None:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=14400, height=14400)  # 200 inches: 28800 px a side at 144 DPI
    buffer = io.BytesIO()
    writer.write(buffer)
    body = post(client, buffer.getvalue(), filename="poster.pdf", mode=mode).json()
    assert (body["imageWidth"], body["imageHeight"]) == (side, side)


def test_admission_counts_pages_and_refuses_past_the_page_budget(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096, ocr_max_queue_pages=3)
    set_answer(standin_v1, "word " * 40, token_delay_s=0.02)  # about 4 s a page
    first: list = []
    worker = threading.Thread(target=lambda: first.append(post(client, make_pdf(((200, 100), (100, 200))),
                                                              filename="two.pdf")))
    worker.start()
    wait_until(lambda: client.app.state.admission.pages >= 2, timeout_s=60, interval_s=0.01)
    refused = post(client, make_pdf(((200, 100), (100, 200))), filename="two-more.pdf")
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert "DEEPSEEK_OCR_MAX_QUEUE_PAGES" in refused.json()["detail"]
    worker.join(60)
    assert first[0].status_code == 200 and client.app.state.admission.pages == 0
    set_answer(standin_v1, "done")
    assert post(client, make_pdf(((200, 100), (100, 200))), filename="two-more.pdf").status_code == 200


def nested_forms_pdf(depth: int, copies: int = 4) -> bytes:
    """A PDF of 2-3 KB whose page draws a form that draws the next one `copies` times, `depth` deep: PDFium takes
    about 7 s to render it 7 deep on this machine, four times as long for each level more."""
    def stream(data: bytes, head: bytes = b"") -> bytes:
        return b"<< " + head + b"/Length %d >>\nstream\n" % len(data) + data + b"\nendstream"

    form = b"/Type /XObject /Subtype /Form /BBox [0 0 200 200] "
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /Resources << /XObject << /F 5 0 R >> >> "
        b"/Contents 4 0 R >>",
        stream(b"/F Do"),
    ]
    for level in range(depth - 1):
        objects.append(stream(b" ".join([b"q /F Do Q"] * copies),
                              form + b"/Resources << /XObject << /F %d 0 R >> >> " % (6 + level)))
    objects.append(stream(b"0.5 w " + b"".join(b"%d 0 m %d 200 l S " % (i, 200 - i) for i in range(40)), form))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_a_pdf_page_past_its_render_budget_is_422_and_holds_nobody_up(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_pdf_page_timeout_s=5)
    set_answer(standin_v1, "words")
    slow: list = []
    worker = threading.Thread(target=lambda: slow.append(post(client, nested_forms_pdf(9), filename="slow.pdf")))
    worker.start()
    wait_until(lambda: client.app.state.metrics.pdf_workers_busy._value.get() >= 1)  # rendering the slow page
    # Another PDF is rendered by another worker meanwhile, and answered before the slow one's budget is out.
    assert post(client, make_pdf(), filename="quick.pdf").status_code == 200
    assert not slow
    worker.join(60)
    assert slow[0].status_code == 422
    assert "Page 1" in slow[0].json()["detail"] and "DEEPSEEK_OCR_PDF_PAGE_TIMEOUT_S" in slow[0].json()["detail"]
    # The killed worker was replaced: PDFs still render.
    assert post(client, make_pdf(), filename="after.pdf").status_code == 200


def _pdf_workers(pid: int) -> dict[int, int]:
    """The PDF worker processes of the server `pid` (not multiprocessing's resource tracker), with the CPU time
    (clock ticks) each has used."""
    workers = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                stat = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                workers[int(child)] = int(stat[11]) + int(stat[12])  # utime + stime
    return workers


def test_a_departed_client_stops_its_pdf_rendering(standin_v1: Path, tmp_path: Path) -> None:
    env = {"DEEPSEEK_OCR_MODEL_PATH": str(standin_v1), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
           "DEEPSEEK_OCR_PDF_PAGE_TIMEOUT_S": "600"}
    with serving(env) as server:
        idle = _pdf_workers(server.process.pid)
        request = httpx.Request("POST", f"{server.url}/api/ocr", files={"image": ("slow.pdf", nested_forms_pdf(10))})
        head = "POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in request.headers.items() if name.lower() != "host")
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head.encode() + b"\r\n" + request.read())
            def renderer() -> int | None:  # the worker that has used a second of CPU renders the page
                now = _pdf_workers(server.process.pid)
                return next((pid for pid, ticks in now.items() if ticks > idle.get(pid, 0) + 100), None)

            wait_until(lambda: renderer() is not None)
            busy = renderer()
            assert metric(server.url, "deepseek_ocr_admitted") == 1
        # Without the client, its slot is given back and its renderer killed, long before the render could end.
        wait_until(lambda: metric(server.url, "deepseek_ocr_admitted") == 0
                   and busy not in _pdf_workers(server.process.pid))


@pytest.mark.parametrize("fmt,mode,size,expected", [
    ("PNG", "base", (7000, 7000), (1024, 1024)),
    ("JPEG", "base", (6000, 4000), (1024, 683)),
    ("PNG", "gundam", (7000, 3500), (GUNDAM_SIDE, GUNDAM_SIDE // 2)),
])
def test_a_huge_image_is_scaled_down_to_what_the_mode_can_use(client, fmt: str, mode: str, size, expected) -> None:
    response = post(client, image_bytes(size, fmt), filename=f"big.{fmt.lower()}", mode=mode)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["imageWidth"], body["imageHeight"]) == expected
    assert body["pages"][0]["layout"]["width"] == expected[0]


def test_a_long_pdf_is_rendered_as_its_pages_are_read_not_all_up_front(start_client, standin_v1: Path) -> None:
    from dsocr.pipeline.pages import PAGES_IN_FLIGHT
    from dsocr.pipeline.pdf_workers import PdfSource

    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096)
    set_answer(standin_v1, "word " * 5, token_delay_s=0.02)
    rendered: list[tuple[int, int]] = []  # (page, pages the model had finished when it was rendered)
    render = PdfSource.render

    async def counting_render(self, number: int):
        rendered.append((number, len(calls(standin_v1))))
        return await render(self, number)

    pages = PAGES_IN_FLIGHT + 4
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PdfSource, "render", counting_render)
        response = post(client, make_pdf(((100, 100),) * pages), filename="long.pdf")
    assert response.status_code == 200, response.text
    assert [number for number, _ in rendered] == list(range(1, pages + 1))  # in page order
    assert all(number - finished <= PAGES_IN_FLIGHT for number, finished in rendered)


@pytest.mark.parametrize("when", ["idle", "rendering"])
def test_a_pdf_worker_that_dies_is_replaced_and_the_next_pdf_is_read(start_client, standin_v1: Path, when: str) -> None:
    import os
    import signal as signals

    client = start_client(checkpoint=standin_v1)
    set_answer(standin_v1, "words")
    pool = client.app.state.pdf_workers
    assert post(client, make_pdf(), filename="first.pdf").status_code == 200  # the workers are started
    if when == "idle":
        for worker in list(pool.workers):  # the OOM killer, or a signal to the whole process group
            os.kill(worker.process.pid, signals.SIGKILL)
            worker.process.join(10)
    else:
        crashed: list = []
        sender = threading.Thread(target=lambda: crashed.append(post(client, nested_forms_pdf(9), filename="s.pdf")))
        sender.start()
        wait_until(lambda: client.app.state.metrics.pdf_workers_busy._value.get() >= 1)
        busy = next(w for w in list(pool.workers) if w not in pool.idle)
        os.kill(busy.process.pid, signals.SIGSEGV)
        sender.join(60)
        assert crashed[0].status_code == 400 and "renderer" in crashed[0].json()["detail"]
    for name in ("next.pdf", "and-the-next.pdf"):
        assert post(client, make_pdf(), filename=name).status_code == 200


@pytest.mark.parametrize(("range_header", "status", "words"), [
    ("bytes=999999-", 416, ("outside the file", "1000 bytes")),
    ("bytes=abc", 400, ("Range",)),
    ("pages=0-1", 400, ("Range",)),
])
def test_a_range_an_artifact_cannot_serve_is_the_json_error_shape(client, range_header: str, status: int,
                                                                 words: tuple[str, ...]) -> None:
    runs: RunStore = client.app.state.runs
    run = runs.create()
    (run.path / "figure.png").write_bytes(bytes(1000))
    runs.keep(run)
    url = f"/api/runs/{run.id}/figure.png"
    assert client.get(url, headers={"Range": "bytes=10-19"}).content == bytes(10)  # a Range it can serve: 206
    response = client.get(url, headers={"Range": range_header})
    assert response.status_code == status and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["requestId"] == response.headers["x-request-id"]
    for word in words:
        assert word in body["detail"], body


def can_mount_in_a_user_namespace() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not can_mount_in_a_user_namespace(), reason="needs unshare and unprivileged user namespaces")
def test_a_full_runs_disk_is_a_507_naming_it_and_readiness_says_so_until_space_is_back(tmp_path: Path) -> None:
    """A real full disk: the server runs in a user and mount namespace of its own (no root needed), its runs
    folder a 256 KiB tmpfs filled up before it starts; in front of a stand-in vLLM server whose answer has a figure,
    so that the request writes a crop."""
    runs = tmp_path / "runs"
    runs.mkdir()
    standin = OpenAIStandIn().start()
    standin.script.pieces = ["<|ref|>image<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>"]
    fill = f'mount -t tmpfs -o size=256k tmpfs "{runs}" && (head -c 1000000 /dev/zero > "{runs}/filler" || true)'
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
    env.update(DEEPSEEK_OCR_ENGINE="vllm", DEEPSEEK_OCR_VLLM_URLS=standin.url, DEEPSEEK_OCR_RUNS_DIR=str(runs),
               DEEPSEEK_OCR_DATA_DIR=str(tmp_path / "data"), DEEPSEEK_OCR_HISTORY_DIR=str(tmp_path / "history"))
    with open(tmp_path / "server.log", "w+") as log:
        process = subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", fill + ' 2>/dev/null && exec "$@"', "sh",
             sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _status(f"{url}/health") == 200)
            response = httpx.post(f"{url}/api/ocr", files={"image": ("p.png", image_bytes())}, timeout=60)
            assert response.status_code == 507, response.text
            assert "DEEPSEEK_OCR_RUNS_DIR" in response.json()["detail"] and response.json()["requestId"]
            health = httpx.get(f"{url}/health/ready")
            assert health.status_code == 503 and "is full" in health.json()["detail"]
            assert metric(url, "deepseek_ocr_failures_total", reason="storage_full") == 1
            os.remove(f"/proc/{process.pid}/root{runs}/filler")  # the operator frees space, as the server sees it
            wait_until(lambda: _status(f"{url}/health/ready") == 200)
            assert httpx.post(f"{url}/api/ocr", files={"image": ("p.png", image_bytes())}, timeout=60).status_code == 200
        finally:
            process.terminate()
            process.wait(60)
            standin.stop()


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0
