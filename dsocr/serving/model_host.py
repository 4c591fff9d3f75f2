"""The model host: owns the loaded engine, the one thread that runs nothing but the model, and the scheduler
that feeds it (or, served through vLLM, the servers' client). It says whether the model is loading, ready,
draining or dead, and ends the process when the model cannot serve any more (a failed load, a dead scheduler, an
unusable device), so that it is restarted. Pages reach it through `submit`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
from typing import Any, Callable, Literal

from dsocr.catalogue import FAMILY_MODES, ModelFamily, vision_tokens
from dsocr.engines.loading import detect_family, fetch_config, load_engine
from dsocr.errors import Unavailable
from dsocr.serving.metrics import Metrics
from dsocr.serving.scheduler import BatchOutcome, BatchScheduler
from ocr_engine import Engine, OcrEngine, PageRequest, PageResult, ProgressCallback, Timings
from settings import EngineChoice, Settings

log = logging.getLogger("deepseek_ocr.model")

# Seconds a client is told to wait before retrying while the model loads, or while the service restarts.
LOADING_RETRY_AFTER_S = 10
RESTART_RETRY_AFTER_S = 30
Status = Literal["loading", "ready", "draining", "error"]


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


class EngineDead(Unavailable):
    """The model cannot serve any more; the process is restarting."""

    reason = "engine_dead"


class ModelHost:
    def __init__(self, settings: Settings, metrics: Metrics, on_fatal: Callable[[], None] = lambda: None) -> None:
        self.status: Status = "loading"
        self.detail = "The model is loading"
        self.engine: Engine | None = None
        self.family: ModelFamily | None = None  # known from config.json, before the weights load
        self.on_fatal = on_fatal  # called once, on the event loop, when the process must end
        self.vllm = None
        if settings.ocr_engine is EngineChoice.vllm:
            from dsocr.engines.vllm import VllmEngine  # httpx only: no torch, no transformers

            self.vllm = VllmEngine(settings, metrics)
        self.thread = ModelThread()
        self.scheduler = BatchScheduler(
            settings.ocr_max_batch_size, settings.ocr_batch_wait_ms / 1000, metrics, self._run_batch
        )
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def mode_names(self) -> list[str]:
        return [mode.name for mode in FAMILY_MODES[self.family]] if self.family else []

    def start(self, settings: Settings, source: str) -> None:
        """Starts the scheduler and loads the model on the model thread (or finds the vLLM servers' model)."""
        self._start_scheduler()
        if self.vllm is not None:
            self.vllm.start(on_ready=self._ready_remote, on_health=self._remote_health)
            return
        self.thread.submit(self._load, settings, source)

    async def submit(
        self, engine: Engine, request: PageRequest, on_progress: ProgressCallback | None = None
    ) -> tuple[PageResult, Timings]:
        """One page read: batched on the model thread, or sent to a vLLM server (which batches it itself)."""
        if self.vllm is not None:
            if self.status == "error":
                raise Unavailable(self.detail, headers={"Retry-After": str(LOADING_RETRY_AFTER_S)})
            return await self.vllm.read(request, on_progress)
        assert isinstance(engine, OcrEngine)
        return await self.scheduler.submit(engine, request, on_progress)

    def _ready_remote(self, engine: Engine) -> None:
        self.family = engine.info.family
        self._ready(engine)
        self._remote_health()

    def _remote_health(self) -> None:
        """Served through vLLM: ready while a server is healthy, 503 "error" (without exiting) while none is."""
        if self.vllm is None or self.engine is None or self.status == "draining":
            return
        if self.vllm.healthy_servers:
            self.status, self.detail = "ready", "ready"
        else:
            self.status, self.detail = "error", self.vllm.health_detail()

    def serve(self, engine: OcrEngine) -> None:
        """Starts the scheduler on an engine loaded already."""
        self._start_scheduler()
        self._ready(engine)

    def _start_scheduler(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.scheduler.start(on_death=self.fail)

    def _ready(self, engine: Engine) -> None:
        self.engine = engine
        self.detail = "ready"
        self.status = "ready"

    def _load(self, settings: Settings, source: str) -> None:
        log.info("loading %s", source)
        try:
            config = fetch_config(source)
            self.family = detect_family(config)
            modes = [mode.name for mode in FAMILY_MODES[self.family]]
            if settings.ocr_default_mode not in modes:  # refused before gigabytes of weights are read
                raise ValueError(
                    f"DEEPSEEK_OCR_DEFAULT_MODE={settings.ocr_default_mode!r} is not a mode of "
                    f"{self.family.value} ({', '.join(modes)})"
                )
            engine = load_engine(settings, source, config)
        except Exception as exc:
            self._call_on_loop(self.fail, f"Loading the model from {source} failed: {type(exc).__name__}: {exc}", exc)
            return
        self._call_on_loop(self._ready, engine)

    def _call_on_loop(self, function: Callable[..., None], *args: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(function, *args)

    def fail(self, detail: str, exc: BaseException | None = None) -> None:
        """The model cannot serve: /health turns 503 "error", waiting pages fail with 503, the process ends."""
        if self.status == "error":
            return
        log.error("%s", detail, exc_info=exc)  # logged once, with its cause
        self.status = "error"
        self.detail = f"{detail}; the process is exiting to be restarted"
        self.scheduler.fail_all(EngineDead(self.detail, headers={"Retry-After": str(RESTART_RETRY_AFTER_S)}))
        self.on_fatal()

    def begin_draining(self) -> None:
        """Told to stop: no new requests; what was admitted runs on."""
        if self.status == "ready":
            self.status = "draining"
            self.detail = "The service is shutting down"

    def ready_engine(self) -> Engine:
        if self.status == "ready" and self.engine is not None:
            return self.engine
        waits = LOADING_RETRY_AFTER_S if self.status == "loading" or self.vllm is not None else RESTART_RETRY_AFTER_S
        raise Unavailable(self.detail, headers={"Retry-After": str(waits)})

    async def stop(self, grace_s: float) -> None:
        """Gives the admitted work `grace_s` to finish, then fails what is left with 503 and stops generation."""
        self.begin_draining()
        if self.vllm is not None:
            await self.vllm.drain(grace_s)
            await self.vllm.stop()
        await self.scheduler.stop(grace_s, Unavailable("The service shut down before this page was read",
                                                       headers={"Retry-After": str(RESTART_RETRY_AFTER_S)}))
        self.thread.stop()

    async def _run_batch(self, engine: OcrEngine, requests: list[PageRequest]) -> list[BatchOutcome]:
        """Runs a batch on the model thread; a batch that fails (out of device memory included) is retried page
        by page, and a device that fails for good ends the process."""
        try:
            return await asyncio.wrap_future(self.thread.submit(_run_isolating_failures, engine, requests))
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
