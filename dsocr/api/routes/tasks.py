"""Progress tasks: created by a client, followed over server-sent events, named by an OCR request's `task_id`."""

from __future__ import annotations

from typing import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from dsocr.api.middleware.auth import client_owner
from dsocr.api.openapi import API_ERRORS, errors
from dsocr.api.sse import KEEPALIVE, SSE_HEADERS, sse, until_streams_end
from dsocr.pipeline.progress import TaskRegistry
from schemas import TaskCreated

router = APIRouter(tags=["progress"], responses=errors(*API_ERRORS))


@router.post("/api/task/create", response_model=TaskCreated)
async def create_task(request: Request) -> TaskCreated:
    """A progress task: follow it at /api/progress/{taskId}, and name it in an OCR request's `task_id` field."""
    return TaskCreated(task_id=await request.app.state.tasks.create(client_owner(request)))


@router.get(
    "/api/progress/{task_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the task's stages, then `event: complete`"}},
)
async def task_progress(task_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: `data: {"stage", "current", "total", "message", "percent"}` now and at every change
    (stages pending, upload, preprocessing, inference, postprocessing, complete, error), then `event: complete`.
    An unknown or expired task ends at once with stage `error`, and so does every stream when the service stops.
    """
    events = _events(request.app.state.tasks, task_id, client_owner(request))
    return StreamingResponse(until_streams_end(request.app, events, SHUTDOWN_EVENTS),
                             media_type="text/event-stream", headers=SSE_HEADERS)


# The last events of a progress stream the service ends as it stops: stage `error`, then `complete`.
_STOPPED = {"stage": "error", "current": 0, "total": 0, "percent": 100,
            "message": "The service is shutting down; follow the task again once it is back"}
SHUTDOWN_EVENTS = (sse(None, _STOPPED), sse("complete", _STOPPED))


async def _events(tasks: TaskRegistry, task_id: str, owner: str) -> AsyncIterator[bytes]:
    async for message in tasks.follow(task_id, owner):
        yield KEEPALIVE if message is None else sse(*message)
