"""The history store on its own: a listing reads the newest entries through the age index, however many there are."""

from __future__ import annotations

from pathlib import Path

from dsocr.pipeline.history import LIST_COLUMNS, HistoryStore, new_entry_id


def result(n: int) -> dict:
    return {"createdAt": f"2026-11-25T00:00:{n % 60:02d}Z", "fileName": f"{n}.png", "fileSize": n, "mode": "base",
            "durationMs": 1.0, "pages": [{}], "isPdf": False}


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_entries=10, ttl_s=3600)
    store.open()
    unwritable = result(1) | {"fileName": "\ud800"}  # a lone surrogate cannot be encoded: the write fails
    try:
        store.add(new_entry_id(), unwritable)
    except UnicodeEncodeError:
        pass
    assert list((tmp_path / "results").iterdir()) == [] and store.list(10) == []
    store.close()


def test_a_long_history_lists_its_newest_entries_through_the_index(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path, max_entries=5000, ttl_s=3600)
    store.open()
    ids = []
    for n in range(3000):
        ids.append(new_entry_id())
        store.add(ids[-1], result(n))
    assert [item["id"] for item in store.list(30)] == ids[::-1][:30]
    plan = " ".join(str(row) for row in store.db.execute(
        f"EXPLAIN QUERY PLAN SELECT {LIST_COLUMNS} FROM entries WHERE created >= 0 ORDER BY created DESC LIMIT 30"))
    assert "entries_by_age" in plan and "TEMP B-TREE" not in plan  # no scan and sort of the whole table
    store.close()


def test_a_request_that_times_out_while_its_result_is_kept_leaves_no_entry(start_client, standin_v1: Path) -> None:
    import threading

    from helpers import image_bytes, wait_until
    from standin_checkpoint import set_answer

    client = start_client(checkpoint=standin_v1, ocr_request_timeout_s=2)
    set_answer(standin_v1, "words")
    history = client.app.state.history
    answered, written = threading.Event(), threading.Event()
    add = history.add

    def slow_add(*args, **kwargs) -> None:  # the write outlasts the request's deadline
        answered.wait(60)
        add(*args, **kwargs)
        written.set()

    history.add = slow_add
    response = client.post("/api/ocr", files={"image": ("p.png", image_bytes(), "image/png")})
    assert response.status_code == 504
    answered.set()
    assert written.wait(60)
    wait_until(lambda: client.get("/api/history").json()["items"] == [])  # written, then removed
