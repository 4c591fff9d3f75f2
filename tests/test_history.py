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
