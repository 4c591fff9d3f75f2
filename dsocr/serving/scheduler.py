"""The queue between requests and the model: pages are gathered into batches of one mode, and one batch at a
time goes to the local host's model (the seed's lock, at batch level).

The loop is total: it never runs an empty batch, one guard covers a whole batch (result handling included), an
engine that answers the wrong number of pages fails that batch and the loop goes on, and if the loop itself
dies, whoever watches it (the local host) is told."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from dsocr.errors import ServiceError
from dsocr.serving.metrics import Metrics
from ocr_engine import PageRequest, PageResult, ProgressCallback, Timings

log = logging.getLogger("deepseek_ocr.scheduler")

# One page's outcome of a batch: its result, or the error that page alone ends in.
BatchOutcome = PageResult | BaseException
# Runs a batch on the model: one outcome per request, in order.
BatchRunner = Callable[[list[PageRequest]], Awaitable[list[BatchOutcome]]]


@dataclass(eq=False)  # compared and hashed by identity: a queue lookup never compares page images
class _Job:
    request: PageRequest
    future: asyncio.Future
    on_progress: ProgressCallback | None
    enqueued_at: float = field(default_factory=time.perf_counter)

    def fits(self, first: "_Job") -> bool:
        return self.request.mode == first.request.mode


class BatchScheduler:
    def __init__(
        self, batch_limit: Callable[[], int], batch_wait_s: float, metrics: Metrics, run_batch: BatchRunner
    ) -> None:
        self.batch_limit = batch_limit  # the most pages of a batch, asked for each batch
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics
        self.run_batch = run_batch
        # Insertion-ordered, removal in O(1): a dict used as an ordered set of the waiting jobs.
        self.queue: dict[_Job, None] = {}
        self.running: list[_Job] = []
        self.changed = asyncio.Event()  # a job arrived or left
        self.batch_ids = itertools.count(1)
        self.task: asyncio.Task | None = None
        self.closed: ServiceError | None = None  # once set, new pages are refused with it

    def start(self, on_death: Callable[[str, BaseException], None]) -> None:
        self.task = asyncio.create_task(self._serve(), name="batch-scheduler")

        def watch(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                on_death("The batch scheduler died", task.exception())

        self.task.add_done_callback(watch)

    async def submit(
        self, request: PageRequest, on_progress: ProgressCallback | None = None
    ) -> tuple[PageResult, Timings]:
        """Queues one page and waits for its result; cancelling the wait takes it out of the queue unrun, or
        tells a running generation to stop."""
        if self.closed is not None:
            raise self.closed
        job = _Job(request, asyncio.get_running_loop().create_future(), on_progress)
        job.future.add_done_callback(lambda future: future.cancelled() and request.abandoned.set())
        self.queue[job] = None
        self.metrics.queue_depth.inc()
        if on_progress:
            on_progress("queued", {"position": len(self.queue) - 1})
        self.changed.set()
        try:
            return await job.future
        finally:
            if self.queue.pop(job, False) is None:  # given up while waiting: it never runs
                self.metrics.queue_depth.dec()
                self.changed.set()

    async def _serve(self) -> None:
        while True:
            batch = await self._next_batch()
            await self._run(batch)

    async def _next_batch(self) -> list[_Job]:
        """The oldest page and up to `limit - 1` more of its mode, after waiting at most `batch_wait_s` for
        company; never empty."""
        while True:
            while not self.queue:
                self.changed.clear()
                await self.changed.wait()
            first = next(iter(self.queue))
            limit = self.batch_limit()
            deadline = time.perf_counter() + self.batch_wait_s
            while first in self.queue and self._fitting(first) < limit:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self.changed.clear()
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            if first not in self.queue:  # its request went away while we waited: start over
                continue
            batch = [job for job in self.queue if job.fits(first)][:limit]
            for job in batch:
                del self.queue[job]
            self.metrics.queue_depth.dec(len(batch))
            for position, job in enumerate(self.queue):
                if job.on_progress:
                    job.on_progress("queued", {"position": position})
            return batch

    def _fitting(self, first: _Job) -> int:
        return sum(job.fits(first) for job in self.queue)

    async def _run(self, batch: list[_Job]) -> None:
        """Runs one batch; whatever goes wrong fails this batch's pages, not the loop."""
        started = time.perf_counter()
        batch_id = next(self.batch_ids)
        self.running = batch
        self.metrics.batch_size.observe(len(batch))
        self.metrics.running.set(len(batch))
        try:
            for job in batch:
                self.metrics.queue_wait.observe(started - job.enqueued_at)
                if job.on_progress:
                    job.on_progress("started", {"batchSize": len(batch)})
            outcomes = await self.run_batch([job.request for job in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"the engine answered {len(outcomes)} result(s) for a batch of {len(batch)} page(s)")
            elapsed = time.perf_counter() - started
            self.metrics.inference.observe(elapsed)
            for job, outcome in zip(batch, outcomes):
                if isinstance(outcome, BaseException):
                    _settle(job, exception=outcome)
                    continue
                self.metrics.generated_tokens.inc(outcome.generated_tokens)
                timings = Timings(round((started - job.enqueued_at) * 1000, 1), round(elapsed * 1000, 1), batch_id)
                _settle(job, result=(outcome, timings))
        except Exception as exc:
            if not isinstance(exc, ServiceError):
                # Without the traceback: each request that ends in it logs it once, with its request id.
                log.warning("a batch of %d page(s) failed: %s: %s", len(batch), type(exc).__name__, exc)
            for job in batch:
                _settle(job, exception=exc)
        finally:
            self.running = []
            self.metrics.running.set(0)

    def fail_all(self, error: ServiceError) -> None:
        """Refuses new pages and fails the waiting ones with `error`; running ones are told to stop."""
        self.closed = error
        for job in list(self.queue):
            del self.queue[job]
            self.metrics.queue_depth.dec()
            _settle(job, exception=error)
        for job in self.running:
            job.request.abandoned.set()
            _settle(job, exception=error)

    async def stop(self, grace_s: float, error: ServiceError) -> None:
        """Lets the queued and running pages finish for `grace_s`, then fails what is left with `error`."""
        pending = [job.future for job in (*self.queue, *self.running)]
        if pending:
            await asyncio.wait(pending, timeout=grace_s)
        self.fail_all(error)
        if self.task:
            self.task.cancel()


def _settle(job: _Job, result: tuple[PageResult, Timings] | None = None, exception: BaseException | None = None) -> None:
    """Answers a page unless its request went away (or it was answered already)."""
    if job.future.done():
        return
    if exception is not None:
        job.future.set_exception(exception)
    else:
        job.future.set_result(result)
