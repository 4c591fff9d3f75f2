"""The HTTP service: creates the app, runs its lifespan, mounts the routers. Run with `uvicorn app:app`."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from dsocr.api import artifacts, health, history, modes, ocr, tasks
from dsocr.api.errors import install_error_handlers
from dsocr.engines.loading import ModelPathError, resolve_model_source
from dsocr.pipeline.history import HistoryStore
from dsocr.pipeline.progress import TaskRegistry
from dsocr.pipeline.runs import RunStore
from dsocr.serving.admission import Admission
from dsocr.serving.metrics import Metrics, RequestMetricsMiddleware
from dsocr.serving.model_host import ModelState
from dsocr.serving.scheduler import BatchScheduler
from settings import Settings, SettingsError, load_settings

log = logging.getLogger("deepseek_ocr")

# How often expired runs (and history entries) are looked for, at most.
SWEEP_INTERVAL_S = 60
# Progress tasks: at most this many at once, each forgotten this long after its last change.
MAX_TASKS = 1024
TASK_TTL_S = 600


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
    history_store: HistoryStore | None = app.state.history
    if history_store:
        history_store.open()
    app.state.model.start_loading(settings, source)
    app.state.scheduler.start()
    sweeper = asyncio.create_task(sweep(runs, history_store, min(SWEEP_INTERVAL_S, max(settings.ocr_run_ttl_s, 1))))
    yield
    sweeper.cancel()
    await app.state.scheduler.stop()
    if history_store:
        history_store.close()


async def sweep(runs: RunStore, history_store: HistoryStore | None, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        await asyncio.to_thread(runs.sweep)
        if history_store:
            await asyncio.to_thread(history_store.prune)


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
    install_error_handlers(app)
    for feature in (health, modes, ocr, tasks, history, artifacts):
        app.include_router(feature.router)
    return app


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
