"""The job worker: in every service process (and in `python -m dsocr worker`), claims queued pages from the store
up to its concurrency, reads each through the page reader, keeps each result as soon as it is read, and renews
its leases while it works. A page its job no longer wants (cancelled, removed, taken over after a lost lease) is
dropped, which aborts its generation. On stop, what it holds goes back to the queue."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any, Protocol

from dsocr.errors import ServiceError
from dsocr.store.changes import Changes, in_store
from dsocr.pipeline.stored_pages import StoredPage
from dsocr.store.jobs import ClaimedPage, JobStore

log = logging.getLogger("deepseek_ocr.jobs")

# Leases are renewed this often (at most): it is also how fast a cancel on another replica stops a page here.
RENEW_MAX_S = 2.0
# Uploads kept in memory between pages of the same document.
CACHED_DOCUMENTS = 4
# A page that fails with one of these can never succeed: it fails at once, without further attempts.
FINAL_STATUSES = {400, 413, 415, 422}


class PageReader(Protocol):
    """Reads a claimed page: returns the page's JSON (as /api/ocr's `pages[]` has it) and its event's data."""

    def ready(self) -> bool: ...

    async def read(self, page: StoredPage, content: bytes) -> tuple[dict[str, Any], dict[str, Any]]: ...


class JobWorker:
    def __init__(self, store: JobStore, changes: Changes, reader: PageReader, worker_id: str, concurrency: int,
                 lease_s: float, max_attempts: int) -> None:
        self.store = store
        self.changes = changes
        self.reader = reader
        self.id = worker_id
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self.active: dict[int, asyncio.Task] = {}
        self.freed = asyncio.Event()
        self.contents: OrderedDict[str, bytes] = OrderedDict()
        self.tasks: list[asyncio.Task] = []
        self.stopping = False

    async def start(self) -> None:
        released = await in_store(self.store.release, self.id)
        if released:
            log.info("jobs: %d page(s) this worker (%s) held before its restart are queued again", released, self.id)
        self.tasks = [asyncio.create_task(self._claim_loop(), name="jobs-claim"),
                      asyncio.create_task(self._renew_loop(), name="jobs-renew")]

    async def stop(self, grace_s: float) -> None:
        """Claims nothing more, lets the pages in hand finish for `grace_s`, then drops them back to the queue."""
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.active:
            await asyncio.wait(list(self.active.values()), timeout=grace_s)
        for task in list(self.active.values()):
            task.cancel()
        await asyncio.gather(*self.active.values(), return_exceptions=True)
        try:
            await in_store(self.store.release, self.id)
        except ServiceError as exc:
            log.warning("jobs: could not hand back the pages in hand (%s); their leases will run out", exc.detail)

    def drop_job(self, job_id: str) -> None:
        """Stops this process's work on a job at once (it was cancelled or removed here)."""
        for task in list(self.active.values()):
            if getattr(task, "job_id", None) == job_id:
                task.cancel()

    async def _claim_loop(self) -> None:
        while True:
            free = self.concurrency - len(self.active)
            claimed: list[ClaimedPage] = []
            if free > 0 and self.reader.ready():
                try:
                    claimed = await in_store(self.store.claim, self.id, free, self.lease_s, self.max_attempts)
                except ServiceError as exc:
                    log.warning("jobs: cannot claim pages: %s", exc.detail)
            for page in claimed:
                task = asyncio.create_task(self._work(page), name=f"job-page-{page.id}")
                task.job_id = page.job_id  # type: ignore[attr-defined]
                self.active[page.id] = task
                # Removed when done however it ends: a task cancelled before its first step runs no `finally`.
                task.add_done_callback(lambda _, page_id=page.id: self._done(page_id))
            if claimed and len(self.active) < self.concurrency:
                continue  # there may be more
            self.freed.clear()
            waits = [asyncio.ensure_future(self.changes.wait("work", self.lease_s))]
            if self.active:
                waits.append(asyncio.ensure_future(self.freed.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    def _done(self, page_id: int) -> None:
        self.active.pop(page_id, None)
        self.freed.set()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(min(self.lease_s / 3, RENEW_MAX_S))
            renewing = list(self.active)  # pages claimed while the renewal runs are not judged by it
            if not renewing:
                continue
            try:
                held = await in_store(self.store.renew, self.id, renewing, self.lease_s)
            except ServiceError as exc:
                log.warning("jobs: cannot renew leases: %s", exc.detail)
                continue
            for page_id in renewing:
                task = self.active.get(page_id)
                if task is not None and page_id not in held:  # cancelled, removed, or taken over: not wanted
                    task.cancel()

    async def _work(self, page: ClaimedPage) -> None:
        try:
            content = await self._content(page.document_id)
            stored = StoredPage(page.run_id, page.is_pdf, page.page_number, page.page_index, page.mode, page.prompt)
            result, event = await self.reader.read(stored, content)
            event = {"documentId": page.document_id, **event}
            if await in_store(self.store.finish_page, page, self.id, result, event):
                self.changes.fire(page.job_id)  # this process's followers hear it now, not at their next look
        except asyncio.CancelledError:
            if not self.stopping:
                log.info("jobs: page %d of job %s dropped (cancelled, or no longer held)", page.page_number,
                         page.job_id)
        except Exception as exc:
            if not self.stopping:  # stopping: the page goes back to the queue (see stop)
                await self._failed(page, exc)

    async def _failed(self, page: ClaimedPage, exc: Exception) -> None:
        if isinstance(exc, ServiceError):
            detail, final = exc.detail, exc.status_code in FINAL_STATUSES
        else:
            log.exception("jobs: page %d of job %s failed", page.page_number, page.job_id)
            detail, final = f"Internal error: {type(exc).__name__}", False
        try:
            failed = await in_store(self.store.fail_page, page, self.id, detail, self.max_attempts, final)
        except ServiceError as store_error:
            log.warning("jobs: cannot record a failed page (%s); its lease will run out", store_error.detail)
            return
        log.log(logging.WARNING if failed else logging.INFO, "jobs: page %d of job %s %s: %s", page.page_number,
                page.job_id, "failed" if failed else f"failed attempt {page.attempts}, queued again", detail)

    async def _content(self, document_id: str) -> bytes:
        content = self.contents.get(document_id)
        if content is None:
            content = await in_store(self.store.content, document_id)
            if content is None:
                raise asyncio.CancelledError  # the job was removed meanwhile
            self.contents[document_id] = content
            while len(self.contents) > CACHED_DOCUMENTS:
                self.contents.popitem(last=False)
        else:
            self.contents.move_to_end(document_id)
        return content
