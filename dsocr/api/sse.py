"""Server-sent events: formatting, the stream of one OCR request's events ending in its result or error, and the
end of every open stream at shutdown."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator, Iterable

from fastapi import FastAPI

from dsocr.api.errors import log_internal_error
from dsocr.api.middleware.request_ids import error_body
from dsocr.errors import ServiceError, Unavailable
from dsocr.serving.submitter import RESTART_RETRY_AFTER_S


async def event_stream(
    app: FastAPI, work: asyncio.Future, events: asyncio.Queue, ping_s: float, summary: dict
) -> AsyncIterator[bytes]:
    """The work's events as they come, a keep-alive comment after `ping_s` seconds without one (so that a proxy
    does not cut a long page: the remote-code engine streams no text), then `result` or `error`. The status the
    stream ended with goes into the request's `summary` (499 when its client left before the end)."""
    summary["status"] = 499  # until the last event is sent
    ended = asyncio.ensure_future(streams_end(app).wait())
    try:
        while not work.done() or not events.empty():
            next_event = asyncio.ensure_future(events.get())
            await asyncio.wait({next_event, work, ended}, timeout=ping_s, return_when=asyncio.FIRST_COMPLETED)
            if ended.done() and not work.done():  # past the shutdown grace: the work stops, the stream ends
                next_event.cancel()
                work.cancel()
                work = asyncio.get_running_loop().create_future()
                work.set_exception(Unavailable("The service shut down before this request finished",
                                               headers={"Retry-After": str(RESTART_RETRY_AFTER_S)}))
                continue
            if next_event.done():
                yield sse(*next_event.result())
                continue
            next_event.cancel()
            if not work.done():
                yield KEEPALIVE
        error = work.exception()
        summary.pop("status")
        if error is None:
            yield sse("result", work.result().model_dump(by_alias=True))
        elif isinstance(error, ServiceError):
            app.state.metrics.failures.labels(error.reason).inc()
            summary["status"] = error.status_code
            yield sse("error", {"status": error.status_code, **error_body(error.detail)})
        else:
            request_id = log_internal_error(app, "POST /api/ocr/stream", error)
            summary["status"] = 500
            yield sse("error", {"status": 500, **error_body(f"Internal error (request id {request_id})")})
    finally:  # also when the client goes away mid-stream: its remaining pages are dropped
        ended.cancel()
        work.cancel()


def streams_end(app: FastAPI) -> asyncio.Event:
    """Set when the drain is over (SIGTERM's grace spent, or the admitted work done): every open stream then ends
    with a final event, since uvicorn waits for each connection before it stops."""
    event: asyncio.Event | None = getattr(app.state, "streams_end", None)
    if event is None:
        event = app.state.streams_end = asyncio.Event()
    return event


async def until_streams_end(app: FastAPI, stream: AsyncIterator[bytes], final: Iterable[bytes]) -> AsyncIterator[bytes]:
    """`stream` as it comes; if the service stops first, `final` instead of the rest."""
    ended = asyncio.ensure_future(streams_end(app).wait())
    try:
        while True:
            item = asyncio.ensure_future(anext(stream))
            await asyncio.wait({item, ended}, return_when=asyncio.FIRST_COMPLETED)
            if not item.done():
                item.cancel()
                await asyncio.gather(item, return_exceptions=True)
                for event in final:
                    yield event
                return
            try:
                yield item.result()
            except StopAsyncIteration:
                return
    finally:
        ended.cancel()


def sse(event: str | None, data: dict) -> bytes:
    """One server-sent event; without a name it is an unnamed `data:` message (EventSource's `onmessage`)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
