"""POST /api/ocr/stream: progress events, raw text as it is generated, the final payload; errors as events."""

from __future__ import annotations

from pathlib import Path

from helpers import image_bytes, make_pdf, parse_events
from standin_checkpoint import set_answer

STABLE_FIELDS = ("mode", "prompt", "text", "rawText", "fileName", "fileSize", "model", "imageWidth", "imageHeight",
                 "finishReason", "regions")


def stream(client, data: bytes, **fields: str):
    with client.stream("POST", "/api/ocr/stream", files={"image": ("page.png", data, "image/png")}, data=fields) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_events(response.iter_lines())


def test_stream_reports_progress_text_and_the_same_payload_as_api_ocr(start_client) -> None:
    client = start_client(ocr_max_new_tokens=24)
    data = image_bytes((700, 500))
    events = stream(client, data, mode="base")
    names = [name for name, _ in events]
    assert names[0] == "queued" and events[0][1] == {"page": 1, "position": 0}
    assert names.index("started") < names.index("delta") < names.index("result") == len(names) - 1
    result = events[-1][1]
    deltas = "".join(data["text"] for name, data in events if name == "delta")
    assert deltas.strip() == result["rawText"] and len([n for n in names if n == "delta"]) > 1
    plain = client.post("/api/ocr", files={"image": ("page.png", data, "image/png")}, data={"mode": "base"}).json()
    assert {key: result[key] for key in STABLE_FIELDS} == {key: plain[key] for key in STABLE_FIELDS}
    assert result["timings"]["inferenceMs"] > 0


def test_pdf_pages_stream_with_their_page_numbers(client) -> None:
    events = stream(client, make_pdf(), pages="1,3")
    assert {data["page"] for name, data in events if name in ("queued", "started", "delta")} == {1, 3}
    assert [p["page"] for p in events[-1][1]["pages"]] == [1, 3]


def test_bad_input_is_refused_before_the_stream_with_json(client) -> None:
    response = client.post("/api/ocr/stream", files={"image": ("x.txt", b"not an image", "text/plain")})
    assert response.status_code == 415
    assert response.json()["detail"].startswith("Unsupported file type")
    response = client.post("/api/ocr/stream", files={"image": ("a.png", image_bytes(), "image/png")}, data={"mode": "huge"})
    assert response.status_code == 422


def test_a_failure_during_the_work_is_an_error_event(start_client, standin_v1: Path, runs_dir: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096, raise_server_exceptions=False)
    set_answer(standin_v1, raise_message="stand-in failure")
    events = stream(client, image_bytes())
    name, data = events[-1]
    assert name == "error" and data["status"] == 500 and data["requestId"] in data["detail"]
    assert list(runs_dir.iterdir()) == []
    set_answer(standin_v1, "fine again")
    assert stream(client, image_bytes())[-1][1]["text"] == "fine again"
