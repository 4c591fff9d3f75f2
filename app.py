"""The HTTP service: routes and lifespan. Run with `uvicorn app:app`."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from enum import Enum
from pathlib import PurePath
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from admission import Admission, unless_disconnected, within_deadline
from errors import NotFound, ServiceError
from history import HistoryStore, new_entry_id
from metrics import Metrics, RequestMetricsMiddleware
from model_state import ModelState
from modes import PROMPT_PRESETS
from ocr_engine import ModelPathError, OcrEngine, resolve_model_source
from ocr_pipeline import EventSink, read_document
from ocr_request import OcrInput, read_ocr_request
from progress import TaskRegistry, TaskReporter
from runs import RunStore
from scheduler import BatchScheduler
from schemas import (
    HealthNotReady,
    HealthReady,
    HistoryItem,
    HistoryList,
    ModeInfo,
    ModesResponse,
    OcrResponse,
    PromptInfo,
    TaskCreated,
)
from settings import Settings, SettingsError, load_settings
from uploads import UploadForm

log = logging.getLogger("deepseek_ocr")

ARTIFACT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
# How often expired runs (and history entries) are looked for, at most.
SWEEP_INTERVAL_S = 60
# Progress tasks: at most this many at once, each forgotten this long after its last change.
MAX_TASKS = 1024
TASK_TTL_S = 600
HISTORY_LIST_LIMIT = 200
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

router = APIRouter()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_model_state(request: Request) -> ModelState:
    return request.app.state.model


def ready_engine(model: ModelState = Depends(get_model_state)) -> OcrEngine:
    return model.ready_engine()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    try:
        source = resolve_model_source(settings.ocr_model_path)
    except ModelPathError as exc:
        log.error("cannot start: %s", exc)
        raise
    runs: RunStore = app.state.runs
    runs.prepare()
    history: HistoryStore | None = app.state.history
    if history:
        history.open()
    app.state.model.start_loading(settings, source)
    app.state.scheduler.start()
    sweeper = asyncio.create_task(sweep(runs, history, min(SWEEP_INTERVAL_S, max(settings.ocr_run_ttl_s, 1))))
    yield
    sweeper.cancel()
    await app.state.scheduler.stop()
    if history:
        history.close()


async def sweep(runs: RunStore, history: HistoryStore | None, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(runs.sweep)
        if history:
            await asyncio.to_thread(history.prune)


@router.get("/health/live")
async def health_live() -> dict[str, str]:
    return {"status": "alive"}


@router.get(
    "/health",
    response_model=HealthReady,
    responses={503: {"model": HealthNotReady, "description": "loading, or the load failed"}},
)
@router.get("/health/ready", response_model=HealthReady, include_in_schema=False)
async def health(model: ModelState = Depends(get_model_state)) -> HealthReady | JSONResponse:
    if model.engine is None:
        status = "error" if model.status == "error" else "loading"
        body = HealthNotReady(status=status, modes=model.mode_names, detail=model.detail)
        return JSONResponse(body.model_dump(by_alias=True), status_code=503)
    info = model.engine.info
    return HealthReady(
        modes=[mode.name for mode in info.modes],
        model=info.model,
        engine=info.engine,
        family=info.family.value,
        device=info.device,
        dtype=info.dtype,
        attn_implementation=info.attn_implementation,
    )


@router.get("/api/modes", response_model=ModesResponse)
async def api_modes(
    engine: OcrEngine = Depends(ready_engine), settings: Settings = Depends(get_settings)
) -> ModesResponse:
    """The seed's shape: `modes` is an object keyed by mode name (the default mode first), `maxImageMb` the
    upload limit."""
    info = engine.info
    ordered = sorted(info.modes, key=lambda mode: mode.name != settings.ocr_default_mode)
    return ModesResponse(
        default_prompt=settings.ocr_default_prompt,
        modes={
            mode.name: ModeInfo(
                label=mode.label,
                description=mode.description,
                base_size=mode.base_size,
                image_size=mode.image_size,
                crop_mode=mode.crop_mode,
                speed=mode.speed,
                quality=mode.quality,
                vision_tokens=mode.max_vision_tokens,
            )
            for mode in ordered
        },
        max_image_mb=settings.max_image_mb,
        engine=info.engine,
        family=info.family.value,
        default_mode=settings.ocr_default_mode,
        prompts=[PromptInfo(name=preset.name, prompt=preset.prompt) for preset in PROMPT_PRESETS],
    )


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


async def _read_reporting(request: Request, engine: OcrEngine, settings: Settings, reporter: TaskReporter) -> OcrInput:
    """Reads and checks the request; a progress task named by its `task_id` follows from then on."""

    def on_form(form: UploadForm) -> None:
        reporter.attach(form.fields.get("task_id"))
        reporter.uploaded(len(form.data))

    return await read_ocr_request(request, engine.info, settings, on_form)


async def _read_in_run(
    app: FastAPI, ocr: OcrInput, engine: OcrEngine, reporter: TaskReporter, on_event: EventSink | None = None
) -> OcrResponse:
    """Reads the document in a run folder of its own (kept when it holds artifacts, removed on failure), and
    keeps the result in the history."""
    settings: Settings = app.state.settings
    runs: RunStore = app.state.runs
    run = runs.create()
    reporter.pages(len(ocr.document.pages))

    def on_pipeline_event(name: str, data: dict) -> None:
        reporter.event(name, data)
        if on_event:
            on_event(name, data)

    try:
        response = await read_document(
            ocr, engine, app.state.scheduler, run, on_pipeline_event, settings.ocr_page_previews,
            stream_text=on_event is not None,
        )
        reporter.postprocessing()
        await asyncio.to_thread(runs.keep, run)
    except BaseException:
        runs.discard(run)
        raise
    response = await remember(app, response)
    reporter.complete()
    return response


async def remember(app: FastAPI, response: OcrResponse) -> OcrResponse:
    """The result with its `historyId`, once kept; a history that cannot be written never fails the answer."""
    history: HistoryStore | None = app.state.history
    if history is None:
        return response
    entry_id = new_entry_id()
    kept = response.model_copy(update={"history_id": entry_id})
    try:
        await asyncio.to_thread(history.add, entry_id, kept.model_dump(by_alias=True))
    except Exception:
        log.exception("could not keep the result in the history")
        return response
    return kept


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
    return StreamingResponse(
        _event_stream(request.app, work, events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _event_stream(app: FastAPI, work: asyncio.Future, events: asyncio.Queue) -> AsyncIterator[bytes]:
    try:
        while not work.done() or not events.empty():
            next_event = asyncio.ensure_future(events.get())
            await asyncio.wait({next_event, work}, return_when=asyncio.FIRST_COMPLETED)
            if next_event.done():
                yield sse(*next_event.result())
            else:
                next_event.cancel()
        error = work.exception()
        if error is None:
            yield sse("result", work.result().model_dump(by_alias=True))
        elif isinstance(error, ServiceError):
            app.state.metrics.failures.labels(error.reason).inc()
            yield sse("error", {"status": error.status_code, "detail": error.detail})
        else:
            request_id = log_internal_error(app, "POST /api/ocr/stream", error)
            yield sse("error", {"status": 500, "detail": f"Internal error (request id {request_id})", "requestId": request_id})
    finally:  # also when the client goes away mid-stream: its remaining pages are dropped
        work.cancel()


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@router.post("/api/task/create", response_model=TaskCreated)
async def create_task(request: Request) -> TaskCreated:
    """A progress task: follow it at /api/progress/{taskId}, and name it in an OCR request's `task_id` field."""
    return TaskCreated(task_id=request.app.state.tasks.create().id)


