"""The one way a page reaches a model: `PageSubmitter`, implemented by the local host (a model in this process,
dsocr.serving.local_host) and by the vLLM pool (vLLM servers, dsocr.serving.vllm_pool). Whoever reads a page, an
HTTP request or a background worker, hands it a `PageRequest` and waits for its result; cancelling that wait
stops the page's generation. It also says whether the model is loading, ready, draining or unable to serve, and
which modes it reads."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable, Literal

from dsocr.catalogue import Mode, ModelFamily, served_modes
from dsocr.errors import Unavailable
from dsocr.serving.metrics import Metrics
from dsocr.serving.retries import read_until_clean
from ocr_engine import EngineInfo, PageRequest, PageResult, ProgressCallback, Timings
from settings import Settings

log = logging.getLogger("deepseek_ocr.model")

# Seconds a client is told to wait before retrying while the model loads, or while the service restarts.
LOADING_RETRY_AFTER_S = 10
RESTART_RETRY_AFTER_S = 30
Status = Literal["loading", "ready", "draining", "error"]


class EngineDead(Unavailable):
    """The model cannot serve any more; the process is restarting."""

    reason = "engine_dead"


class PageSubmitter(ABC):
    """Where pages are read. `submit` reads one; `status` and `detail` say whether it can (what /health shows);
    `info` is the ready model's, which `ready_info` gives or refuses with 503 and a Retry-After."""

    through_vllm = False  # which modes the family's model reads here (catalogue.served_modes)
    # Retry-After of a refusal while the submitter is draining or unable to serve.
    not_ready_retry_after_s = RESTART_RETRY_AFTER_S

    def __init__(self, settings: Settings, metrics: Metrics, on_fatal: Callable[[], None] = lambda: None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.status: Status = "loading"
        self.detail = "The model is loading"
        self.info: EngineInfo | None = None  # the ready model's; kept while it drains
        self.family: ModelFamily | None = None  # known before the model is ready (from its config.json)
        self.on_fatal = on_fatal  # called once, on the event loop, when the process must end
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- what it says of itself ------------------------------------------------------------------------------------

    @property
    def modes(self) -> tuple[Mode, ...]:
        """The modes pages can be read in: the ready model's, else its family's as far as it is known."""
        if self.info is not None:
            return self.info.modes
        return served_modes(self.family, self.through_vllm) if self.family else ()

    @property
    def model_name(self) -> str:
        """The model's name as answers give it ("" until it is known)."""
        return self.info.model if self.info is not None else ""

    def ready_info(self) -> EngineInfo:
        """The ready model's info, or 503 with a Retry-After while it loads, drains or cannot serve."""
        if self.status == "ready" and self.info is not None:
            return self.info
        waits = LOADING_RETRY_AFTER_S if self.status == "loading" else self.not_ready_retry_after_s
        raise Unavailable(self.detail, headers={"Retry-After": str(waits)})

    def count_tokens(self, text: str) -> int | None:
        """How many tokens `text` is for the model's tokenizer; None when it cannot tell here (a remote server,
        which enforces its own limits). Called from worker threads."""
        return None

    # --- reading pages -----------------------------------------------------------------------------------------

    async def submit(
        self, request: PageRequest, on_progress: ProgressCallback | None = None
    ) -> tuple[PageResult, Timings]:
        """Reads one page, again if it loops (dsocr.serving.retries); `on_progress` hears ("queued", {"position"}),
        ("started", {"batchSize"}) and, for a page read again, ("retry", ...) and ("replace", ...). Cancelling the
        wait (or setting `request.abandoned`) stops its generation. While the model loads: 503. Pages of work
        admitted before a drain are still read while it drains."""
        if self.status == "loading":
            raise Unavailable(self.detail, headers={"Retry-After": str(LOADING_RETRY_AFTER_S)})
        # The demo's random text always runs to the token cap: reading it again would only triple the wait.
        demo = self.info is not None and self.info.demo
        retries = 0 if demo else self.settings.ocr_page_retries
        return await read_until_clean(lambda attempt: self._submit(attempt, on_progress), request, on_progress,
                                      retries, self.settings.ocr_retry_temperatures, self.metrics)

    @abstractmethod
    async def _submit(
        self, request: PageRequest, on_progress: ProgressCallback | None
    ) -> tuple[PageResult, Timings]: ...

    # --- lifecycle ---------------------------------------------------------------------------------------------

    @abstractmethod
    def start(self, source: str) -> None:
        """Starts loading (or finding) the model, on the running event loop; `source` is the checkpoint to load
        in this process ("" when none is)."""

    @abstractmethod
    async def stop(self, grace_s: float) -> None:
        """Gives the admitted work `grace_s` to finish, then fails what is left with 503 and stops generation."""

    def begin_draining(self) -> None:
        """Told to stop: no new requests; what was admitted runs on."""
        if self.status == "ready":
            self.status = "draining"
            self.detail = "The service is shutting down"

    def fail(self, detail: str, exc: BaseException | None = None) -> None:
        """The model cannot serve: /health turns 503 "error", waiting pages fail with 503, the process ends."""
        if self.status == "error":
            return
        log.error("%s", detail, exc_info=exc)  # logged once, with its cause
        self.status = "error"
        self.detail = f"{detail}; the process is exiting to be restarted"
        self._fail_waiting(EngineDead(self.detail, headers={"Retry-After": str(RESTART_RETRY_AFTER_S)}))
        self.on_fatal()

    def _fail_waiting(self, error: EngineDead) -> None:
        """Fails the pages waiting for the model (none wait here by default)."""

    def _ready(self, info: EngineInfo) -> None:
        self.info = info
        self.family = info.family
        self.status = "ready"
        self.detail = "ready"

    def _check_default_mode(self, family: ModelFamily) -> None:
        """DEEPSEEK_OCR_DEFAULT_MODE against the modes this model is read in: the one check of it, made as soon as
        the family is known (before gigabytes of weights are read)."""
        names = [mode.name for mode in served_modes(family, self.through_vllm)]
        if self.settings.ocr_default_mode not in names:
            where = " through vLLM" if self.through_vllm else ""
            raise ValueError(
                f"DEEPSEEK_OCR_DEFAULT_MODE={self.settings.ocr_default_mode!r} is not a mode of "
                f"{family.value}{where} ({', '.join(names)})"
            )

    def _call_on_loop(self, function: Callable[..., None], *args: Any) -> None:
        """Runs `function(*args)` on the event loop, from another thread."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(function, *args)
