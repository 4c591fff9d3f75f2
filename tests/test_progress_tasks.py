"""Progress tasks kept in the database: one API key creating tasks never expires the task another key follows,
a task someone follows is never the one evicted (its creator is told to wait instead), and a task's states reach
a follower in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsocr.store.database import Database
from dsocr.store.migrations import migrate
from dsocr.store.tasks import TaskStore, TooManyTasks

STATE = {"stage": "pending", "current": 0, "total": 0, "message": "Waiting", "percent": 0}


def tasks(tmp_path: Path, per_key: int = 3, total: int = 100) -> TaskStore:
    database = Database("", tmp_path)
    migrate(database)
    return TaskStore(database, max_per_key=per_key, max_total=total, ttl_s=600, held_s=60)


def test_one_key_flooding_tasks_never_evicts_another_keys(tmp_path: Path) -> None:
    store = tasks(tmp_path, per_key=3, total=1000)
    mine = store.create("quiet", STATE)
    for _ in range(50):
        store.create("noisy", STATE)
    assert store.states(mine, "quiet", -1, False)[0]
    assert store.count("noisy") == 3


def test_the_total_is_taken_from_the_largest_owner(tmp_path: Path) -> None:
    store = tasks(tmp_path, per_key=100, total=5)
    mine = store.create("quiet", STATE)
    for _ in range(10):
        store.create("noisy", STATE)
    assert store.states(mine, "quiet", -1, False)[0] and store.count() == 5


def test_a_followed_task_is_never_evicted(tmp_path: Path) -> None:
    store = tasks(tmp_path, per_key=2)
    followed = store.create("k", STATE)
    assert store.states(followed, "k", -1, hold=True)[0]  # a follower reads it
    uploading = store.create("k", STATE)
    assert store.owned(uploading, "k")  # an upload refers to it
    with pytest.raises(TooManyTasks) as refused:
        store.create("k", STATE)
    assert refused.value.status_code == 503
    assert store.states(followed, "k", -1, False)[0] and store.states(uploading, "k", -1, False)[0]


def test_states_are_kept_in_order_and_end_at_a_final_one(tmp_path: Path) -> None:
    store = tasks(tmp_path)
    task = store.create("k", STATE)
    for stage in ("upload", "preprocessing", "inference", "complete", "inference"):
        store.record(task, "k", {**STATE, "stage": stage})
    assert not store.record(task, "other", {**STATE, "stage": "error"})  # another key's task is left alone
    _, states = store.states(task, "k", 0, False)
    assert [state["stage"] for _, state in states] == ["pending", "upload", "preprocessing", "inference", "complete"]
