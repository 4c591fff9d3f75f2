"""The HTTP service: routes and lifespan. Run with `uvicorn app:app`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse

from documents import load_document
from errors import NotFound, ServiceError
from model_state import ModelState
from modes import PROMPT_PRESETS
from ocr_engine import ModelPathError, OcrEngine, resolve_model_source
from ocr_pipeline import document_response, read_document
from ocr_request import resolve_mode, resolve_prompt
from runs import RunStore
from scheduler import InferenceRunner
from schemas import HealthNotReady, HealthReady, ModeInfo, ModesResponse, OcrResponse, PromptInfo
from settings import Settings, SettingsError, load_settings
from uploads import read_upload

log = logging.getLogger("deepseek_ocr")

OCR_TEXT_FIELDS = ("mode", "prompt", "pages")
ARTIFACT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
# How often expired runs are looked for, at most.
SWEEP_INTERVAL_S = 60

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
    sweeper = asyncio.create_task(sweep_runs(runs, min(SWEEP_INTERVAL_S, max(settings.ocr_run_ttl_s, 1))))
    yield
    sweeper.cancel()


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


@router.post(
    "/api/ocr",
    response_model=OcrResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "mode": {"type": "string"},
                            "prompt": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def api_ocr(
    request: Request, engine: OcrEngine = Depends(ready_engine), settings: Settings = Depends(get_settings)
) -> OcrResponse:
    # The form is read here, not by FastAPI, so that the size limit applies while the body streams in.
    runs: RunStore = request.app.state.runs
    run = runs.create()
    try:
        form = await read_upload(request, settings.max_upload_bytes, OCR_TEXT_FIELDS)
        mode = resolve_mode(form.fields.get("mode"), engine.info, settings.ocr_default_mode)
        prompt = resolve_prompt(form.fields.get("prompt"), settings.ocr_default_prompt, settings.ocr_max_prompt_chars)
        started = time.perf_counter()
        document = await asyncio.to_thread(
            load_document, form.data, form.fields.get("pages"), settings.ocr_max_image_pixels,
            settings.ocr_pdf_dpi, settings.ocr_max_pdf_pages,
        )
        pages = await read_document(document, prompt, mode, engine, request.app.state.runner, run)
        response = document_response(
            pages, mode=mode, prompt=prompt, file_name=form.filename, file_size=len(form.data),
            model=engine.info.model, run=run, duration_ms=(time.perf_counter() - started) * 1000,
        )
    except BaseException:
        runs.discard(run)
        raise
    await asyncio.to_thread(runs.keep, run)
    return response


@router.get("/api/runs/{run_id}/{artifact:path}", response_class=FileResponse)
async def run_artifact(run_id: str, artifact: str, request: Request) -> FileResponse:
    """A figure crop or annotated page of a finished run, while the run is kept."""
    path = request.app.state.runs.artifact(run_id, artifact)
    if path is None:
        raise NotFound("No such artifact (unknown or expired run, or not a file of it)")
    return FileResponse(path, media_type=ARTIFACT_TYPES.get(path.suffix.lower(), "application/octet-stream"))


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(title="DeepSeek-OCR service", lifespan=lifespan)
    app.state.settings = settings
    app.state.model = ModelState()
    app.state.runs = RunStore(
        settings.ocr_runs_dir, ttl_s=settings.ocr_run_ttl_s, max_bytes=int(settings.ocr_runs_max_mb * 1024 * 1024)
    )
    app.state.runner = InferenceRunner()

    wildcard = "*" in settings.allowed_origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if wildcard else settings.allowed_origins,
        allow_credentials=not wildcard,  # with "*", credentials would make Starlette echo any origin
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=["*"],
    )
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(Exception, internal_error)
    app.include_router(router)
    return app


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    request_id = uuid.uuid4().hex[:12]
    log.error("request %s %s failed [request id %s]", request.method, request.url.path, request_id, exc_info=exc)
    return JSONResponse(
        {"detail": f"Internal error (request id {request_id})", "requestId": request_id}, status_code=500
    )


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
