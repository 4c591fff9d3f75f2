"""Server-sent events: formatting, and the stream of one OCR request's events ending in its result or error."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

from fastapi import FastAPI

from dsocr.api.errors import log_internal_error
from dsocr.api.middleware.request_ids import error_body
from dsocr.errors import ServiceError


async def event_stream(
    app: FastAPI, work: asyncio.Future, events: asyncio.Queue, ping_s: float, summary: dict
) -> AsyncIterator[bytes]:
    """The work's events as they come, a keep-alive comment after `ping_s` seconds without one (so that a proxy
    does not cut a long page: the remote-code engine streams no text), then `result` or `error`. The status the
    stream ended with goes into the request's `summary` (499 when its client left before the end)."""
    summary["status"] = 499  # until the last event is sent
    try:
        while not work.done() or not events.empty():
            next_event = asyncio.ensure_future(events.get())
            await asyncio.wait({next_event, work}, timeout=ping_s, return_when=asyncio.FIRST_COMPLETED)
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
        work.cancel()


def sse(event: str | None, data: dict) -> bytes:
    """One server-sent event; without a name it is an unnamed `data:` message (EventSource's `onmessage`)."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
