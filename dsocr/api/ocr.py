"""POST /api/ocr and /api/ocr/stream: admit, read and check the upload, read the document, answer (as JSON, or
as server-sent events)."""

from __future__ import annotations

import asyncio
from typing import Awaitable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from dsocr.api.dependencies import get_settings, ready_engine
from dsocr.api.sse import SSE_HEADERS, event_stream
from dsocr.api.uploads import read_upload
from dsocr.errors import ServiceError
from dsocr.pipeline.ocr_request import OCR_TEXT_FIELDS, OcrInput, check_ocr_request
from dsocr.pipeline.ocr_run import read_in_run
from dsocr.pipeline.pages import EventSink
from dsocr.pipeline.progress import TaskReporter
from dsocr.serving.admission import Admission, unless_disconnected, within_deadline
from ocr_engine import OcrEngine
from schemas import OcrResponse
from settings import Settings

router = APIRouter()

OCR_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "an image or a PDF"},
                        "mode": {"type": "string"},
                        "prompt": {"type": "string"},
                        "pages": {"type": "string", "description": "PDF pages, e.g. 1-3,7"},
                        "task_id": {"type": "string", "description": "a task from POST /api/task/create to report progress to"},
                    },
                }
            }
        },
    }
}


@router.post("/api/ocr", response_model=OcrResponse, openapi_extra=OCR_FORM_SCHEMA)
async def api_ocr(
    request: Request, engine: OcrEngine = Depends(ready_engine), settings: Settings = Depends(get_settings)
) -> OcrResponse:
    # The form is read here, not by FastAPI: the queue slot is taken first, and the size limit applies while the
    # body streams in.
    admission: Admission = request.app.state.admission
    admission.enter()
    reporter = TaskReporter(request.app.state.tasks)
    try:
        return await within_deadline(_ocr(request, engine, settings, reporter), settings.ocr_request_timeout_s)
    except BaseException as exc:
        reporter.failed(failure_detail(exc))
        raise
    finally:
        admission.leave()


async def _ocr(request: Request, engine: OcrEngine, settings: Settings, reporter: TaskReporter) -> OcrResponse:
    ocr = await _read_reporting(request, engine, settings, reporter)
    return await unless_disconnected(request, _read_in_run(request.app, ocr, engine, reporter))


def _read_in_run(app: FastAPI, ocr: OcrInput, engine: OcrEngine, reporter: TaskReporter,
                 on_event: EventSink | None = None) -> Awaitable[OcrResponse]:
    state = app.state
    return read_in_run(ocr, engine, state.scheduler, state.runs, state.history, reporter,
                       state.settings.ocr_page_previews, on_event)


async def _read_reporting(request: Request, engine: OcrEngine, settings: Settings, reporter: TaskReporter) -> OcrInput:
    """Reads and checks the request; a progress task named by its `task_id` follows from then on."""

    form = await read_upload(request, settings.max_upload_bytes, OCR_TEXT_FIELDS)
    reporter.attach(form.fields.get("task_id"))
    reporter.uploaded(len(form.data))
    return await check_ocr_request(form, engine.info, settings)


def _failure(done: asyncio.Future) -> BaseException | None:
    return asyncio.CancelledError() if done.cancelled() else done.exception()


def failure_detail(exc: BaseException) -> str:
    if isinstance(exc, ServiceError):
        return exc.detail
    if isinstance(exc, asyncio.CancelledError):
        return "The request was cancelled"
    return "Internal error"


@router.post(
    "/api/ocr/stream",
    response_class=StreamingResponse,
    openapi_extra=OCR_FORM_SCHEMA,
    responses={200: {"content": {"text/event-stream": {}}, "description": "progress events, then the result"}},
)
async def api_ocr_stream(
    request: Request, engine: OcrEngine = Depends(ready_engine), settings: Settings = Depends(get_settings)
) -> StreamingResponse:
    """The same work as /api/ocr, answered as server-sent events: `queued` (position), `started`, `delta` (raw
    text as it is generated), then `result` with /api/ocr's JSON, or `error`. Bad input is refused before the
    stream starts, with the usual status and JSON."""
    admission: Admission = request.app.state.admission
    admission.enter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.ocr_request_timeout_s
    reporter = TaskReporter(request.app.state.tasks)
    try:
        ocr = await within_deadline(_read_reporting(request, engine, settings, reporter), settings.ocr_request_timeout_s)
    except BaseException as exc:
        reporter.failed(failure_detail(exc))
        admission.leave()
        raise
    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    remaining = max(deadline - loop.time(), 0.001)
    work = asyncio.ensure_future(
        within_deadline(
            _read_in_run(request.app, ocr, engine, reporter, lambda name, data: events.put_nowait((name, data))),
            remaining,
        )
    )
    # The slot is given back when the work ends, however it ends, even if the stream is never consumed.
    work.add_done_callback(lambda _: admission.leave())
    work.add_done_callback(lambda done: reporter.failed(failure_detail(_failure(done))) if _failure(done) else None)
    return StreamingResponse(event_stream(request.app, work, events), media_type="text/event-stream", headers=SSE_HEADERS)
