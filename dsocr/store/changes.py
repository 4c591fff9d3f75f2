"""Who is told that something in the store changed: waiters on a job (long polls, event streams), idle workers
("work") and the webhook sender ("webhook"). PostgreSQL carries the news between processes with LISTEN/NOTIFY;
SQLite cannot, so its waiters also look again every POLL_S (another process may share the file)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from dsocr.store.database import CHANNEL, Database

log = logging.getLogger("deepseek_ocr.store")

T = TypeVar("T")
# How often a waiter looks again without news: SQLite's only way to see another process's writes; on PostgreSQL
# a safety net for a notification lost while the listening connection was being replaced.
SQLITE_POLL_S = 0.5
POSTGRES_POLL_S = 5.0
LISTEN_RETRY_S = 2.0
# Store calls are short and synchronous: a pool of their own, so that they never wait behind uploads' decoding.
_store_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dsocr-store")


async def in_store(function: Callable[..., T], *args: Any) -> T:
    """Runs a store call on the store's threads."""
    return await asyncio.get_running_loop().run_in_executor(_store_pool, lambda: function(*args))


class Changes:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.poll_s = POSTGRES_POLL_S if database.is_postgres else SQLITE_POLL_S
        self.events: dict[str, asyncio.Event] = {}
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        if self.database.is_postgres:
            self.task = asyncio.create_task(self._listen(), name="store-listen")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def fire(self, key: str) -> None:
        """Wakes this process's waiters on `key` (a job id, "work" or "webhook")."""
        event = self.events.pop(key, None)
        if event is not None:
            event.set()

    async def wait(self, key: str, timeout: float) -> None:
        """Returns when `key` changes, or after `timeout` (at most the poll interval): look at the store again."""
        event = self.events.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), min(timeout, self.poll_s))
        except asyncio.TimeoutError:
            pass

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.database.libpq_url, autocommit=True) as c:
                    await c.execute(f"LISTEN {CHANNEL}")
                    for key in list(self.events):  # whatever happened while not listening
                        self.fire(key)
                    async for notice in c.notifies():
                        self.fire(notice.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for the store's changes failed (%s: %s); again in %g s", type(exc).__name__,
                            exc, LISTEN_RETRY_S)
                await asyncio.sleep(LISTEN_RETRY_S)