@router.get(
    "/api/progress/{task_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "the task's stages, then `event: complete`"}},
)
async def task_progress(task_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: `data: {"stage", "current", "total", "message", "percent"}` now and at every change
    (stages pending, upload, preprocessing, inference, postprocessing, complete, error), then `event: complete`.
    An unknown or expired task ends at once with stage `error`."""
    return StreamingResponse(
        request.app.state.tasks.follow(task_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class DownloadFormat(str, Enum):
    md = "md"
    json = "json"
    raw = "raw"


# What each download format holds: (media type, file name suffix).
DOWNLOADS = {
    DownloadFormat.md: ("text/markdown; charset=utf-8", ".md"),
    DownloadFormat.json: ("application/json", ".json"),
    DownloadFormat.raw: ("text/plain; charset=utf-8", ".raw.txt"),
}


def get_history(request: Request) -> HistoryStore | None:
    return request.app.state.history


@router.get("/api/history", response_model=HistoryList)
async def history_list(
    limit: int = Query(30, ge=1, le=HISTORY_LIST_LIMIT), history: HistoryStore | None = Depends(get_history)
) -> HistoryList:
    """Kept results, newest first (empty when DEEPSEEK_OCR_HISTORY is off)."""
    if history is None:
        return HistoryList(items=[])
    rows = await asyncio.to_thread(history.list, limit)
    return HistoryList(items=[HistoryItem(**row) for row in rows])


async def _history_entry(entry_id: str, history: HistoryStore | None) -> dict:
    entry = await asyncio.to_thread(history.get, entry_id) if history else None
    if entry is None:
        raise NotFound("No such history entry (unknown or expired)")
    return entry


@router.get("/api/history/{entry_id}", response_model=OcrResponse)
async def history_entry(entry_id: str, history: HistoryStore | None = Depends(get_history)) -> JSONResponse:
    """A kept result: /api/ocr's JSON as it was answered, page previews included."""
    return JSONResponse(await _history_entry(entry_id, history))


@router.get("/api/history/{entry_id}/download")
async def history_download(
    entry_id: str, format: DownloadFormat = DownloadFormat.md, history: HistoryStore | None = Depends(get_history)
) -> Response:
    """A kept result as a file: `md` the markdown, `raw` the model's raw output, `json` the whole result."""
    entry = await _history_entry(entry_id, history)
    if format is DownloadFormat.json:
        content = json.dumps(entry, ensure_ascii=False, indent=2)
    else:
        content = entry["text"] if format is DownloadFormat.md else entry["rawText"]
    media_type, suffix = DOWNLOADS[format]
    name = download_name(entry["fileName"], suffix)
    return Response(content, media_type=media_type, headers={"Content-Disposition": content_disposition(name)})


def download_name(file_name: str, suffix: str) -> str:
    """The upload's name with the download's suffix; only the name's last component counts, never a path."""
    stem = PurePath(file_name.replace("\\", "/")).stem or "result"
    return f"{stem}{suffix}"


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


@router.get("/api/runs/{run_id}/{artifact:path}", response_class=FileResponse)
async def run_artifact(run_id: str, artifact: str, request: Request) -> FileResponse:
    """A figure crop or annotated page of a finished run, while the run is kept."""
    path = request.app.state.runs.artifact(run_id, artifact)
    if path is None:
        raise NotFound("No such artifact (unknown or expired run, or not a file of it)")
    return FileResponse(path, media_type=ARTIFACT_TYPES.get(path.suffix.lower(), "application/octet-stream"))


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="DeepSeek-OCR service", lifespan=lifespan)
    app.state.settings = settings
    app.state.model = ModelState()
    app.state.runs = RunStore(
        settings.ocr_runs_dir, ttl_s=settings.ocr_run_ttl_s, max_bytes=int(settings.ocr_runs_max_mb * 1024 * 1024)
    )
    app.state.metrics = metrics = Metrics()
    app.state.scheduler = BatchScheduler(settings.ocr_max_batch_size, settings.ocr_batch_wait_ms / 1000, metrics)
    app.state.admission = Admission(settings.ocr_max_queue, metrics)
    app.state.tasks = TaskRegistry(MAX_TASKS, TASK_TTL_S)
    app.state.history = (
        HistoryStore(settings.ocr_history_dir, settings.ocr_history_max, settings.ocr_history_ttl_s)
        if settings.ocr_history
        else None
    )

    wildcard = "*" in settings.allowed_origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if wildcard else settings.allowed_origins,
        allow_credentials=not wildcard,  # with "*", credentials would make Starlette echo any origin
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, paths=("/api/ocr", "/api/ocr/stream"))
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, internal_error)
    app.include_router(router)
    return app


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    request.app.state.metrics.failures.labels(exc.reason).inc()
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's parameter checks, as one sentence like every other error."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'] if part not in ('query', 'path', 'body'))}: {error['msg']}"
        for error in exc.errors()
    )
    request.app.state.metrics.failures.labels("invalid_field").inc()
    return JSONResponse({"detail": f"Invalid request: {problems}"}, status_code=422)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = log_internal_error(request.app, f"{request.method} {request.url.path}", exc)
    return JSONResponse(
        {"detail": f"Internal error (request id {request_id})", "requestId": request_id}, status_code=500
    )


def log_internal_error(app: FastAPI, what: str, exc: BaseException) -> str:
    request_id = uuid.uuid4().hex[:12]
    log.error("request %s failed [request id %s]", what, request_id, exc_info=exc)
    app.state.metrics.failures.labels("internal").inc()
    return request_id


def configure_logging() -> None:
    """The service's own log lines, next to uvicorn's (which configures only its own loggers)."""
    logger = logging.getLogger("deepseek_ocr")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _module_app() -> FastAPI:
    try:
        return create_app()
    except SettingsError as exc:
        raise SystemExit(f"Invalid configuration: {exc}") from None


configure_logging()
app = _module_app()
