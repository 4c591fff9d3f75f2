"""The web frontend this service exists for (the Vue app of Cross2pro/DeepSeek-OCR-Dashboard, which the seed
document comes from), as a contract: every endpoint it calls answers with the fields it reads, in the shapes it
reads them. First the version the seed was written for (modes keyed by name, `maxImageMb`), then today's
(progress tasks, pages with layout and previews, history)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import threading
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image

from helpers import image_bytes, make_pdf, parse_events
from live_server import Server
from standin_checkpoint import set_answer

FRONTEND_ORIGIN = "http://localhost:5173"  # the Vite dev server the frontend runs on
SEED_MODE_FIELDS = {"label", "description", "base_size", "image_size", "crop_mode", "test_compress", "speed",
                    "quality", "visionTokens"}
HEX_ID = re.compile(r"[0-9a-f]{32}")
STAGES = ("pending", "upload", "preprocessing", "inference", "postprocessing", "complete")


def seed_upload(client, data: bytes, filename: str = "math.png", **extra: str):
    """What the frontend's FormData holds, in its order: mode, prompt, image (then task_id, in today's)."""
    fields = {"mode": "gundam", "prompt": "<image>\n<|grounding|>Convert the document to markdown.", **extra}
    return client.post("/api/ocr", data=fields, files={"image": (filename, data, "image/png")},
                       headers={"Origin": FRONTEND_ORIGIN})


def decode_data_url(url: str) -> Image.Image:
    head, payload = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(payload)))


# --- The seed's frontend --------------------------------------------------------------------------------------

def test_modes_is_an_object_keyed_by_mode_name_with_the_seeds_fields(client) -> None:
    body = client.get("/api/modes", headers={"Origin": FRONTEND_ORIGIN}).json()
    assert set(body) == {"defaultPrompt", "modes", "maxImageMb", "engine", "family", "defaultMode", "prompts"}
    assert body["maxImageMb"] == 15 and body["defaultPrompt"] == "<image>\n<|grounding|>Convert the document to markdown."
    assert list(body["modes"]) == ["gundam", "base"]  # the frontend selects "gundam", else the first key
    for mode in body["modes"].values():
        assert set(mode) == SEED_MODE_FIELDS
        assert all(isinstance(mode[key], str) and mode[key] for key in ("label", "description", "speed", "quality"))
        assert all(isinstance(mode[key], int) for key in ("base_size", "image_size", "visionTokens"))
        assert mode["test_compress"] is False
    assert body["modes"]["gundam"] | {"description": ""} == {
        "label": "Gundam (dynamic tiles)", "description": "", "base_size": 1024, "image_size": 768,
        "crop_mode": True, "test_compress": False, "speed": "medium", "quality": "highest", "visionTokens": 1120,
    }
    assert (body["modes"]["base"]["base_size"], body["modes"]["base"]["crop_mode"]) == (1024, False)


def test_health_carries_the_seed_backends_fields(client) -> None:
    body = client.get("/health").json()
    assert set(body) == {"status", "modelLoaded", "modes", "model", "engine", "family", "device", "dtype",
                         "attnImplementation", "demo"}
    assert (body["status"], body["modelLoaded"], body["modes"]) == ("ok", True, ["base", "gundam"])
    assert body["demo"] is False


def test_health_before_the_model_is_ready_keeps_503_with_the_seed_fields(start_client, tmp_path: Path) -> None:
    broken = tmp_path / "weightless"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "deepseek_ocr2"}))
    response = start_client(checkpoint=broken).get("/health")
    assert response.status_code == 503
    assert set(response.json()) == {"status", "modelLoaded", "modes", "detail", "demo"}
    assert (response.json()["modelLoaded"], response.json()["modes"]) == (False, ["base", "gundam"])


def test_the_seed_frontends_upload_from_another_origin_gets_the_seed_payload(client) -> None:
    data = image_bytes((600, 400))
    response = seed_upload(client, data)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    body = response.json()
    assert (body["mode"], body["fileName"], body["fileSize"]) == ("gundam", "math.png", len(data))
    assert body["prompt"] == "<image>\n<|grounding|>Convert the document to markdown."
    assert isinstance(body["text"], str) and body["rawText"]
    assert isinstance(body["durationMs"], float)  # the frontend calls durationMs.toFixed(0)


def test_cors_preflight_and_event_stream_get_from_the_frontends_origin(client) -> None:
    preflight = client.options("/api/ocr", headers={
        "Origin": FRONTEND_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    task = client.post("/api/task/create", headers={"Origin": FRONTEND_ORIGIN})
    assert task.headers["access-control-allow-origin"] == "*"
    # What an EventSource sends: a plain GET with Origin and Accept, no credentials.
    with client.stream("GET", f"/api/progress/{task.json()['taskId']}", headers={
            "Origin": FRONTEND_ORIGIN, "Accept": "text/event-stream"}) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == "*"
        assert stream.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in stream.iter_lines() if line.startswith("data:"))
    assert json.loads(first[len("data:"):]) == {"stage": "pending", "current": 0, "total": 0,
                                                 "message": "Waiting for the upload", "percent": 0}


# --- Today's frontend: results ----------------------------------------------------------------------------------

def test_an_image_result_has_pages_layout_preview_and_history_fields(client) -> None:
    body = seed_upload(client, image_bytes((3200, 2000))).json()
    assert body["isPdf"] is False
    assert datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00")).tzinfo is not None
    assert HEX_ID.fullmatch(body["historyId"])
    [page] = body["pages"]
    assert page["pageIndex"] == 0
    assert page["layout"] == body["layout"] == {"width": 3200, "height": 2000, "items": []}  # random weights: no tags
    preview = decode_data_url(page["imageData"])
    # Shrunk by a whole factor to at most 1280 px a side (3200 / 3 = 1067), aspect kept.
    assert preview.format == "JPEG" and preview.size == (1067, 667)


def test_layout_groups_the_boxes_of_each_tag_in_pixels_and_fractions(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096)
    set_answer(standin_v1, "<|ref|>title<|/ref|><|det|>[[0, 0, 499, 99]]<|/det|>\n# T\n\n"
                           "<|ref|>table<|/ref|><|det|>[[0, 500, 999, 999], [100, 100, 200, 200]]<|/det|>\nrows\n"
                           "<|ref|>image<|/ref|><|det|>[[1, 2, 3]]<|/det|>\n")  # no valid box: no item
    body = seed_upload(client, image_bytes((999, 1998))).json()
    assert body["layout"] == {"width": 999, "height": 1998, "items": [
        {"id": "title-0", "label": "title", "boxes": [
            {"index": 0, "absolute": [0, 0, 499, 198], "normalized": [0.0, 0.0, 0.499499, 0.099099]}]},
        {"id": "table-1", "label": "table", "boxes": [
            {"index": 0, "absolute": [0, 1000, 999, 1998], "normalized": [0.0, 0.500501, 1.0, 1.0]},
            {"index": 1, "absolute": [100, 200, 200, 400], "normalized": [0.1001, 0.1001, 0.2002, 0.2002]}]},
    ]}
    assert body["pages"][0]["layout"] == body["layout"]
    assert len(body["regions"]) == 3  # the flat list keeps one region per box


def test_a_pdf_result_has_one_entry_per_page_with_its_index_layout_and_preview(client) -> None:
    body = seed_upload(client, make_pdf(), filename="report.pdf", pages="1,3").json()
    assert body["isPdf"] is True
    assert [(p["pageIndex"], p["page"]) for p in body["pages"]] == [(0, 1), (1, 3)]
    for page in body["pages"]:
        assert (page["layout"]["width"], page["layout"]["height"]) == (page["imageWidth"], page["imageHeight"])
        assert decode_data_url(page["imageData"]).size == (page["imageWidth"], page["imageHeight"])  # small pages
    assert body["layout"] == body["pages"][0]["layout"]


def test_page_previews_can_be_turned_off(start_client) -> None:
    body = seed_upload(start_client(ocr_page_previews=False), image_bytes()).json()
    assert body["pages"][0]["imageData"] is None


# --- Today's frontend: progress tasks ----------------------------------------------------------------------------

def progress(client, task_id: str) -> list[tuple[str, dict]]:
    with client.stream("GET", f"/api/progress/{task_id}") as response:
        assert response.status_code == 200
        return parse_events(response.iter_lines())


def test_task_ids_are_random_and_an_unknown_task_ends_its_stream_at_once(client) -> None:
    ids = {client.post("/api/task/create").json()["taskId"] for _ in range(3)}
    assert len(ids) == 3 and all(HEX_ID.fullmatch(task_id) for task_id in ids)
    events = progress(client, "0" * 32)
    assert [name for name, _ in events] == ["message", "complete"]  # onmessage hears the error too
    assert events[0][1]["stage"] == "error" and "Unknown" in events[0][1]["message"]


def test_a_finished_requests_task_reports_complete(client) -> None:
    task_id = client.post("/api/task/create").json()["taskId"]
    assert seed_upload(client, image_bytes(), task_id=task_id).status_code == 200
    events = progress(client, task_id)
    assert [name for name, _ in events] == ["message", "complete"]
    assert events[0][1] == {"stage": "complete", "current": 1, "total": 1, "message": "Done", "percent": 100}


def test_a_failed_requests_task_reports_the_error(client) -> None:
    task_id = client.post("/api/task/create").json()["taskId"]
    assert seed_upload(client, b"not an image at all", task_id=task_id).status_code == 415
    [(_, state), (name, _)] = progress(client, task_id)
    assert (state["stage"], name) == ("error", "complete")
    assert state["message"].startswith("Unsupported file type")


def test_a_task_named_before_the_body_hears_of_a_refusal_before_the_form_is_read(start_client) -> None:
    client = start_client(max_image_mb=0.01)
    for how in ({"params": {"task_id": None}}, {"headers": {"X-Task-Id": None}}):
        task_id = client.post("/api/task/create").json()["taskId"]
        key = next(iter(how))
        options = {key: {name: task_id for name in how[key]}}
        response = client.post("/api/ocr", files={"image": ("big.png", os.urandom(50_000))}, **options)
        assert response.status_code == 413
        [(_, state), (name, _)] = progress(client, task_id)
        assert (state["stage"], name) == ("error", "complete") and "too large" in state["message"]


def test_tasks_are_bounded_finished_ones_forgotten_first(start_client) -> None:
    client = start_client()  # its own app: the task store starts empty
    store = client.app.state.tasks.store
    store.max_per_key = 4  # the real cap is 1024 a key: the same rule, smaller
    first = client.post("/api/task/create").json()["taskId"]
    finished = client.post("/api/task/create").json()["taskId"]
    assert seed_upload(client, image_bytes(), task_id=finished).status_code == 200
    for _ in range(store.max_per_key - 2):
        client.post("/api/task/create")
    assert store.count() == store.max_per_key
    client.post("/api/task/create")  # one too many: the finished task goes
    assert progress(client, finished)[0][1]["message"] == "Unknown or expired task id"
    client.post("/api/task/create")  # then the least recently updated
    assert progress(client, first)[0][1]["message"] == "Unknown or expired task id"
    assert store.count() == store.max_per_key


def test_progress_follows_a_pdf_page_by_page_over_the_real_server(real_server: Server) -> None:
    """The frontend's order: create the task, open the event stream, then post the OCR with task_id."""
    task_id = httpx.post(f"{real_server.url}/api/task/create", headers={"Origin": FRONTEND_ORIGIN}).json()["taskId"]
    events: list[tuple[str, dict]] = []
    connected = threading.Event()

    def follow() -> None:
        with httpx.stream("GET", f"{real_server.url}/api/progress/{task_id}", timeout=120,
                          headers={"Origin": FRONTEND_ORIGIN, "Accept": "text/event-stream"}) as response:
            lines = []
            for line in response.iter_lines():
                lines.append(line)
                connected.set()
            events.extend(parse_events(lines))

    follower = threading.Thread(target=follow)
    follower.start()
    assert connected.wait(60)
    response = httpx.post(f"{real_server.url}/api/ocr", data={"mode": "base", "prompt": "Free OCR.", "task_id": task_id},
                          files={"image": ("two.pdf", make_pdf(((200, 100), (150, 150))), "application/pdf")},
                          timeout=120)
    follower.join(60)
    assert response.status_code == 200, response.text
    assert not follower.is_alive()
    states = [data for name, data in events if name == "message"]
    stages = [state["stage"] for state in states]
    assert [stage for stage in STAGES if stage in stages] == list(dict.fromkeys(stages))  # in order, none skipped back
    assert set(stages) == set(STAGES)
    inference = [(s["current"], s["total"]) for s in states if s["stage"] == "inference"]
    assert inference[0] == (0, 2) and (2, 2) in inference and (1, 2) in inference
    percents = [state["percent"] for state in states]
    assert percents == sorted(percents) and percents[-1] == 100
    assert events[-1][0] == "complete" and events[-1][1]["stage"] == "complete"


