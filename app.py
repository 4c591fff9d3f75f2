"""The HTTP service: creates the app, runs its lifespan, mounts the routers. Run with `uvicorn app:app`."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from dsocr import __version__
from dsocr.api.errors import install_error_handlers
from dsocr.api.lifecycle import drain_on_sigterm, open_history, reload_keys_on_sighup, start_sweeping
from dsocr.api.middleware.auth import ApiKeyMiddleware, ApiKeys
from dsocr.api.middleware.head import HeadAsGetMiddleware
from dsocr.api.middleware.request_ids import REQUEST_ID_HEADER, RequestIdMiddleware
from dsocr.api.middleware.request_metrics import RequestMetricsMiddleware
from dsocr.api.middleware.root_path import RootPathMiddleware
from dsocr.api.openapi import operation_id
from dsocr.api.routes import artifacts, health, history, jobs, modes, ocr, tasks, ui
from dsocr.engines.loading import ModelPathError, model_source
from dsocr.jobs.service import JobService
from dsocr.logs import configure_logging
from dsocr.pipeline.pdf_workers import PdfWorkers
from dsocr.pipeline.progress import TaskRegistry
from dsocr.pipeline.runs import RunStore, RunsDirError
from dsocr.serving.admission import Admission
from dsocr.serving.metrics import Metrics
from dsocr.serving.factory import make_submitter
from dsocr.serving.submitter import PageSubmitter
from dsocr.store.changes import Changes
from dsocr.store.database import Database, DatabaseUrlError
from dsocr.store.history import HistoryStore
from dsocr.store.migrations import migrate
from settings import EngineChoice, Settings, SettingsError, load_settings, startup_warnings

log = logging.getLogger("deepseek_ocr")

OCR_PATHS = ("/api/ocr", "/api/ocr/stream")
OPENAPI_TAGS = [
    {"name": "ocr", "description": "Read a document: an image or a PDF, answered as JSON or as server-sent events"},
    {"name": "jobs", "description": "Documents read in the background, kept in the database, followed from any replica"},
    {"name": "progress", "description": "Progress tasks the web frontend follows beside its OCR request"},
    {"name": "history", "description": "Results kept by the service, per API key"},
    {"name": "artifacts", "description": "Figure crops and annotated pages of a run (capability URLs)"},
    {"name": "service", "description": "Probes, the model's modes"},
]
# Progress tasks: at most this many at once, and per API key, each forgotten this long after its last change.
MAX_TASKS = 4096
MAX_TASKS_PER_KEY = 1024
TASK_TTL_S = 600


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    try:
        source = startup_checks(app)
    except (ModelPathError, RunsDirError) as exc:
        log.error("cannot start: %s", exc)
        raise
    runs: RunStore = app.state.runs
    database: Database = app.state.database
    try:
        version = await asyncio.to_thread(migrate, database)
    except Exception as exc:
        log.error("cannot start: the database %s cannot be used: %s", database.describe(), exc)
        raise
    log.info("database %s at schema version %d", database.describe(), version)
    app.state.changes.start()
    history_store = await asyncio.to_thread(open_history, app)
    job_service: JobService = app.state.jobs
    host: PageSubmitter = app.state.model
    host.start(source)
    app.state.pdf_workers.start()
    await job_service.start()
    drain_on_sigterm(app, host, settings.ocr_shutdown_grace_s)
    reload_keys_on_sighup(app.state.api_keys)
    sweeper = start_sweeping(runs, history_store, settings.ocr_run_ttl_s)
    yield
    sweeper.cancel()
    await asyncio.gather(job_service.stop(settings.ocr_shutdown_grace_s), host.stop(settings.ocr_shutdown_grace_s))
    app.state.pdf_workers.stop()
    await app.state.changes.stop()
    database.close()
    if app.state.exit_code:
        logging.shutdown()
        os._exit(app.state.exit_code)  # a model that cannot serve: exit non-zero, so that the process is restarted


def startup_checks(app: FastAPI) -> str:
    """What must hold before anything starts: a checkpoint to load (none is read here when served through vLLM)
    and a writable runs folder. Returns the checkpoint's source, found once (`uvicorn app:app` checks before the
    lifespan runs): a repo id may have asked the hub."""
    settings: Settings = app.state.settings
    source: str | None = getattr(app.state, "model_source", None)
    if source is None:
        source = app.state.model_source = "" if settings.ocr_engine is EngineChoice.vllm else model_source(settings)
    app.state.runs.prepare()
    return source


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings.ocr_log_format.value, settings.ocr_log_level, settings.ocr_log_probes)
    for warning in startup_warnings(settings):
        log.warning("configuration: %s", warning)
    app = FastAPI(
        title="DeepSeek-OCR service",
        summary="Document images and PDFs to markdown, layout regions and figure crops, with DeepSeek-OCR",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by dsocr.api.routes.ui with local assets
        redoc_url=None,
        generate_unique_id_function=operation_id,
        openapi_tags=OPENAPI_TAGS,
    )
    app.state.settings = settings
    app.state.exit_code = 0
    app.state.runs = RunStore(
        settings.ocr_runs_dir, ttl_s=settings.ocr_run_ttl_s, max_bytes=int(settings.ocr_runs_max_mb * 1024 * 1024)
    )
    app.state.metrics = metrics = Metrics()
    app.state.model = make_submitter(settings, metrics)
    app.state.admission = Admission(settings.ocr_max_queue, metrics, settings.ocr_max_queue_pages)
    app.state.pdf_workers = PdfWorkers(settings.pdf_worker_count, settings.ocr_pdf_page_timeout_s,
                                         metrics.pdf_workers_busy)
    try:
        app.state.database = database = Database(settings.ocr_database_url, settings.ocr_data_dir)
    except DatabaseUrlError as exc:
        raise SettingsError(str(exc)) from None
    app.state.changes = changes = Changes(database)
    app.state.tasks = TaskRegistry(database, changes, MAX_TASKS, MAX_TASKS_PER_KEY, TASK_TTL_S, settings.ocr_sse_ping_s)
    app.state.jobs = JobService(settings, database, changes, app.state.model, app.state.pdf_workers)
    megabytes = 1024 * 1024
    app.state.history = (
        HistoryStore(database, settings.ocr_history_dir, settings.ocr_history_max, settings.ocr_history_ttl_s,
                     int(settings.ocr_history_max_mb * megabytes), int(settings.ocr_history_total_mb * megabytes))
        if settings.ocr_history
        else None
    )

    install_error_handlers(app)  # first, so innermost: a 500 still passes the CORS and metrics middlewares
    try:
        app.state.api_keys = api_keys = ApiKeys(settings.ocr_api_keys, settings.ocr_api_keys_file)
    except OSError as exc:
        raise SettingsError(f"DEEPSEEK_OCR_API_KEYS_FILE={settings.ocr_api_keys_file!r}: cannot read it ({exc})") from None
    # Inside CORS: preflights are answered without a key, and a 401 still carries the CORS headers.
    app.add_middleware(ApiKeyMiddleware, keys=api_keys)
    wildcard = "*" in settings.allowed_origins
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if wildcard else settings.allowed_origins,
        allow_credentials=not wildcard,  # with "*", credentials would make Starlette echo any origin
        allow_methods=["GET", "HEAD", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        expose_headers=[REQUEST_ID_HEADER],
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics, paths=OCR_PATHS)
    app.add_middleware(RequestIdMiddleware, summarised=OCR_PATHS)  # every answer carries the id
    app.add_middleware(RootPathMiddleware, root_path=settings.ocr_root_path)
    app.add_middleware(HeadAsGetMiddleware)  # outermost: everything inside sees the GET it stands for
    for feature in (health, modes, ocr, jobs, tasks, history, artifacts, ui):
        app.include_router(feature.router)
    return app


def _module_app() -> FastAPI:
    """The app uvicorn serves: a configuration that cannot work ends the process with one line, no traceback."""
    try:
        module_app = create_app()
        startup_checks(module_app)
    except SettingsError as exc:
        raise SystemExit(f"Invalid configuration: {exc}") from None
    except (ModelPathError, RunsDirError) as exc:
        raise SystemExit(f"Cannot start: {exc}") from None
    return module_app


configure_logging()


def __getattr__(name: str) -> FastAPI:
    """`app`, made when uvicorn first asks for it (`uvicorn app:app`), not when tests import `create_app`."""
    if name != "app":
        raise AttributeError(f"module 'app' has no attribute {name!r}")
    module_app = globals()["app"] = _module_app()
    return module_app
