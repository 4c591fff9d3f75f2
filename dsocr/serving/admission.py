"""Admission control: a bounded number of OCR requests in the service at once (the slot is taken before the
upload is read), a deadline per request, and dropping the work of a client that went away."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request

from dsocr.errors import ClientGone, TimedOut, Unavailable
from dsocr.serving.metrics import Metrics

T = TypeVar("T")

# Seconds an overloaded service asks clients to wait before retrying.
OVERLOAD_RETRY_AFTER_S = 5


class Admission:
    def __init__(self, max_admitted: int, metrics: Metrics) -> None:
        self.max_admitted = max_admitted
        self.metrics = metrics
        self.admitted = 0

    def enter(self) -> None:
        """Takes a slot, or refuses at once with 503 when all are taken."""
        if self.admitted >= self.max_admitted:
            raise Unavailable(
                f"Server busy: {self.max_admitted} requests are queued or running (DEEPSEEK_OCR_MAX_QUEUE); retry later",
                headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_S)},
                reason="overloaded",
            )
        self.admitted += 1
        self.metrics.admitted.set(self.admitted)

    def leave(self) -> None:
        self.admitted -= 1
        self.metrics.admitted.set(self.admitted)


async def within_deadline(work: Awaitable[T], timeout_s: float) -> T:
    try:
        return await asyncio.wait_for(work, timeout_s)
    except asyncio.TimeoutError:
        raise TimedOut(f"The request took longer than {timeout_s:g} s (DEEPSEEK_OCR_REQUEST_TIMEOUT_S)") from None


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
