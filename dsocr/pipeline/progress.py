"""Progress of an OCR request for a client that follows it apart from the request (the web frontend): a task is
created first, followed over server-sent events, and named by the OCR request's `task_id` field."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import AsyncIterator, Literal

Stage = Literal["pending", "upload", "preprocessing", "inference", "postprocessing", "complete", "error"]
FINAL_STAGES = ("complete", "error")
# Where each stage starts on the progress bar; inference fills the span up to postprocessing page by page.
STAGE_PERCENT = {"pending": 0, "upload": 5, "preprocessing": 10, "inference": 20, "postprocessing": 95,
                 "complete": 100, "error": 100}
# What a follower is sent: an event name (None: an unnamed message) and the state.
Message = tuple[str | None, dict]
# States kept for a follower that reads slower than the task changes.
MAX_PENDING_STATES = 64


@dataclass
class Task:
    id: str
    owner: str = ""  # the API key's fingerprint that created it ("" without keys): only it follows the task
    stage: Stage = "pending"
    current: int = 0
    total: int = 0
    message: str = "Waiting for the upload"
    updated: float = field(default_factory=time.monotonic)
    # Each follower's queue of states to send; None means the task is gone.
    followers: set[asyncio.Queue[dict | None]] = field(default_factory=set)

    @property
    def percent(self) -> int:
        if self.stage == "inference" and self.total:
            span = STAGE_PERCENT["postprocessing"] - STAGE_PERCENT["inference"]
            return STAGE_PERCENT["inference"] + span * self.current // self.total
        return STAGE_PERCENT[self.stage]

    def state(self) -> dict:
        return {"stage": self.stage, "current": self.current, "total": self.total, "message": self.message,
                "percent": self.percent}

    def publish(self, state: dict | None) -> None:
        for queue in self.followers:
            if queue.qsize() >= MAX_PENDING_STATES:  # a follower that does not read loses the oldest news
                queue.get_nowait()
            queue.put_nowait(state)


class TaskRegistry:
    """Tasks by random id, at most `max_tasks` (the least recently updated go first), each forgotten `ttl_s`
    after its last update. Lives on the event loop: no locking."""

    def __init__(self, max_tasks: int, ttl_s: float, keepalive_s: float = 15) -> None:
        self.max_tasks = max_tasks
        self.ttl_s = ttl_s
        self.keepalive_s = keepalive_s  # a follower hears at least this often that the task is still there
        self.tasks: OrderedDict[str, Task] = OrderedDict()  # least recently updated first

    def create(self, owner: str = "") -> Task:
        self._expire()
        while len(self.tasks) >= self.max_tasks:
            # Finished tasks go first, then the least recently updated.
            victim = next((task for task in self.tasks.values() if task.stage in FINAL_STAGES),
                          next(iter(self.tasks.values())))
            del self.tasks[victim.id]
            victim.publish(None)
        task = Task(secrets.token_hex(16), owner)
        self.tasks[task.id] = task
        return task

    def get(self, task_id: str, owner: str = "") -> Task | None:
        """The task, unless unknown, expired or another owner's."""
        self._expire()
        task = self.tasks.get(task_id)
        return task if task is not None and task.owner == owner else None

    def update(self, task: Task, stage: Stage, message: str, current: int | None = None, total: int | None = None) -> None:
        if task.stage in FINAL_STAGES or self.tasks.get(task.id) is not task:
            return
        task.stage, task.message = stage, message
        if total is not None:
            task.total = total
        if current is not None:
            task.current = current
        task.updated = time.monotonic()
        self.tasks.move_to_end(task.id)
        task.publish(task.state())

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl_s
        while self.tasks:
            task = next(iter(self.tasks.values()))
            if task.updated >= cutoff:
                break
            del self.tasks[task.id]
            task.publish(None)

    async def follow(self, task_id: str, owner: str = "") -> AsyncIterator[Message | None]:
        """The task's state now and at every change, as unnamed messages, then a `complete` one once it completes
        or fails; None now and then while nothing changes. An unknown or expired task ends at once, as an error."""
        task = self.get(task_id, owner)
        if task is None:
            gone = _gone("Unknown or expired task id")
            yield None, gone
            yield "complete", gone
            return
        queue: asyncio.Queue[dict | None] = asyncio.Queue()
        task.followers.add(queue)
        try:
            state: dict | None = task.state()
            while True:
                if state is None:
                    gone = _gone("The task expired")
                    yield None, gone
                    yield "complete", gone
                    return
                yield None, state
                if state["stage"] in FINAL_STAGES:
                    yield "complete", state
                    return
                state = await self._next_state(task, queue)
                while state is _KEEPALIVE:
                    yield None
                    state = await self._next_state(task, queue)
        finally:
            task.followers.discard(queue)

    async def _next_state(self, task: Task, queue: asyncio.Queue[dict | None]) -> dict | None:
        try:
            return await asyncio.wait_for(queue.get(), self.keepalive_s)
        except asyncio.TimeoutError:
            self._expire()
            return _KEEPALIVE if self.tasks.get(task.id) is task else None


_KEEPALIVE: dict = {}


def _gone(message: str) -> dict:
    return {"stage": "error", "current": 0, "total": 0, "message": message, "percent": 100}


class TaskReporter:
    """Turns one OCR request's steps and its pipeline events into its task's stages; does nothing until a task
    is attached (requests without `task_id`, or with an unknown one)."""

    def __init__(self, registry: TaskRegistry, owner: str = "") -> None:
        self.registry = registry
        self.owner = owner
        self.task: Task | None = None

    def attach(self, task_id: str | None) -> None:
        """Follows the task `task_id` (if its owner's) from now on, unless one is followed already."""
        if self.task is None and task_id:
            self.task = self.registry.get(task_id, self.owner)

    def _update(self, stage: Stage, message: str, current: int | None = None, total: int | None = None) -> None:
        if self.task is not None:
            self.registry.update(self.task, stage, message, current, total)

    def uploaded(self, size: int) -> None:
        self._update("upload", f"Upload received ({size} bytes)")
        self._update("preprocessing", "Reading the document")

    def pages(self, total: int) -> None:
        self._update("inference", f"Reading {total} page(s)", current=0, total=total)

    def event(self, name: str, data: dict) -> None:
        """A pipeline event (see ocr_pipeline.EventSink)."""
        if self.task is None or self.task.stage != "inference":
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
