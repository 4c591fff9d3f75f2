"""Progress tasks in the database, so that any replica answers a task's URL: a row per task, and its states in
order as events. At most `max_per_key` tasks per API key and `max_total` in all; past a cap the owner's (or, for
the total, the largest owner's) finished tasks go first, then the least recently updated, but never one that a
follower or an upload holds. Calls are synchronous: made from the store's threads."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from sqlalchemy import Connection, delete, func, insert, select, update

from dsocr.errors import Unavailable
from dsocr.store import schema as s
from dsocr.store.database import Database

FINAL_STAGES = ("complete", "error")
RETRY_AFTER_S = 10


class TooManyTasks(Unavailable):
    reason = "too_many_tasks"


class TaskStore:
    def __init__(self, database: Database, max_per_key: int, max_total: int, ttl_s: float, held_s: float) -> None:
        self.db = database
        self.max_per_key = max_per_key
        self.max_total = max_total
        self.ttl_s = ttl_s
        self.held_s = held_s  # a task followed (or touched by its upload) this recently is never evicted

    def create(self, owner: str, state: dict[str, Any]) -> str:
        task_id = secrets.token_hex(16)
        now = time.time()
        with self.db.write() as c:
            self._expire(c, now)
            count = c.execute(select(func.count()).select_from(s.tasks).where(s.tasks.c.owner == owner)).scalar()
            if count >= self.max_per_key:
                self._evict(c, owner, now)
            total = c.execute(select(func.count()).select_from(s.tasks)).scalar()
            if total >= self.max_total:
                largest = c.execute(select(s.tasks.c.owner).group_by(s.tasks.c.owner)
                                    .order_by(func.count().desc()).limit(1)).scalar()
                self._evict(c, largest, now)
            c.execute(insert(s.tasks).values(id=task_id, owner=owner, stage=state["stage"], current=0, total=0,
                                             message=state["message"], updated=now))
            c.execute(insert(s.task_events).values(task_id=task_id, data=json.dumps(state)))
        return task_id

    def _evict(self, c: Connection, owner: str, now: float) -> None:
        t = s.tasks.c
        victim = c.execute(
            select(t.id).where(t.owner == owner, t.stage.in_(FINAL_STAGES) | t.followed.is_(None)
                               | (t.followed < now - self.held_s))
            .order_by(t.stage.in_(FINAL_STAGES).desc(), t.updated).limit(1)
        ).scalar()
        if victim is None:
            raise TooManyTasks("Too many progress tasks are being followed; retry when some have finished",
                               headers={"Retry-After": str(RETRY_AFTER_S)})
        self._delete(c, [victim])

    def _expire(self, c: Connection, now: float) -> None:
        expired = list(c.execute(select(s.tasks.c.id).where(s.tasks.c.updated < now - self.ttl_s)).scalars())
        if expired:
            self._delete(c, expired)

    def _delete(self, c: Connection, ids: list[str]) -> None:
        c.execute(delete(s.task_events).where(s.task_events.c.task_id.in_(ids)))
        c.execute(delete(s.tasks).where(s.tasks.c.id.in_(ids)))
        for task_id in ids:
            self.db.notify(c, f"task:{task_id}")

    def owned(self, task_id: str, owner: str) -> bool:
        """Whether the task is there (not expired) and `owner`'s; marks it held (an upload refers to it)."""
        now = time.time()
        with self.db.write() as c:
            return bool(c.execute(update(s.tasks).where(
                s.tasks.c.id == task_id, s.tasks.c.owner == owner, s.tasks.c.updated >= now - self.ttl_s,
            ).values(followed=now)).rowcount)

    def record(self, task_id: str, owner: str, state: dict[str, Any]) -> bool:
        """A new state of the task, unless it has ended (or is gone, or another owner's); returns whether kept."""
        now = time.time()
        with self.db.write() as c:
            changed = c.execute(update(s.tasks).where(
                s.tasks.c.id == task_id, s.tasks.c.owner == owner, s.tasks.c.stage.notin_(FINAL_STAGES),
            ).values(stage=state["stage"], current=state["current"], total=state["total"], message=state["message"],
                     updated=now, followed=now)).rowcount
            if changed:
                c.execute(insert(s.task_events).values(task_id=task_id, data=json.dumps(state)))
                self.db.notify(c, f"task:{task_id}")
        return bool(changed)

    def states(self, task_id: str, owner: str, after: int, hold: bool) -> tuple[bool, list[tuple[int, dict]]]:
        """Whether the task is there, and its states after event `after` (after=-1: only the latest); `hold` marks
        it followed, which keeps it from eviction."""
        now = time.time()
        with self.db.write() if hold else self.db.read() as c:
            exists = c.execute(select(s.tasks.c.id).where(s.tasks.c.id == task_id, s.tasks.c.owner == owner,
                                                         s.tasks.c.updated >= now - self.ttl_s)).scalar()
            if exists is None:
                return False, []
            if hold:
                c.execute(update(s.tasks).where(s.tasks.c.id == task_id).values(followed=now))
            e = s.task_events.c
            query = select(e.id, e.data).where(e.task_id == task_id)
            if after < 0:
                rows = c.execute(query.order_by(e.id.desc()).limit(1)).all()
            else:
                rows = c.execute(query.where(e.id > after).order_by(e.id)).all()
        return True, [(row.id, json.loads(row.data)) for row in rows]

    def count(self, owner: str | None = None) -> int:
        query = select(func.count()).select_from(s.tasks)
        if owner is not None:
            query = query.where(s.tasks.c.owner == owner)
        with self.db.read() as c:
            return c.execute(query).scalar()
