"""The job store on both backends: submit with idempotency, fair claims, leases that run out, attempts, cancel,
settling documents and jobs, events, webhooks' outbox, the TTL sweep, and migrations run by two processes."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dsocr.errors import PayloadTooLarge
from dsocr.store.database import Database
from dsocr.store.jobs import JobStore, NewDocument, QueueFull
from dsocr.store.migrations import MIGRATIONS, migrate
from helpers import WAIT_TIMEOUT_S, wait_until


def open_store(url: str, max_queued_pages: int = 1000) -> JobStore:
    database = Database(url, Path("."))
    migrate(database)
    return JobStore(database, max_queued_pages)


def document(name: str = "a.png", pages: int = 1) -> NewDocument:
    return NewDocument(name, 10, pages > 1, list(range(1, pages + 1)), b"x" * 10)


def test_submit_is_idempotent_per_owner(database_url: str) -> None:
    store = open_store(database_url)
    first, new = store.submit("k1", "gundam", "p", None, "key-1", [document()])
    again, new_again = store.submit("k1", "gundam", "p", None, "key-1", [document()])
    other, other_new = store.submit("k2", "gundam", "p", None, "key-1", [document()])
    assert new and not new_again and other_new
    assert again == first and other != first
    assert store.queued_pages() == 2  # the retried submit queued nothing
    assert store.view(first, "k2") is None  # another owner's job is not there for it


def test_full_queue_refuses_a_job(database_url: str) -> None:
    store = open_store(database_url, max_queued_pages=3)
    store.submit("k", "gundam", "p", None, None, [document(pages=2)])
    with pytest.raises(QueueFull) as refused:
        store.submit("k", "gundam", "p", None, None, [document(pages=2)])
    assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]
    with pytest.raises(PayloadTooLarge):  # never fits: not worth a retry
        store.submit("k", "gundam", "p", None, None, [document(pages=4)])


def test_claims_interleave_owners(database_url: str) -> None:
    store = open_store(database_url)
    big, _ = store.submit("big", "gundam", "p", None, None, [document(pages=20)])
    small, _ = store.submit("small", "gundam", "p", None, None, [document()])
    claimed = store.claim("w1", 2, 30, 3)
    assert {page.job_id for page in claimed} == {big, small}  # the one-page owner is not behind 20 pages


def test_a_finished_job_has_events_and_a_webhook(database_url: str) -> None:
    store = open_store(database_url)
    job_id, _ = store.submit("k", "gundam", "p", "http://127.0.0.1:9/hook", None, [document(pages=2)])
    pages = store.claim("w", 10, 30, 3)
    assert [page.page_number for page in pages] == [1, 2]
    assert store.view(job_id, "k")["status"] == "running"
    for page in pages:
        assert store.finish_page(page, "w", {"page": page.page_number, "text": "t"}, {"page": page.page_number})
    view = store.view(job_id, "k")
    assert view["status"] == "succeeded" and view["pagesDone"] == 2 and view["documents"][0]["status"] == "succeeded"
    names = [name for _, name, _ in store.events(job_id, 0)]
    assert names == ["page", "page", "document", "end"]
    ids = [event_id for event_id, _, _ in store.events(job_id, 0)]
    assert [name for _, name, _ in store.events(job_id, ids[1])] == ["document", "end"]  # resumable
    delivery = store.due_webhook(30)
    assert delivery is not None and json.loads(delivery["body"])["status"] == "succeeded"
    assert store.due_webhook(30) is None  # leased: nobody else takes it meanwhile


def test_expired_lease_is_taken_again_and_attempts_are_bounded(database_url: str) -> None:
    store = open_store(database_url)
    job_id, _ = store.submit("k", "gundam", "p", None, None, [document()])
    first = store.claim("dead-worker", 1, -1, 2)  # a lease already run out: its worker "died"
    assert len(first) == 1
    second = store.claim("w2", 1, 30, 2)
    assert [page.id for page in second] == [first[0].id] and second[0].attempts == 2
    assert not store.finish_page(first[0], "dead-worker", {"text": "late"}, {})  # the dead worker lost it
    assert store.fail_page(second[0], "w2", "boom", max_attempts=2)  # second attempt of two: fails for good
    view = store.view(job_id, "k")
    assert view["status"] == "failed" and view["pagesFailed"] == 1


def test_failed_attempt_requeues_then_partial(database_url: str) -> None:
    store = open_store(database_url)
    job_id, _ = store.submit("k", "gundam", "p", None, None, [document(pages=2)])
    one, two = store.claim("w", 2, 30, 3)
    assert not store.fail_page(one, "w", "transient", max_attempts=3)
    assert store.view(job_id, "k")["status"] == "running"
    store.finish_page(two, "w", {"text": "ok"}, {})
    again = store.claim("w", 2, 30, 3)
    assert [page.id for page in again] == [one.id]
    assert store.fail_page(again[0], "w", "unreadable", max_attempts=3, final=True)
    assert store.view(job_id, "k")["status"] == "partial"


def test_cancel_stops_held_pages(database_url: str) -> None:
    store = open_store(database_url)
    job_id, _ = store.submit("k", "gundam", "p", None, None, [document(pages=3)])
    held = store.claim("w", 1, 30, 3)
    assert store.cancel(job_id, "other") is None
    assert store.cancel(job_id, "k") == ("cancelled", True)
    assert store.cancel(job_id, "k") == ("cancelled", False)
    assert store.renew("w", [held[0].id], 30) == set()  # the worker learns its page is no longer wanted
    assert store.claim("w", 5, 30, 3) == []
    assert store.view(job_id, "k")["status"] == "cancelled"
    assert store.remove(job_id, "k") and store.view(job_id, "k") is None


def test_release_requeues_a_restarted_workers_pages(database_url: str) -> None:
    store = open_store(database_url)
    store.submit("k", "gundam", "p", None, None, [document(pages=2)])
    store.claim("replica-a", 2, 3600, 3)
    assert store.claim("replica-b", 2, 3600, 3) == []
    assert store.release("replica-a") == 2
    assert len(store.claim("replica-b", 2, 3600, 3)) == 2


def test_sweep_removes_old_finished_jobs_only(database_url: str) -> None:
    store = open_store(database_url)
    done, _ = store.submit("k", "gundam", "p", None, None, [document()])
    waiting, _ = store.submit("k", "gundam", "p", None, None, [document()])
    page = store.claim("w", 1, 30, 3)[0]
    assert page.job_id == done
    store.finish_page(page, "w", {"text": "ok"}, {})
    removed = store.sweep(ttl_s=-60, max_bytes=10**9)  # a negative TTL: every finished job has expired
    assert len(removed) == 1
    assert store.view(done, "k") is None and store.view(waiting, "k")["status"] == "queued"


def test_two_processes_migrate_once(database_url: str) -> None:
    def run() -> int:
        return migrate(Database(database_url, Path(".")))

    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda _: run(), range(4)))
    assert versions == [len(MIGRATIONS)] * 4


def test_a_replica_starting_while_the_database_is_locked_past_a_requests_wait_migrates_once_it_is_free(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "store.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write (a migration, say)
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(migrate, Database(f"sqlite:///{path}", Path(".")))
        # Past BUSY_TIMEOUT_S a request would have had its 503: the replica starting waits on.
        wait_until(lambda: "the database is unavailable" in caplog.text or starting.done())
        holder.execute("ROLLBACK")
        holder.close()
        assert starting.result(timeout=WAIT_TIMEOUT_S) == len(MIGRATIONS)


def test_sweep_keeps_within_the_disk_cap_oldest_finished_first_never_an_unfinished_job(database_url: str) -> None:
    store = open_store(database_url)
    ids = []
    for _ in range(3):
        job_id, _ = store.submit("k", "gundam", "p", None, None, [document()])
        page = store.claim("w", 1, 30, 3)[0]
        store.finish_page(page, "w", {"text": "x" * 100}, {})
        ids.append(job_id)
    waiting, _ = store.submit("k", "gundam", "p", None, None, [document()])
    removed = store.sweep(ttl_s=3600, max_bytes=300)  # each finished job holds 10 + ~110 bytes
    assert len(removed) == 1
    assert store.view(ids[0], "k") is None and store.view(ids[1], "k") and store.view(ids[2], "k")
    store.sweep(ttl_s=3600, max_bytes=0)
    assert store.view(waiting, "k")["status"] == "queued"  # never an unfinished one
