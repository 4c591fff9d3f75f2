"""The history store: kept in the database, capped per API key (one key filling its history never evicts
another's), within a total taken from the largest consumer first; a result too large to keep is not kept (its
answer names no history id); the history an older version kept in files is imported once, nothing lost; an answer
never waits long on a locked database."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from fastapi.testclient import TestClient

from dsocr.store.database import Database
from dsocr.store.history import HistoryStore, new_entry_id
from dsocr.store.migrations import migrate
from helpers import image_bytes, post, wait_until


def result(n: int, padding: int = 0) -> dict:
    return {"createdAt": f"2026-11-25T00:00:{n % 60:02d}Z", "fileName": f"{n}.png", "fileSize": n, "mode": "base",
            "durationMs": 1.0, "pages": [{}], "isPdf": False, "text": "x" * padding}


def open_history(tmp_path: Path, **caps: int) -> HistoryStore:
    database = Database("", tmp_path)
    migrate(database)
    options = {"max_entries": 100, "ttl_s": 3600, "max_bytes": 10**9} | caps
    store = HistoryStore(database, tmp_path / "history", **options)
    store.open()
    return store


def test_one_key_filling_its_history_never_evicts_another_keys(tmp_path: Path) -> None:
    store = open_history(tmp_path, max_entries=3)
    mine = new_entry_id()
    assert store.add(mine, result(0), owner="quiet")
    for n in range(10):
        store.add(new_entry_id(), result(n), owner="noisy")
    assert [item["id"] for item in store.list(10, owner="quiet")] == [mine]
    assert len(store.list(10, owner="noisy")) == 3  # its own cap, its newest


def test_the_total_is_taken_from_the_largest_consumer_first(tmp_path: Path) -> None:
    store = open_history(tmp_path, max_bytes=10_000, total_bytes=12_000)
    small = new_entry_id()
    store.add(small, result(0, padding=1000), owner="small")
    for n in range(4):
        store.add(new_entry_id(), result(n, padding=3000), owner="big")
    assert store.get(small, owner="small") is not None
    assert len(store.list(10, owner="big")) < 4


def test_a_result_larger_than_the_cap_is_not_kept(tmp_path: Path) -> None:
    store = open_history(tmp_path, max_bytes=1000)
    entry = new_entry_id()
    assert not store.add(entry, result(1, padding=5000))
    assert store.get(entry) is None and store.list(10) == []


def test_answers_name_no_history_id_they_could_not_keep(start_client: Callable[..., TestClient]) -> None:
    client = start_client(ocr_history_max_mb=0.000001)
    answer = post(client, image_bytes())
    assert answer.status_code == 200 and answer.json()["historyId"] is None
    assert client.get("/api/history").json()["items"] == []


def test_the_history_of_an_older_version_is_imported_once(tmp_path: Path) -> None:
    folder = tmp_path / "history"
    (folder / "results").mkdir(parents=True)
    old = sqlite3.connect(folder / "history.sqlite3")
    old.execute("CREATE TABLE entries (id TEXT PRIMARY KEY, created REAL, created_at TEXT, file_name TEXT, "
                "file_size INTEGER, mode TEXT, duration_ms REAL, pages INTEGER, is_pdf INTEGER, bytes INTEGER, "
                "owner TEXT)")
    ids = [new_entry_id() for _ in range(3)]
    for n, entry in enumerate(ids):
        (folder / "results" / f"{entry}.json").write_text(json.dumps(result(n) | {"historyId": entry}))
        old.execute("INSERT INTO entries VALUES (?, ?, '', '', 0, '', 0, 1, 0, 0, ?)",
                    (entry, time.time() - 10 + n, "key-a" if n else ""))
    old.commit()
    old.close()
    store = open_history(tmp_path)
    assert [item["id"] for item in store.list(10, owner="key-a")] == ids[:0:-1]
    assert store.get(ids[0])["historyId"] == ids[0]
    assert not (folder / "history.sqlite3").exists() and (folder / "results" / f"{ids[0]}.json").exists()
    HistoryStore(store.db, folder, 100, 3600, 10**9).open()  # a second start imports nothing twice
    assert len(store.list(10, owner="key-a")) == 2


def test_a_locked_database_never_holds_up_an_answer(start_client: Callable[..., TestClient], tmp_path: Path) -> None:
    client = start_client()
    database = client.app.state.database
    locker = sqlite3.connect(database.url.removeprefix("sqlite:///"), isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        answer = post(client, image_bytes())
        assert answer.status_code == 200 and answer.json()["historyId"] is None
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert client.get("/api/history").json()["items"] == []  # the late write left nothing behind


def test_a_request_that_times_out_while_its_result_is_kept_leaves_no_entry(start_client, standin_v1: Path) -> None:
    from standin_checkpoint import set_answer

    client = start_client(checkpoint=standin_v1, ocr_request_timeout_s=2)
    set_answer(standin_v1, "words")
    history = client.app.state.history
    answered, written = threading.Event(), threading.Event()
    add = history.add

    def slow_add(*args, **kwargs) -> bool:  # the write outlasts the request's deadline
        answered.wait(60)
        kept = add(*args, **kwargs)
        written.set()
        return kept

    history.add = slow_add
    response = client.post("/api/ocr", files={"image": ("p.png", image_bytes(), "image/png")})
    assert response.status_code == 504
    answered.set()
    assert written.wait(60)
    wait_until(lambda: client.get("/api/history").json()["items"] == [])  # written, then removed
