"""The local host: a model in this process. It owns the loaded engine, the one thread that runs nothing but the
model, and the scheduler that gathers pages into batches for it. It ends the process when the model cannot serve
any more (a failed load, a dead scheduler, an unusable device), so that it is restarted."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
from typing import Any, Callable

from dsocr.catalogue import vision_tokens
from dsocr.engines.loading import detect_family, fetch_config, load_engine
from dsocr.errors import Unavailable
from dsocr.serving.metrics import Metrics
from dsocr.serving.scheduler import BatchOutcome, BatchScheduler
from dsocr.serving.submitter import LOADING_RETRY_AFTER_S, RESTART_RETRY_AFTER_S, EngineDead, PageSubmitter
from ocr_engine import OcrEngine, PageRequest, PageResult, ProgressCallback, Timings
from settings import Settings

log = logging.getLogger("deepseek_ocr.model")


class ModelThread:
    """One daemon thread that runs the callables given to it, one at a time, in order. A daemon, so that a
    process told to stop while a 7 GB checkpoint loads does not wait for the load."""

    def __init__(self, name: str = "model") -> None:
        self.jobs: queue.SimpleQueue[tuple[concurrent.futures.Future, Callable[..., Any], tuple] | None] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.jobs.put((future, function, args))
        return future

    def stop(self) -> None:
        self.jobs.put(None)

    def _work(self) -> None:
        while (job := self.jobs.get()) is not None:
            future, function, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = function(*args)
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)
            else:
                future.set_result(result)


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's device out-of-memory error; torch is looked up only if some engine imported it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def is_device_failure(exc: BaseException) -> bool:
    """An error after which the device cannot be trusted (CUDA's 'illegal memory access', a lost device): the
    process must be restarted. Out of memory is not one of them."""
    torch = sys.modules.get("torch")
    if torch is None or is_out_of_memory(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and "CUDA error" in str(exc)


def _free_device_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class LocalHost(PageSubmitter):
    """Pages batched on the model thread: the scheduler gathers them, one batch of one mode at a time."""

    def __init__(self, settings: Settings, metrics: Metrics, on_fatal: Callable[[], None] = lambda: None) -> None:
        super().__init__(settings, metrics, on_fatal)
        self.engine: OcrEngine | None = None
        self.thread = ModelThread()
        self.scheduler = BatchScheduler(self._batch_limit, settings.ocr_batch_wait_ms / 1000, metrics, self._run_batch)

    def start(self, source: str) -> None:
        """Starts the scheduler and loads the model on the model thread."""
        self._start_scheduler()
        self.thread.submit(self._load, source)

    def serve(self, engine: OcrEngine) -> None:
        """Starts the scheduler on an engine loaded already."""
        self._start_scheduler()
        self._loaded(engine)

    def count_tokens(self, text: str) -> int | None:
        return self.engine.count_tokens(text) if self.engine is not None else None

    async def _submit(
        self, request: PageRequest, on_progress: ProgressCallback | None
    ) -> tuple[PageResult, Timings]:
        return await self.scheduler.submit(request, on_progress)

    def _start_scheduler(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.scheduler.start(on_death=self.fail)

    def _loaded(self, engine: OcrEngine) -> None:
        self.engine = engine
        self._ready(engine.info)

    def _batch_limit(self) -> int:
        """The most pages of a batch: DEEPSEEK_OCR_MAX_BATCH_SIZE, or fewer where the engine takes fewer."""
        assert self.engine is not None
        configured = self.settings.ocr_max_batch_size
        return min(configured, self.engine.max_batch_size or configured)

    def _load(self, source: str) -> None:
        log.info("loading %s", source)
        try:
            config = fetch_config(source)
            self.family = detect_family(config)
            self._check_default_mode(self.family)
            engine = load_engine(self.settings, source, config)
        except Exception as exc:
            self._call_on_loop(self.fail, f"Loading the model from {source} failed: {type(exc).__name__}: {exc}", exc)
            return
        self._call_on_loop(self._loaded, engine)

    def _fail_waiting(self, error: EngineDead) -> None:
        self.scheduler.fail_all(error)

    async def stop(self, grace_s: float) -> None:
        self.begin_draining()
        await self.scheduler.stop(grace_s, Unavailable("The service shut down before this page was read",
                                                       headers={"Retry-After": str(RESTART_RETRY_AFTER_S)}))
        self.thread.stop()

    async def _run_batch(self, requests: list[PageRequest]) -> list[BatchOutcome]:
        """Runs a batch on the model thread; a batch that fails (out of device memory included) is retried page
        by page, and a device that fails for good ends the process."""
        assert self.engine is not None
        try:
            return await asyncio.wrap_future(self.thread.submit(_run_isolating_failures, self.engine, requests))
        except Exception as exc:
            if is_device_failure(exc):
                self.fail(f"The device failed: {type(exc).__name__}: {exc}", exc)
                raise EngineDead(self.detail, headers={"Retry-After": str(RESTART_RETRY_AFTER_S)}) from None
            raise


def _run_isolating_failures(engine: OcrEngine, requests: list[PageRequest]) -> list[BatchOutcome]:
    """Runs a batch; if it fails, runs its pages one by one so that one page's failure (an image the processor
    cannot take, a page too big for the device) is that page's alone. A device failure is not retried."""
    try:
        return list(engine.read_batch(requests))
    except Exception as exc:
        if len(requests) == 1 or is_device_failure(exc):
            raise
        log.warning("a batch of %d page(s) failed (%s: %s); running its pages one by one", len(requests),
                    type(exc).__name__, exc)
    outcomes: list[BatchOutcome] = []
    for request in requests:
        _free_device_memory()
        try:
            outcomes.extend(engine.read_batch([request]))
        except Exception as exc:
            if is_device_failure(exc):
                raise
            outcomes.append(_out_of_memory(request) if is_out_of_memory(exc) else exc)
    _free_device_memory()
    return outcomes


def _out_of_memory(request: PageRequest) -> Unavailable:
    tokens = vision_tokens(request.mode, request.image.width, request.image.height)
    return Unavailable(
        f"Out of device memory reading one page in mode {request.mode.name!r} ({tokens} vision tokens, "
        f"{request.image.width}x{request.image.height} px): try a smaller mode, or retry when the service is less "
        "busy",
        headers={"Retry-After": str(LOADING_RETRY_AFTER_S)},
        reason="out_of_memory",
    )
