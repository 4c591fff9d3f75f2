"""`python -m dsocr worker`: works on jobs without serving HTTP, next to the GPUs (or in front of vLLM servers).
The same settings as the service; the database must be the one the HTTP replicas use (DEEPSEEK_OCR_DATABASE_URL).
SIGTERM (or Ctrl-C) stops claiming, gives the pages in hand DEEPSEEK_OCR_SHUTDOWN_GRACE_S to finish, and hands the
rest back to the queue."""

from __future__ import annotations

import asyncio
import logging
import signal

from dsocr.engines.loading import model_source
from dsocr.jobs.service import JobService, replica_id
from dsocr.logs import configure_logging
from dsocr.pipeline.pdf_workers import PdfWorkers
from dsocr.serving.factory import make_submitter
from dsocr.serving.metrics import Metrics
from dsocr.store.changes import Changes
from dsocr.store.database import Database
from dsocr.store.migrations import migrate
from settings import EngineChoice, Settings

log = logging.getLogger("deepseek_ocr.jobs")


async def work_on_jobs(settings: Settings) -> int:
    """Runs until told to stop; returns the exit status (1 when the model cannot serve)."""
    metrics = Metrics()
    submitter = make_submitter(settings, metrics)
    pdf_workers = PdfWorkers(settings.pdf_worker_count, settings.ocr_pdf_page_timeout_s, metrics.pdf_workers_busy)
    database = Database(settings.ocr_database_url, settings.ocr_data_dir)
    version = await asyncio.to_thread(migrate, database)
    log.info("database %s at schema version %d", database.describe(), version)
    changes = Changes(database)
    changes.start()
    service = JobService(settings, database, changes, submitter, pdf_workers, work=True)
    source = "" if settings.ocr_engine is EngineChoice.vllm else await asyncio.to_thread(model_source, settings)
    stop = asyncio.Event()
    exit_code = 0

    def fatal() -> None:
        nonlocal exit_code
        exit_code = 1
        stop.set()

    submitter.on_fatal = fatal
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    submitter.start(source)
    pdf_workers.start()
    await service.start()
    log.info("worker %s: working on jobs from %s", replica_id(settings), service.database.describe())
    await stop.wait()
    log.info("worker: stopping (up to %g s for the pages in hand)", settings.ocr_shutdown_grace_s)
    await asyncio.gather(service.stop(settings.ocr_shutdown_grace_s), submitter.stop(settings.ocr_shutdown_grace_s))
    pdf_workers.stop()
    await changes.stop()
    database.close()
    return exit_code


def main() -> int:
    from settings import SettingsError, load_settings
    from dsocr.engines.loading import ModelPathError
    from dsocr.store.database import DatabaseUrlError

    try:
        settings = load_settings()
        configure_logging(settings.ocr_log_format.value, settings.ocr_log_level, settings.ocr_log_probes)
        return asyncio.run(work_on_jobs(settings))
    except (SettingsError, DatabaseUrlError) as exc:
        raise SystemExit(f"Invalid configuration: {exc}") from None
    except ModelPathError as exc:
        raise SystemExit(f"Cannot start: {exc}") from None
