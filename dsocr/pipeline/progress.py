"""Progress of an OCR request for a client that follows it apart from the request (the web frontend): a task is
created first, followed over server-sent events, and named by the OCR request's `task_id` field. Tasks live in
the database (dsocr.store.tasks), so the request and the follower may reach different replicas."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Literal

from dsocr.errors import ServiceError
from dsocr.store.changes import Changes, in_store
from dsocr.store.database import Database
from dsocr.store.tasks import FINAL_STAGES, TaskStore

log = logging.getLogger("deepseek_ocr.tasks")

Stage = Literal["pending", "upload", "preprocessing", "inference", "postprocessing", "complete", "error"]
# Where each stage starts on the progress bar; inference fills the span up to postprocessing page by page.
STAGE_PERCENT = {"pending": 0, "upload": 5, "preprocessing": 10, "inference": 20, "postprocessing": 95,
                 "complete": 100, "error": 100}
# What a follower is sent: an event name (None: an unnamed message) and the state.
Message = tuple[str | None, dict]
# How long a follower waits for this process's pending writes of its task before reading it.
SETTLE_WAIT_S = 2.0


def task_state(stage: Stage, message: str, current: int = 0, total: int = 0) -> dict:
    percent = STAGE_PERCENT[stage]
    if stage == "inference" and total:
        span = STAGE_PERCENT["postprocessing"] - STAGE_PERCENT["inference"]
        percent = STAGE_PERCENT["inference"] + span * current // total
    return {"stage": stage, "current": current, "total": total, "message": message, "percent": percent}


PENDING = task_state("pending", "Waiting for the upload")


class TaskRegistry:
    """Creates and follows tasks: at most `max_per_key` per API key and `max_tasks` in all (see TaskStore), each
    forgotten `ttl_s` after its last change."""

    def __init__(self, database: Database, changes: Changes, max_tasks: int, max_per_key: int, ttl_s: float,
                 keepalive_s: float = 15) -> None:
        self.store = TaskStore(database, max_per_key, max_tasks, ttl_s, held_s=max(4 * keepalive_s, 60))
        self.changes = changes
        self.max_tasks = max_tasks
        self.keepalive_s = keepalive_s  # a follower hears at least this often that the task is still there
        self.writing: dict[str, TaskReporter] = {}  # tasks whose states this process is writing

    async def _settled(self, task_id: str) -> None:
        """Waits (briefly) until this process has written what it has of the task: a follower that connects
        right after an answer sees that answer's last state first."""
        reporter = self.writing.get(task_id)
        if reporter is not None:
            try:
                await asyncio.wait_for(reporter.idle.wait(), SETTLE_WAIT_S)
            except asyncio.TimeoutError:
                pass

    async def create(self, owner: str = "") -> str:
        return await in_store(self.store.create, owner, PENDING)

    async def follow(self, task_id: str, owner: str = "") -> AsyncIterator[Message | None]:
        """The task's states so far and at every change, as unnamed messages, then a `complete` one once it
        completes or fails (a task that has ended gives its last state alone); None now and then while nothing
        changes. An unknown or expired task ends at once, as an error."""
        await self._settled(task_id)
        exists, latest = await in_store(self.store.states, task_id, owner, -1, True)
        if not exists:
            gone = _gone("Unknown or expired task id")
            yield None, gone
            yield "complete", gone
            return
        after, state = latest[0] if latest else (0, PENDING)
        if state["stage"] not in FINAL_STAGES:  # joined while it runs: its story so far, in order
            exists, so_far = await in_store(self.store.states, task_id, owner, 0, False)
            for event_id, earlier in so_far[:-1]:
                yield None, earlier
            if so_far:
                after, state = so_far[-1]
        loop = asyncio.get_running_loop()
        while True:
            yield None, state
            if state["stage"] in FINAL_STAGES:
                yield "complete", state
                return
            quiet_since = loop.time()
            while True:
                await self.changes.wait(f"task:{task_id}", self.keepalive_s)
                hold = loop.time() - quiet_since >= self.keepalive_s
                exists, states = await in_store(self.store.states, task_id, owner, after, hold)
                if not exists:
                    gone = _gone("The task expired")
                    yield None, gone
                    yield "complete", gone
                    return
                if states:
                    break
                if hold:
                    quiet_since = loop.time()
                    yield None
            for event_id, state in states[:-1]:
                after = event_id
                yield None, state
            after, state = states[-1]


