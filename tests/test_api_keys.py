"""API keys: /api/ routes need one (artifact downloads, probes, metrics and CORS preflights do not), the refusal
comes before the upload is read, keys never reach the log, and history and tasks are per key."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import pytest

from dsocr.api.middleware.auth import fingerprint
from helpers import image_bytes, parse_events, wait_until
from live_server import Server

KEY_A = "alpha-secret-key-0123456789"
KEY_B = "bravo-secret-key-9876543210"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def keyed(start_client):
    return start_client(ocr_api_keys=f"{KEY_A},{KEY_B}")


def test_api_routes_need_a_valid_key_given_either_way(keyed) -> None:
    missing = keyed.get("/api/modes")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in missing.json()["detail"]
    wrong = keyed.get("/api/modes", headers=bearer("not-a-key"))
    assert wrong.status_code == 401 and wrong.json()["detail"] == "The API key is not valid"
    assert keyed.get("/api/modes", headers=bearer(KEY_A)).status_code == 200
    assert keyed.get("/api/modes", headers={"X-API-Key": KEY_B}).status_code == 200
    ocr = keyed.post("/api/ocr", files={"image": ("a.png", image_bytes())})
    assert ocr.status_code == 401


def test_probes_metrics_artifacts_and_preflights_stay_open(keyed) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/health/live").status_code == 200
    assert keyed.get("/metrics").status_code == 200
    assert keyed.get(f"/api/runs/{'0' * 32}/images/0.jpg").status_code == 404  # a capability URL: no key asked
    preflight = keyed.options("/api/ocr", headers={"Origin": "http://localhost:5173",
                                                   "Access-Control-Request-Method": "POST",
                                                   "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    refused = keyed.get("/api/modes", headers={"Origin": "http://localhost:5173"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"


def test_history_and_tasks_belong_to_the_key_that_made_them(keyed) -> None:
    task = keyed.post("/api/task/create", headers=bearer(KEY_A)).json()["taskId"]
    answer = keyed.post("/api/ocr", files={"image": ("a.png", image_bytes())}, data={"task_id": task},
                        headers=bearer(KEY_A)).json()
    mine = keyed.get("/api/history", headers=bearer(KEY_A)).json()["items"]
    assert [item["id"] for item in mine] == [answer["historyId"]]
    assert keyed.get("/api/history", headers=bearer(KEY_B)).json() == {"items": []}
    assert keyed.get(f"/api/history/{answer['historyId']}", headers=bearer(KEY_B)).status_code == 404
    assert keyed.get(f"/api/history/{answer['historyId']}/download", headers=bearer(KEY_B)).status_code == 404
    with keyed.stream("GET", f"/api/progress/{task}", headers=bearer(KEY_B)) as response:
        assert parse_events(response.iter_lines())[0][1]["message"] == "Unknown or expired task id"
    with keyed.stream("GET", f"/api/progress/{task}", headers=bearer(KEY_A)) as response:
        assert parse_events(response.iter_lines())[0][1]["stage"] == "complete"
    # Another key cannot attach its request to A's task either.
    other = keyed.post("/api/task/create", headers=bearer(KEY_A)).json()["taskId"]
    keyed.post("/api/ocr", files={"image": ("a.png", image_bytes())}, data={"task_id": other}, headers=bearer(KEY_B))
    with keyed.stream("GET", f"/api/progress/{other}", headers=bearer(KEY_A)) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data:"))  # the stream stays open
    assert json.loads(first[len("data:"):])["stage"] == "pending"


def test_keys_never_reach_the_log_only_their_fingerprints(keyed, caplog) -> None:
    keyed.get("/api/modes", headers=bearer("wrong-" + KEY_A))
    keyed.post("/api/ocr", files={"image": ("a.png", image_bytes())}, headers=bearer(KEY_A))
    assert KEY_A not in caplog.text
    assert fingerprint("wrong-" + KEY_A) in caplog.text


def test_a_keys_file_is_read_and_reread(start_client, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"# one key a line\n{KEY_A}\n")
    client = start_client(ocr_api_keys_file=str(keys_file))
    assert client.get("/api/modes", headers=bearer(KEY_A)).status_code == 200
    keys_file.write_text(f"{KEY_B}\n")
    client.app.state.api_keys.reload()
    assert client.get("/api/modes", headers=bearer(KEY_A)).status_code == 401
    assert client.get("/api/modes", headers=bearer(KEY_B)).status_code == 200


def test_the_refusal_comes_before_the_upload_and_sighup_rereads_the_file(native_checkpoint: Path, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{KEY_A}\n")
    server = Server({"DEEPSEEK_OCR_MODEL_PATH": str(native_checkpoint), "DEEPSEEK_OCR_RUNS_DIR": str(tmp_path / "runs"),
                     "DEEPSEEK_OCR_API_KEYS_FILE": str(keys_file)})
    try:
        server.wait_ready()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            # A 10 MB body announced, not one byte sent: the 401 can only come from the headers.
            sock.sendall(f"POST /api/ocr HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {10 << 20}\r\n"
                         "Content-Type: multipart/form-data; boundary=xyz\r\n\r\n".encode())
            assert sock.recv(4096).startswith(b"HTTP/1.1 401")
        keys_file.write_text(f"{KEY_B}\n")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: httpx.get(f"{server.url}/api/modes", headers=bearer(KEY_B)).status_code == 200, timeout_s=30)
        assert httpx.get(f"{server.url}/api/modes", headers=bearer(KEY_A)).status_code == 401
        assert KEY_A not in server.output() and KEY_B not in server.output()
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/ocr/api/history", "/ocr/api/modes", "/api/history"])
def test_a_root_path_in_front_does_not_get_past_the_key(start_client, path: str) -> None:
    # A proxy that forwards the full path, and uvicorn's --root-path, put the prefix in front of the route's path.
    client = start_client(ocr_api_keys=KEY_A, ocr_root_path="/ocr")
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer(KEY_A)).status_code == 200
    refused = client.post("/ocr/api/ocr", files={"image": ("p.png", image_bytes(), "image/png")})
    assert refused.status_code == 401


@pytest.mark.parametrize("root_path,path", [("/", "//api/history"), ("/ocr/", "/ocr//api/history")])
def test_a_root_path_ending_in_a_slash_does_not_get_past_the_key(start_client, root_path: str, path: str) -> None:
    # uvicorn --root-path / (or /ocr/) puts the root path in front of the path: "//api/...", which the routes serve.
    from starlette.testclient import TestClient

    app = start_client(ocr_api_keys=KEY_A).app
    behind = TestClient(app, root_path=root_path)  # the same app, already started: no second lifespan
    url = f"http://testserver{path}"
    assert behind.get(url).status_code == 401
    assert behind.get(url, headers=bearer(KEY_A)).status_code == 200
