"""The queue between requests and the model: pages are gathered into batches of one mode, and one batch at a
time runs on the model (the seed's lock, at batch level), in a worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from dsocr.serving.metrics import Metrics
from ocr_engine import OcrEngine, PageRequest, PageResult

log = logging.getLogger("deepseek_ocr.scheduler")

# What a waiting page is told: ("queued", {"position": n}), ("started", {"batchSize": n}).
ProgressCallback = Callable[[str, dict], None]


@dataclass
class Timings:
    queue_ms: float
    inference_ms: float
    batch_id: int


@dataclass
class _Job:
    engine: OcrEngine
    request: PageRequest
    future: asyncio.Future
    on_progress: ProgressCallback | None
    enqueued_at: float = field(default_factory=time.perf_counter)

    def fits(self, first: "_Job") -> bool:
        return self.engine is first.engine and self.request.mode == first.request.mode


class BatchScheduler:
    def __init__(self, max_batch_size: int, batch_wait_s: float, metrics: Metrics) -> None:
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics
        self.queue: deque[_Job] = deque()
        self.arrived = asyncio.Event()
        self.batch_ids = itertools.count(1)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._serve(), name="batch-scheduler")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    async def submit(
        self, engine: OcrEngine, request: PageRequest, on_progress: ProgressCallback | None = None
    ) -> tuple[PageResult, Timings]:
        """Queues one page and waits for its result; cancelling the wait takes it out of the queue unrun."""
        job = _Job(engine, request, asyncio.get_running_loop().create_future(), on_progress)
        job.future.add_done_callback(lambda future: future.cancelled() and request.abandoned.set())
        self.queue.append(job)
        self.metrics.queue_depth.inc()
        if on_progress:
            on_progress("queued", {"position": len(self.queue) - 1})
        self.arrived.set()
        try:
            return await job.future
        finally:
            if job in self.queue:  # given up while waiting: it never runs
                self.queue.remove(job)
                self.metrics.queue_depth.dec()

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            await self._run(batch)

    async def _next_batch(self) -> list[_Job]:
        while not self.queue:
            self.arrived.clear()
            await self.arrived.wait()
        first = self.queue[0]
        limit = min(self.max_batch_size, first.engine.max_batch_size or self.max_batch_size)
        deadline = time.perf_counter() + self.batch_wait_s
        # Wait a little for company, unless the batch is full already.
        while sum(job.fits(first) for job in self.queue) < limit and (remaining := deadline - time.perf_counter()) > 0:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
            if first not in self.queue:  # its request went away while we waited
                return await self._next_batch()
        batch = [job for job in self.queue if job.fits(first)][:limit]
        for job in batch:
            self.queue.remove(job)
        self.metrics.queue_depth.dec(len(batch))
        for position, job in enumerate(self.queue):
            if job.on_progress:
                job.on_progress("queued", {"position": position})
        return batch

    async def _run(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        batch_id = next(self.batch_ids)
        for job in batch:
            self.metrics.queue_wait.observe(started - job.enqueued_at)
            if job.on_progress:
                job.on_progress("started", {"batchSize": len(batch)})
        self.metrics.batch_size.observe(len(batch))
        self.metrics.running.set(len(batch))
        try:
            results = await asyncio.to_thread(batch[0].engine.run, [job.request for job in batch])
        except Exception as exc:
            log.exception("a batch of %d page(s) failed", len(batch))
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        finally:
            self.metrics.running.set(0)
        elapsed = time.perf_counter() - started
        self.metrics.inference.observe(elapsed)
        for job, result in zip(batch, results):
            self.metrics.generated_tokens.inc(result.generated_tokens)
            if not job.future.done():  # a request that went away while its batch ran is not answered
                timings = Timings(round((started - job.enqueued_at) * 1000, 1), round(elapsed * 1000, 1), batch_id)
                job.future.set_result((result, timings))