def _gone(message: str) -> dict:
    return task_state("error", message)


class TaskReporter:
    """Turns one OCR request's steps and its pipeline events into its task's states, written in order by one
    writer; does nothing until a task is attached (requests without `task_id`, or with an unknown one)."""

    def __init__(self, registry: TaskRegistry, owner: str = "") -> None:
        self.registry = registry
        self.owner = owner
        self.task_id: str | None = None
        self.stage: Stage = "pending"
        self.current = self.total = 0
        self.pending: asyncio.Queue[dict | None] = asyncio.Queue()
        self.idle = asyncio.Event()  # nothing waits to be written
        self.idle.set()
        self.writer: asyncio.Task | None = None

    def attach(self, task_id: str | None) -> None:
        """Follows the task `task_id` (if its owner's) from now on, unless one is followed already."""
        if self.task_id is None and task_id:
            self.task_id = task_id
            self.idle.clear()
            self.registry.writing[task_id] = self
            self.writer = asyncio.ensure_future(self._write(task_id))

    async def _write(self, task_id: str) -> None:
        """Writes the states in order; a task that is unknown, another key's or ended is left alone."""
        store = self.registry.store
        try:
            if not await in_store(store.owned, task_id, self.owner):
                return
            while True:
                if self.pending.empty():
                    self.idle.set()
                state = await self.pending.get()
                if state is None or not await in_store(store.record, task_id, self.owner, state):
                    return
                self.registry.changes.fire(f"task:{task_id}")
                if state["stage"] in FINAL_STAGES:
                    return
        except ServiceError as exc:  # a database that is unavailable never fails the request itself
            log.warning("progress task %s: cannot record its progress (%s)", task_id, exc.detail)
        finally:
            self.idle.set()
            if self.registry.writing.get(task_id) is self:
                del self.registry.writing[task_id]

    def _update(self, stage: Stage, message: str, current: int | None = None, total: int | None = None) -> None:
        if self.task_id is None or self.stage in FINAL_STAGES:
            return
        self.stage = stage
        if total is not None:
            self.total = total
        if current is not None:
            self.current = current
        self.idle.clear()
        self.pending.put_nowait(task_state(stage, message, self.current, self.total))

    def uploaded(self, size: int) -> None:
        self._update("upload", f"Upload received ({size} bytes)")
        self._update("preprocessing", "Reading the document")

    def pages(self, total: int) -> None:
        self._update("inference", f"Reading {total} page(s)", current=0, total=total)

    def event(self, name: str, data: dict) -> None:
        """A pipeline event (see pipeline.pages.EventSink)."""
        if self.task_id is None or self.stage != "inference":
            return
        if name == "queued":
            self._update("inference", f"Page {data['page']} is waiting for the model ({data['position']} ahead)")
        elif name == "started":
            self._update("inference", f"Page {data['page']} is on the model")
        elif name == "progress":
            self._update("inference", f"{data['done']} of {data['total']} page(s) read", current=data["done"])

    def postprocessing(self) -> None:
        self._update("postprocessing", "Saving the result")

    def complete(self) -> None:
        self._update("complete", "Done")

    def failed(self, detail: str) -> None:
        self._update("error", detail)

    def close(self) -> None:
        """The request is over: the writer ends once it has written what is pending."""
        if self.task_id is not None:
            self.pending.put_nowait(None)
