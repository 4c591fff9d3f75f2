"""Everything jobs need in one process, started and stopped with it: the database (migrated at start), the job
store, change notifications, the worker (unless DEEPSEEK_OCR_JOB_WORKER=false), the webhook sender and the sweep
of expired jobs. The HTTP service and `python -m dsocr worker` both run one."""

from __future__ import annotations

import asyncio
import logging
import socket

from dsocr.store.changes import Changes, in_store
from dsocr.jobs.webhooks import WebhookSender
from dsocr.jobs.worker import JobWorker
from dsocr.pipeline.pdf_workers import PdfWorkers
from dsocr.pipeline.stored_pages import JobFiles, StoredPageReader
from dsocr.serving.submitter import PageSubmitter
from dsocr.store.database import Database
from dsocr.store.jobs import JobStore
from settings import Settings

log = logging.getLogger("deepseek_ocr.jobs")

SWEEP_INTERVAL_S = 60
# Pages one process reads at once when DEEPSEEK_OCR_JOB_CONCURRENCY is 0: two batches for a local model (one
# fills while the other runs: an /api/ocr page waits behind at most those), three quarters of the servers' slots
# through vLLM (the rest stays free for /api/ocr), never more than this.
MAX_AUTO_CONCURRENCY = 256


def job_concurrency(settings: Settings, submitter: PageSubmitter) -> int:
    if settings.ocr_job_concurrency:
        return settings.ocr_job_concurrency
    if submitter.through_vllm:
        slots = len(settings.ocr_vllm_urls) * settings.ocr_vllm_max_inflight
        return max(1, min(slots * 3 // 4, MAX_AUTO_CONCURRENCY))
    return 2 * settings.ocr_max_batch_size


def replica_id(settings: Settings) -> str:
    return settings.ocr_replica_id or socket.gethostname()


class JobService:
    def __init__(self, settings: Settings, database: Database, changes: Changes, submitter: PageSubmitter,
                 pdf_workers: PdfWorkers, work: bool | None = None) -> None:
        self.settings = settings
        self.database = database
        self.store = JobStore(database, settings.ocr_max_queued_job_pages)
        self.changes = changes
        self.files = JobFiles(settings.ocr_data_dir)
        reader = StoredPageReader(submitter, settings, pdf_workers, self.files)
        self.worker = JobWorker(self.store, self.changes, reader, replica_id(settings),
                                job_concurrency(settings, submitter), settings.ocr_job_lease_s,
                                settings.ocr_page_attempts) if (settings.ocr_job_worker if work is None else work) else None
        self.webhooks = WebhookSender(self.store, self.changes, settings.ocr_webhook_secret, settings.ocr_webhook_hosts)
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if self.worker is not None:
            await self.worker.start()
        self.webhooks.start()
        self.tasks.append(asyncio.create_task(self._sweep(), name="jobs-sweep"))

    async def stop_working(self, grace_s: float) -> None:
        """Claims no more pages; the pages in hand get `grace_s`, then go back to the queue."""
        if self.worker is not None:
            await self.worker.stop(grace_s)

    async def stop(self, grace_s: float) -> None:
        await self.stop_working(grace_s)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.webhooks.stop()

    async def _sweep(self) -> None:
        max_bytes = int(self.settings.ocr_jobs_max_mb * 1024 * 1024)
        while True:
            try:
                removed = await in_store(self.store.sweep, self.settings.ocr_job_ttl_s, max_bytes)
                if removed:
                    await in_store(self.files.remove, removed)
            except Exception:
                log.exception("sweeping expired jobs failed; trying again in %d s", SWEEP_INTERVAL_S)
            await asyncio.sleep(SWEEP_INTERVAL_S)
