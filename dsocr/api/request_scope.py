"""One OCR request's hold on the service, the same for both OCR endpoints: a queue slot taken before the upload
is read, a deadline counted from admission, dropping the work of a client that went away, and the progress
task that follows it; given back exactly once, however the request ends."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request

from dsocr.api.middleware.auth import client_owner
from dsocr.errors import ClientGone, ServiceError, TimedOut
from dsocr.pipeline.progress import TaskReporter
from dsocr.serving.admission import Admission

T = TypeVar("T")

TASK_ID = "task_id"
TASK_ID_HEADER = "X-Task-Id"


class RequestScope:
    def __init__(self, request: Request, timeout_s: float) -> None:
        """Takes a queue slot, or refuses at once with 503 when all are taken. A progress task named before the
        body (`?task_id=` or `X-Task-Id`) hears of every failure, a refusal included; one named in the form
        follows from the moment the form is read."""
        self.request = request
        self.owner = client_owner(request)
        self.reporter = TaskReporter(request.app.state.tasks, self.owner)
        self.reporter.attach(request.query_params.get(TASK_ID) or request.headers.get(TASK_ID_HEADER))
        self.admission: Admission = request.app.state.admission
        try:
            self.admission.enter()
        except ServiceError as exc:
            self.reporter.failed(exc.detail)
            raise
        self.timeout_s = timeout_s
        self.loop = asyncio.get_running_loop()
        self.deadline = self.loop.time() + timeout_s
        self.released = False
        self.held_pages = 0

    def hold_pages(self, count: int) -> None:
        """The request's pages, once known, count against the page budget of the queue (503 past it)."""
        try:
            self.admission.hold_pages(count)
        except ServiceError as exc:
            self.reporter.failed(exc.detail)
            raise
        self.held_pages = count

    async def within(self, work: Awaitable[T], drop_on_disconnect: bool = False) -> T:
        """`work`, cut off at the request's deadline (504); with `drop_on_disconnect` (once the body is read)
        also when the client goes away (499)."""
        if drop_on_disconnect:
            work = unless_disconnected(self.request, work)
        try:
            return await asyncio.wait_for(work, max(self.deadline - self.loop.time(), 0))
        except asyncio.TimeoutError:
            raise TimedOut(f"The request took longer than {self.timeout_s:g} s (DEEPSEEK_OCR_REQUEST_TIMEOUT_S)") from None

    def release(self, failure: BaseException | None = None) -> None:
        """Gives the slot back; a failure is reported to the progress task."""
        if self.released:
            return
        self.released = True
        self.admission.leave()
        self.admission.release_pages(self.held_pages)
        if failure is not None:
            self.reporter.failed(failure_detail(failure))
        self.reporter.close()

    def release_when_done(self, work: asyncio.Future) -> None:
        """For work that outlives the handler (a stream): released when it ends, even if nobody reads it."""
        work.add_done_callback(
            lambda done: self.release(asyncio.CancelledError() if done.cancelled() else done.exception())
        )


def failure_detail(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return exc.detail
    if isinstance(exc, asyncio.CancelledError):
        return "The request was cancelled"
    return "Internal error"


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Runs `work` (the body must have been read) and cancels it if the client disconnects meanwhile."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise ClientGone("The client disconnected; its work was dropped")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
