"""The HTTP service: routes and lifespan. Run with `uvicorn app:app`."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from admission import Admission, unless_disconnected, within_deadline
from errors import NotFound, ServiceError
from metrics import Metrics, RequestMetricsMiddleware
from model_state import ModelState
from modes import PROMPT_PRESETS
from ocr_engine import ModelPathError, OcrEngine, resolve_model_source
from ocr_pipeline import EventSink, read_document
from ocr_request import OcrInput, read_ocr_request
from runs import RunStore
from scheduler import BatchScheduler
from schemas import HealthNotReady, HealthReady, ModeInfo, ModesResponse, OcrResponse, PromptInfo
from settings import Settings, SettingsError, load_settings

log = logging.getLogger("deepseek_ocr")

ARTIFACT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
# How often expired runs are looked for, at most.
SWEEP_INTERVAL_S = 60
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
    app.state.model.start_loading(settings, source)
    app.state.scheduler.start()
    sweeper = asyncio.create_task(sweep_runs(runs, min(SWEEP_INTERVAL_S, max(settings.ocr_run_ttl_s, 1))))
    yield
    sweeper.cancel()
    await app.state.scheduler.stop()


async def sweep_runs(runs: RunStore, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(runs.sweep)


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
        body = HealthNotReady(status="error" if model.status == "error" else "loading", detail=model.detail)
        return JSONResponse(body.model_dump(by_alias=True), status_code=503)
    info = model.engine.info
    return HealthReady(
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
    info = engine.info
    return ModesResponse(
        engine=info.engine,
        family=info.family.value,
        modes=[
            ModeInfo(
                name=mode.name,
                base_size=mode.base_size,
                image_size=mode.image_size,
                crop_mode=mode.crop_mode,
                vision_tokens=mode.max_vision_tokens,
                description=mode.description,
            )
            for mode in info.modes
        ],
        default_mode=settings.ocr_default_mode,
        default_prompt=settings.ocr_default_prompt,
        prompts=[PromptInfo(name=preset.name, prompt=preset.prompt) for preset in PROMPT_PRESETS],
        max_image_mb=settings.max_image_mb,
    )


@router.post("/api/ocr", response_model=OcrResponse, openapi_extra=OCR_FORM_SCHEMA)
async def api_ocr(
    request: Request, engine: OcrEngine = Depends(ready_engine), settings: Settings = Depends(get_settings)
) -> OcrResponse:
    # The form is read here, not by FastAPI: the queue slot is taken first, and the size limit applies while the
    # body streams in.
    admission: Admission = request.app.state.admission
    admission.enter()
    try:
        return await within_deadline(_ocr(request, engine, settings), settings.ocr_request_timeout_s)
    finally:
        admission.leave()


async def _ocr(request: Request, engine: OcrEngine, settings: Settings) -> OcrResponse:
    ocr = await read_ocr_request(request, engine.info, settings)
    return await unless_disconnected(request, _read_in_run(request.app, ocr, engine))


async def _read_in_run(app: FastAPI, ocr: OcrInput, engine: OcrEngine, on_event: EventSink | None = None) -> OcrResponse:
    """Reads the document in a run folder of its own: kept when it holds artifacts, removed on failure."""
    runs: RunStore = app.state.runs
    run = runs.create()
    try:
        response = await read_document(ocr, engine, app.state.scheduler, run, on_event)
    except BaseException:
        runs.discard(run)
        raise
    await asyncio.to_thread(runs.keep, run)
    return response


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
    try:
        ocr = await within_deadline(read_ocr_request(request, engine.info, settings), settings.ocr_request_timeout_s)
    except BaseException:
        admission.leave()
        raise
    events: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
    remaining = max(deadline - loop.time(), 0.001)
    work = asyncio.ensure_future(
        within_deadline(_read_in_run(request.app, ocr, engine, lambda name, data: events.put_nowait((name, data))), remaining)
    )
    # The slot is given back when the work ends, however it ends, even if the stream is never consumed.
    work.add_done_callback(lambda _: admission.leave())
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
    app.add_exception_handler(Exception, internal_error)
    app.include_router(router)
    return app


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    request.app.state.metrics.failures.labels(exc.reason).inc()
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


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