# --- Today's frontend: history -------------------------------------------------------------------------------------

def test_history_lists_newest_first_with_the_fields_the_frontend_shows(start_client) -> None:
    client = start_client()  # its own app: the history holds only these two
    first = seed_upload(client, image_bytes(), filename="first.png").json()
    second = seed_upload(client, make_pdf(), filename="second.pdf", pages="1-2").json()
    listed = client.get("/api/history", headers={"Origin": FRONTEND_ORIGIN})
    assert listed.headers["access-control-allow-origin"] == "*"
    items = listed.json()["items"]
    assert [item["id"] for item in items] == [second["historyId"], first["historyId"]]
    assert items[0] == {"id": second["historyId"], "createdAt": second["createdAt"], "fileName": "second.pdf",
                        "fileSize": second["fileSize"], "mode": "gundam", "durationMs": second["durationMs"],
                        "pages": 2, "isPdf": True}
    assert items[1]["isPdf"] is False and items[1]["pages"] == 1
    assert [item["id"] for item in client.get("/api/history?limit=1").json()["items"]] == [second["historyId"]]


def test_a_history_entry_is_the_answer_as_it_was_given(client) -> None:
    answer = seed_upload(client, make_pdf(), filename="doc.pdf").json()
    entry = client.get(f"/api/history/{answer['historyId']}")
    assert entry.status_code == 200
    assert entry.json() == answer
    assert entry.json()["pages"][2]["imageData"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("fmt,field,media,name", [
    ("md", "text", "text/markdown", "scan.md"),
    ("raw", "rawText", "text/plain", "scan.raw.txt"),
    ("json", None, "application/json", "scan.json"),
])
def test_history_downloads(client, fmt: str, field: str | None, media: str, name: str) -> None:
    answer = seed_upload(client, image_bytes(), filename="scan.png").json()
    response = client.get(f"/api/history/{answer['historyId']}/download", params={"format": fmt})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert f'filename="{name}"' in response.headers["content-disposition"]
    assert response.headers["content-disposition"].startswith("attachment")
    if field:
        assert response.text == answer[field]
    else:
        assert response.json() == answer


def test_a_download_name_is_the_uploads_stem_never_a_path(client) -> None:
    answer = seed_upload(client, image_bytes(), filename="../../etc/Übersicht 1.png").json()
    disposition = client.get(f"/api/history/{answer['historyId']}/download").headers["content-disposition"]
    assert disposition == "attachment; filename=\"_bersicht 1.md\"; filename*=UTF-8''%C3%9Cbersicht%201.md"


@pytest.mark.parametrize("path", [
    "/api/history/" + "0" * 32, "/api/history/not-an-id", "/api/history/" + "0" * 32 + "/download",
    "/api/history/..%2F..%2Fhistory.sqlite3",
])
def test_unknown_history_ids_are_404(client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert isinstance(response.json()["detail"], str)


def test_bad_history_parameters_are_422_with_a_sentence(client) -> None:
    answer = seed_upload(client, image_bytes()).json()
    for path in ("/api/history?limit=0", "/api/history?limit=x", f"/api/history/{answer['historyId']}/download?format=pdf"):
        response = client.get(path)
        assert response.status_code == 422
        assert isinstance(response.json()["detail"], str) and response.json()["detail"].startswith("Invalid request")


def test_history_keeps_at_most_the_configured_entries_oldest_removed_first(start_client, tmp_path: Path) -> None:
    client = start_client(ocr_history_max=2)
    ids = [seed_upload(client, image_bytes()).json()["historyId"] for _ in range(3)]
    assert [item["id"] for item in client.get("/api/history").json()["items"]] == ids[:0:-1]
    assert client.get(f"/api/history/{ids[0]}").status_code == 404
    assert sorted(kept_history(client)) == sorted(ids[1:])  # removed from the database, not only hidden


def kept_history(client) -> dict[str, int]:
    """The history's rows in the service's database: id → bytes."""
    from sqlalchemy import select

    from dsocr.store import schema

    with client.app.state.database.read() as c:
        return dict(c.execute(select(schema.history.c.id, schema.history.c.bytes)).all())


def test_history_entries_expire_after_the_ttl(start_client, tmp_path: Path) -> None:
    import sqlite3

    client = start_client(ocr_history_ttl_s=3600)
    old, new = (seed_upload(client, image_bytes()).json()["historyId"] for _ in range(2))
    with sqlite3.connect(tmp_path / "data" / "dsocr.sqlite3") as db:
        db.execute("UPDATE history SET created = created - 7200 WHERE id = ?", (old,))
    assert [item["id"] for item in client.get("/api/history").json()["items"]] == [new]
    assert client.get(f"/api/history/{old}").status_code == 404
    client.app.state.history.prune()
    assert old not in kept_history(client)


def test_a_history_that_cannot_be_written_never_fails_the_answer(start_client, tmp_path: Path) -> None:
    import sqlite3

    client = start_client()  # its own app: its history is broken below
    with sqlite3.connect(tmp_path / "data" / "dsocr.sqlite3") as db:
        db.execute("DROP TABLE history")
    response = seed_upload(client, image_bytes())
    assert response.status_code == 200
    assert response.json()["historyId"] is None and response.json()["rawText"]


def test_history_keeps_under_its_size_cap_oldest_removed_first(start_client, tmp_path: Path) -> None:
    client = start_client(ocr_history_max_mb=0.05)  # about two of these answers (some 20 KB each)
    ids = [seed_upload(client, image_bytes((1000, 800))).json()["historyId"] for _ in range(4)]
    sizes = sum(kept_history(client).values())
    listed = [item["id"] for item in client.get("/api/history").json()["items"]]
    assert sizes <= 0.05 * 1024 * 1024 and listed == ids[::-1][:len(listed)] and 0 < len(listed) < 4


def test_a_corrupt_history_database_turns_history_off_not_the_service(start_client, tmp_path: Path, caplog) -> None:
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    client = start_client()
    response = seed_upload(client, image_bytes())
    assert response.status_code == 200 and response.json()["historyId"] is None
    assert client.get("/api/history").json() == {"items": []}
    assert "history turned off" in caplog.text and "DEEPSEEK_OCR_HISTORY_DIR" in caplog.text


def test_with_history_off_nothing_is_kept(start_client, tmp_path: Path) -> None:
    client = start_client(ocr_history=False)
    assert seed_upload(client, image_bytes()).json()["historyId"] is None
    assert client.get("/api/history").json() == {"items": []}
    assert not (tmp_path / "history").exists()
