"""Running the service as operators do: request ids, one log line per OCR request, log formats, stream keep-alives,
a path prefix, the OpenAPI document (checked by a client generated from it), process metrics."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import TEST_MAX_NEW_TOKENS, image_bytes, post, wait_until
from live_server import serving
from standin_checkpoint import set_answer

def output_once(server, text: str) -> str:
    """The server's output once `text` is in it: a request's log line is written after its answer is sent."""
    wait_until(lambda: text in server.output())
    return server.output()


def test_the_clients_request_id_comes_back_on_answers_and_in_errors(client) -> None:
    ok = post(client, image_bytes(), headers={"X-Request-ID": "frontend-42"}, mode="base")
    assert ok.status_code == 200 and ok.headers["x-request-id"] == "frontend-42"
    refused = post(client, image_bytes(), headers={"X-Request-ID": "frontend-43"}, mode="huge")
    assert refused.status_code == 422
    assert refused.json()["requestId"] == "frontend-43" == refused.headers["x-request-id"]
    missing = client.get("/api/nothing-here", headers={"X-Request-ID": "frontend-44"})
    assert missing.status_code == 404 and missing.json()["requestId"] == "frontend-44"


def test_a_request_without_a_usable_id_gets_one_of_its_own(client) -> None:
    first = client.get("/health/live")
    second = client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces" + "x" * 200})
    ids = {first.headers["x-request-id"], second.headers["x-request-id"]}
    assert len(ids) == 2 and all(len(i) == 32 and i.isalnum() for i in ids)
    refused = client.post("/api/ocr", files={"image": ("notes.txt", b"plain text", "text/plain")})
    assert refused.status_code == 415 and refused.json()["requestId"] == refused.headers["x-request-id"]


def test_a_refusal_for_a_missing_api_key_carries_the_id(start_client) -> None:
    client = start_client(ocr_api_keys=["k-123"])
    refused = client.get("/api/modes", headers={"X-Request-ID": "no-key-1"})
    assert refused.status_code == 401 and refused.json()["requestId"] == "no-key-1"


def test_streams_send_keep_alive_comments_while_a_page_is_read(start_client, standin_v1: Path) -> None:
    # The remote-code engine streams no text: without comments, a proxy's idle timeout would cut the stream.
    client = start_client(checkpoint=standin_v1, ocr_sse_ping_s=0.2, ocr_max_new_tokens=4096)
    set_answer(standin_v1, "word " * 40, token_delay_s=0.02)
    with client.stream("POST", "/api/ocr/stream", files={"image": ("p.png", image_bytes(), "image/png")}) as response:
        lines = list(response.iter_lines())
    assert ": keep-alive" in lines
    assert lines.index(": keep-alive") < lines.index("event: result")


def test_artifact_urls_carry_the_root_path(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_root_path="/ocr", ocr_max_new_tokens=4096)
    set_answer(standin_v1, "<|ref|>image<|/ref|><|det|>[[0, 0, 499, 499]]<|/det|>\n\n"
                           "<|ref|>text<|/ref|><|det|>[[500, 500, 999, 999]]<|/det|>\nwords")
    body = post(client, image_bytes()).json()
    assert body["annotatedImageUrl"].startswith("/ocr/api/runs/")
    assert "](/ocr/api/runs/" in body["text"]
    # Behind a proxy that keeps the prefix, and one that strips it, the file is there.
    for url in (body["annotatedImageUrl"], body["annotatedImageUrl"].removeprefix("/ocr")):
        assert client.get(url).status_code == 200
    assert client.get("/openapi.json").json()["servers"] == [{"url": "/ocr"}]


def test_metrics_include_the_process(client) -> None:
    text = client.get("/metrics").text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert f"\n{name} " in text


def test_one_json_log_line_per_ocr_request_with_the_clients_id(native_checkpoint: Path, tmp_path: Path) -> None:
    env = {"DEEPSEEK_OCR_MODEL_PATH": str(native_checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
           "DEEPSEEK_OCR_MAX_NEW_TOKENS": str(TEST_MAX_NEW_TOKENS), "DEEPSEEK_OCR_LOG_FORMAT": "json"}
    with serving(env) as server:
        data = image_bytes()
        answer = httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", data)}, data={"mode": "base"},
                            headers={"X-Request-ID": "client-id-7"}, timeout=300)
        assert answer.status_code == 200
        refused = httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", data)}, data={"mode": "huge"},
                             headers={"X-Request-ID": "client-id-8"}, timeout=300)
        assert refused.status_code == 422
        for _ in range(3):
            assert httpx.get(f"{server.url}/health").status_code == 200
        output_once(server, "client-id-8")
        output = output_once(server, "client-id-7")
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert lines and len(lines) == len([line for line in output.splitlines() if line.strip()]), output
    [summary] = [line for line in lines if line.get("request_id") == "client-id-7" and "status" in line]
    body = answer.json()
    assert summary["status"] == 200 and summary["mode"] == "base" and summary["pages"] == 1
    assert summary["upload_bytes"] == len(data)
    assert summary["generated_tokens"] == body["pages"][0]["generatedTokens"] > 0
    assert summary["finish_reasons"] == [body["finishReason"]]
    assert summary["queue_ms"] == body["timings"]["queueMs"] and summary["inference_ms"] == body["timings"]["inferenceMs"]
    [failed] = [line for line in lines if line.get("request_id") == "client-id-8" and "status" in line]
    assert failed["status"] == 422
    assert not any("/health" in line["message"] for line in lines)  # probes stay out of the log
    assert "Loading weights" not in output and "%|" not in output  # no progress bars


def test_text_logs_name_the_request_id(native_checkpoint: Path, tmp_path: Path) -> None:
    env = {"DEEPSEEK_OCR_MODEL_PATH": str(native_checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
           "DEEPSEEK_OCR_MAX_NEW_TOKENS": str(TEST_MAX_NEW_TOKENS), "DEEPSEEK_OCR_LOG_PROBES": "true"}
    with serving(env) as server:
        httpx.post(f"{server.url}/api/ocr", files={"image": ("p.png", image_bytes())}, data={"mode": "base"},
                   headers={"X-Request-ID": "text-id-9"}, timeout=300)
        output = output_once(server, "request_id=text-id-9")
    [line] = [line for line in output.splitlines() if "request_id=text-id-9" in line]
    assert "status=200" in line and "mode=base" in line and "pages=1" in line
    assert '"GET /health HTTP/1.1" 200' in output  # DEEPSEEK_OCR_LOG_PROBES=true keeps probe lines


def test_every_error_answer_in_the_openapi_document_uses_the_error_model(client) -> None:
    document = client.get("/openapi.json").json()
    operations = [operation for path in document["paths"].values() for operation in path.values()]
    assert len({operation["operationId"] for operation in operations}) == len(operations)
    for operation in operations:
        assert operation["tags"] and operation.get("description") or operation.get("summary")
        errors = {status: answer for status, answer in operation["responses"].items()
                  if status[0] in "45" and operation["operationId"] != "health"}  # a probe's 503 says its status
        for status, answer in errors.items():
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (operation["operationId"], status)
    ocr = document["paths"]["/api/ocr"]["post"]["responses"]
    assert {"400", "401", "413", "415", "422", "503", "504"} <= set(ocr)
    assert "queued" in document["paths"]["/api/ocr/stream"]["post"]["responses"]["200"]["description"]
    fields = document["components"]["schemas"]["ErrorOut"]["properties"]
    assert fields["detail"]["description"] and fields["requestId"]["examples"]


def test_a_client_generated_from_the_openapi_document_reads_a_page(client, tmp_path: Path) -> None:
    pytest.importorskip("openapi_python_client")
    (tmp_path / "openapi.json").write_text(json.dumps(client.get("/openapi.json").json()))
    (tmp_path / "config.yml").write_text("project_name_override: ocr_client\npackage_name_override: ocr_client\npost_hooks: []\n")
    subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", "openapi.json", "--config", "config.yml",
         "--meta", "none", "--output-path", "ocr_client"],
        cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300,
    )
    sys.path.insert(0, str(tmp_path))
    try:
        generated = importlib.import_module("ocr_client")
        from ocr_client.api.ocr import api_ocr
        from ocr_client.api.service import api_modes
        from ocr_client.models import ApiOcrBody, ErrorOut, OcrResponse
        from ocr_client.types import File

        api = generated.Client(base_url="http://testserver")
        api.set_httpx_client(client)
        modes = api_modes.sync(client=api)
        assert "base" in modes.modes.additional_properties
        page = File(payload=image_bytes(), file_name="page.png", mime_type="image/png")
        result = api_ocr.sync(client=api, body=ApiOcrBody(image=page, mode="base"))
        assert isinstance(result, OcrResponse) and result.pages[0].raw_text == result.raw_text
        bad = api_ocr.sync(client=api, body=ApiOcrBody(image=page, mode="huge"))
        assert isinstance(bad, ErrorOut) and "huge" in bad.detail and bad.request_id
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name == "ocr_client" or name.startswith("ocr_client.")]:
            del sys.modules[name]


@pytest.mark.parametrize("path,kept", [("/health", False), ("/ocr/health/ready", False), ("/metrics?x=1", False),
                                       ("/api/ocr", True), ("/api/history/health", True)])
def test_probe_access_lines_are_left_out_with_or_without_a_root_path(path: str, kept: bool) -> None:
    import logging

    from dsocr.logs import ProbeFilter

    record = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", path, "1.1", 200), None)
    assert ProbeFilter().filter(record) is kept


def test_a_stream_whose_client_leaves_is_logged_as_499(start_client, standin_v1: Path, caplog) -> None:
    import logging

    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096)
    set_answer(standin_v1, "word " * 200, token_delay_s=0.02)
    with caplog.at_level(logging.INFO, logger="deepseek_ocr.request"):
        with client.stream("POST", "/api/ocr/stream", files={"image": ("p.png", image_bytes(), "image/png")}) as response:
            for line in response.iter_lines():
                if line.startswith("event: started"):
                    break  # and leave
        wait_until(lambda: any("status=499" in r.getMessage() for r in caplog.records))
