"""POST /api/ocr and /api/ocr/stream: admit, read and check the upload, read the document, answer (as JSON, or
as server-sent events)."""

from __future__ import annotations

import asyncio
from typing import Awaitable

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from dsocr.api.dependencies import get_settings, ready_model
from dsocr.api.openapi import OCR_ERRORS
from dsocr.api.request_scope import TASK_ID, RequestScope
from dsocr.api.sse import SSE_HEADERS, event_stream
from dsocr.api.uploads import UploadPace, read_upload
from dsocr.pipeline.ocr_request import OCR_TEXT_FIELDS, OcrInput, check_ocr_request
from dsocr.pipeline.convert import convert
from dsocr.pipeline.pages import EventSink
from dsocr.pipeline.progress import TaskReporter
from dsocr.serving.submitter import PageSubmitter
from schemas import OcrResponse
from settings import Settings

router = APIRouter(tags=["ocr"])

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


STREAM_EVENTS = """Server-sent events, in this order:
- `queued` `{"page", "position"}`: the page waits for the model, `position` pages ahead of it;
- `started` `{"page"}`: the model is reading the page;
- `delta` `{"page", "text"}`: raw text as it is generated (not from the remote-code engine);
- `retry` `{"page", "attempt", "temperature", "reason"}`: the page ended by the token cap (`reason` "length") or
  in a repeated tail ("repetition") and is read again, sampling at `temperature`: the text streamed for it so far
  is void, the new reading's `delta`s follow;
- `replace` `{"page", "text"}`: the page's raw text is `text`, not what was streamed (an earlier reading was
  kept, or a repeated tail was cut);
- `progress` `{"done", "total"}`: pages finished;
- then `result` with /api/ocr's JSON, or `error` `{"status", "detail", "requestId"}`.

Lines starting with `:` are keep-alive comments (every DEEPSEEK_OCR_SSE_PING_S seconds without an event)."""
STREAM_EXAMPLE = (
    'event: queued\ndata: {"page": 1, "position": 0}\n\nevent: started\ndata: {"page": 1}\n\n'
    'event: delta\ndata: {"page": 1, "text": "# Title"}\n\n: keep-alive\n\n'
    'event: progress\ndata: {"done": 1, "total": 1}\n\nevent: result\ndata: {"mode": "gundam", "text": "# Title"}\n\n'
)


@router.post("/api/ocr", response_model=OcrResponse, openapi_extra=OCR_FORM_SCHEMA, responses=OCR_ERRORS)
async def api_ocr(
    request: Request, model: PageSubmitter = Depends(ready_model), settings: Settings = Depends(get_settings)
) -> OcrResponse:
    # The form is read here, not by FastAPI: the queue slot is taken first, and the size limit applies while the
    # body streams in.
    scope = RequestScope(request, settings.ocr_request_timeout_s)
    try:
        ocr = await scope.within(_read_and_check(request, model, settings, scope.reporter))
        scope.hold_pages(len(ocr.document.numbers))
        response = await scope.within(_convert(request.app, ocr, model, scope), drop_on_disconnect=True)
    except BaseException as exc:
        scope.release(exc)
        raise
    scope.release()
    note_result(request, response)
    return response


@router.post(
    "/api/ocr/stream",
    response_class=StreamingResponse,
    openapi_extra=OCR_FORM_SCHEMA,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}, "example": STREAM_EXAMPLE}},
                     "description": STREAM_EVENTS}, **OCR_ERRORS},
)
async def api_ocr_stream(
    request: Request, model: PageSubmitter = Depends(ready_model), settings: Settings = Depends(get_settings)
) -> StreamingResponse:
    """The same work as /api/ocr, answered as server-sent events: `queued` (position), `started`, `delta` (raw
    text as it is generated), `progress` (pages done), then `result` with /api/ocr's JSON, or `error`. Bad input
    is refused before the stream starts, with the usual status and JSON."""
    scope = RequestScope(request, settings.ocr_request_timeout_s)
    try:
        ocr = await scope.within(_read_and_check(request, model, settings, scope.reporter))
        scope.hold_pages(len(ocr.document.numbers))
    except BaseException as exc:
        scope.release(exc)
        raise
    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    work = asyncio.ensure_future(scope.within(
        _convert(request.app, ocr, model, scope, lambda name, data: events.put_nowait((name, data)))
    ))
    scope.release_when_done(work)  # the stream's client leaving cancels the work (see event_stream)
    work.add_done_callback(lambda done: note_result(request, done.result()) if _succeeded(done) else None)
    stream = event_stream(request.app, work, events, settings.ocr_sse_ping_s, request.state.summary)
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


async def _read_and_check(
    request: Request, model: PageSubmitter, settings: Settings, reporter: TaskReporter
) -> OcrInput:
    """Reads the upload and checks it; a progress task named by its `task_id` follows from then on."""
    pace = UploadPace(settings.ocr_upload_timeout_s, settings.ocr_upload_min_kib_s * 1024)
    form = await read_upload(request, settings.max_upload_bytes, OCR_TEXT_FIELDS, pace)
    reporter.attach(form.fields.get(TASK_ID))
    reporter.uploaded(len(form.data))
    request.state.summary["upload_bytes"] = len(form.data)
    ocr = await check_ocr_request(form, model, settings, request.app.state.pdf_workers)
    request.state.summary.update(mode=ocr.mode.name, pages=len(ocr.document.numbers))
    return ocr


def note_result(request: Request, response: OcrResponse) -> None:
    """What the request's log line says of its result (see dsocr.api.middleware.request_ids)."""
    request.state.summary.update(
        queue_ms=response.timings.queue_ms,
        inference_ms=response.timings.inference_ms,
        generated_tokens=sum(page.generated_tokens for page in response.pages),
        finish_reasons=[page.finish_reason for page in response.pages],
        attempts=[page.attempts for page in response.pages],
    )


def _succeeded(work: asyncio.Future) -> bool:
    return not work.cancelled() and work.exception() is None


def _convert(app: FastAPI, ocr: OcrInput, model: PageSubmitter, scope: RequestScope,
             on_event: EventSink | None = None) -> Awaitable[OcrResponse]:
    state = app.state
    return convert(ocr, model, state.runs, state.history, scope.reporter, state.settings.ocr_page_previews, on_event,
                   owner=scope.owner, root_path=scope.request.scope.get("root_path", ""))
