"""The vLLM pool: the service as the document front of one or many vLLM OpenAI-compatible servers.

Each page goes to the healthy server with the fewest pages in flight (at most DEEPSEEK_OCR_VLLM_MAX_INFLIGHT
each; the wait for a free slot is the service's queue); vLLM batches the pages itself (continuous batching), so
the service never batches them. Servers are probed every few seconds: the pool is ready while one is healthy.
A connection error, a reset, a 5xx or no answer within DEEPSEEK_OCR_VLLM_FIRST_BYTE_TIMEOUT_S before the first token
marks the server unhealthy (until its probe says otherwise) and retries the page once on another server. A server
whose /v1/models or /tokenize answers wrongly is asked again until it answers well. Past the shutdown grace, pages
still in flight or waiting for a slot fail with 503 and Retry-After. Talking to one server is dsocr.engines.vllm's;
nothing loads in this process and no torch is needed."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import httpx

from dsocr.engines.vllm import (
    Retryable,
    ServedModel,
    TemplateRefused,
    UpstreamFailed,
    chat_body,
    complete,
    discover,
    image_url,
    is_healthy,
    new_client,
    plain_template_for,
    served_info,
)
from dsocr.errors import Unavailable
from dsocr.serving.metrics import Metrics
from dsocr.serving.submitter import LOADING_RETRY_AFTER_S, RESTART_RETRY_AFTER_S, PageSubmitter
from dsocr.serving.workers import in_worker
from ocr_engine import PageRequest, PageResult, ProgressCallback, Timings
from settings import Settings

log = logging.getLogger("deepseek_ocr.vllm")

RETRY_AFTER_S = 5
DISCOVERY_RETRY_S = 2
# Past the grace, how long the pages still in flight get to close their streams before the client is closed.
UNWIND_S = 5


@dataclass(eq=False)
class Server:
    url: str
    healthy: bool = False
    inflight: int = 0
    prompt_checked: bool = False  # how it renders a page's prompt was asked (dsocr.engines.vllm.plain_template_for)
    chat_template: str | None = None  # sent with each page: the server would wrap the prompt in role markers


class VllmPool(PageSubmitter):
    through_vllm = True
    # Without a healthy server the pool waits for one to come back; the process is not restarted.
    not_ready_retry_after_s = LOADING_RETRY_AFTER_S

    def __init__(self, settings: Settings, metrics: Metrics, on_fatal: Callable[[], None] = lambda: None) -> None:
        super().__init__(settings, metrics, on_fatal)
        self.servers = [Server(url) for url in settings.ocr_vllm_urls]
        self.client = new_client(settings.ocr_vllm_api_key)
        self.model: ServedModel | None = None
        self.freed = asyncio.Condition()  # a slot was given back, or a server came back
        self.waiting = 0
        self.page_ids = itertools.count(1)
        self.tasks: list[asyncio.Task] = []
        self.stopped = asyncio.Event()  # the grace is over: pages in flight or waiting fail with 503

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self, source: str = "") -> None:
        """Finds the served model (retrying until a server answers), then probes the servers for good."""
        self.loop = asyncio.get_running_loop()
        self.tasks.append(asyncio.create_task(self._discover_then_probe(), name="vllm-probe"))

    async def stop(self, grace_s: float) -> None:
        self.begin_draining()
        await self._drain(grace_s)
        self.stopped.set()  # what is still in flight or waiting for a slot fails with 503
        await self._notify()
        if not await self._idle(UNWIND_S):
            log.warning("%d page(s) did not close their vLLM streams in %g s", self.inflight, UNWIND_S)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    @property
    def inflight(self) -> int:
        return sum(server.inflight for server in self.servers)

    async def _drain(self, grace_s: float) -> None:
        """Waits up to `grace_s` for the pages in flight to finish."""
        if not await self._idle(grace_s):
            log.warning("%d page(s) still in flight on vLLM after the grace; closing their streams", self.inflight)

    async def _idle(self, timeout_s: float) -> bool:
        """Whether no page is in flight, waiting up to `timeout_s` for it."""
        async def idle() -> None:
            async with self.freed:
                await self.freed.wait_for(lambda: self.inflight == 0)

        try:
            await asyncio.wait_for(idle(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def _shut_down(self) -> Unavailable:
        return Unavailable("The service shut down before this page was read",
                           headers={"Retry-After": str(RESTART_RETRY_AFTER_S)})

    async def _discover_then_probe(self) -> None:
        while self.model is None:
            for server in self.servers:  # any server will do: they all serve the same model
                try:
                    self.model = await discover(self.client, server.url, self.settings.ocr_vllm_model)
                    break
                except Exception as exc:  # whatever a server answers, the pool asks again: it may be fixed
                    log.warning("vLLM server %s cannot say what it serves yet (%s: %s)", server.url,
                                type(exc).__name__, exc)
            else:
                await asyncio.sleep(DISCOVERY_RETRY_S)
        self.family = self.model.family
        try:
            self._check_default_mode(self.model.family)
        except ValueError as exc:
            self.fail(str(exc))
            return
        log.info("serving %s (%s) through %d vLLM server(s): %s", self.model.name, self.model.family.value,
                 len(self.servers), ", ".join(server.url for server in self.servers))
        await self._probe_all()
        self._ready(served_info(self.model, len(self.servers)))
        self._follow_health()
        while True:
            await asyncio.sleep(self.settings.ocr_vllm_probe_interval_s)
            await self._probe_all()

    # --- health --------------------------------------------------------------------------------------------------

    async def _probe_all(self) -> None:
        async def probe(server: Server) -> None:
            healthy = await is_healthy(self.client, server.url)
            if healthy and not server.prompt_checked:
                healthy = await self._check_prompt(server)
            self._mark(server, healthy)

        await asyncio.gather(*(probe(server) for server in self.servers))

    async def _check_prompt(self, server: Server) -> bool:
        """Asks a server, the first time it is healthy, how it renders a page's prompt, and says so once when that is
        not upstream's plain `<image>\n<prompt>`. False while it cannot be asked (it is not used until then)."""
        assert self.model is not None
        try:
            server.chat_template = await plain_template_for(self.client, server.url, self.model.name)
        except TemplateRefused as exc:
            log.warning("vLLM server %s wraps the page's prompt in chat role markers the model was not trained with, "
                        "and refuses a plain template sent with each page (%s): start it with --chat-template naming "
                        "a template that renders the message's content alone, or with --trust-request-chat-template",
                        server.url, exc)
        except ValueError as exc:
            log.warning("vLLM server %s cannot say how it renders a page's prompt (%s): pages go as it renders them",
                        server.url, exc)
        except httpx.HTTPError:
            return False
        else:
            if server.chat_template:
                log.info("vLLM server %s wraps the page's prompt in chat role markers (its chat template for the "
                         "checkpoint's model_type); each page is sent with a plain chat template instead, so that the "
                         "model reads upstream's <image>\n<prompt>", server.url)
        server.prompt_checked = True
        return True

    def _mark(self, server: Server, healthy: bool) -> None:
        if healthy != server.healthy:
            log.log(logging.INFO if healthy else logging.WARNING, "vLLM server %s is %s", server.url,
                    "healthy" if healthy else "unreachable or unhealthy")
        server.healthy = healthy
        self.metrics.vllm_healthy.labels(server.url).set(int(healthy))
        self._follow_health()
        if healthy:
            asyncio.ensure_future(self._notify())

    def _follow_health(self) -> None:
        """Ready while a server is healthy, 503 "error" (without exiting) while none is."""
        if self.info is None or self.status == "draining":
            return
        if self.healthy_servers:
            self.status, self.detail = "ready", "ready"
        else:
            self.status, self.detail = "error", self._health_detail()

    async def _notify(self) -> None:
        async with self.freed:
            self.freed.notify_all()

    @property
    def healthy_servers(self) -> list[Server]:
        return [server for server in self.servers if server.healthy]

    def _health_detail(self) -> str:
        return "no vLLM server is healthy: " + ", ".join(server.url for server in self.servers)

    # --- pages ---------------------------------------------------------------------------------------------------

    async def _submit(
        self, request: PageRequest, on_progress: ProgressCallback | None
    ) -> tuple[PageResult, Timings]:
        """One page, streamed from the least busy healthy server; once more on another before its first token."""
        if self.status == "error":
            raise Unavailable(self.detail, headers={"Retry-After": str(LOADING_RETRY_AFTER_S)})
        assert self.model is not None
        enqueued = time.perf_counter()
        url = await in_worker(image_url, request)  # base64 of a page's file: milliseconds, better off the loop
        body = chat_body(self.model, request, url, self.settings)
        tried: set[Server] = set()
        while True:
            server = await self._acquire(tried, on_progress)
            queued = time.perf_counter() - enqueued
            if on_progress:
                on_progress("started", {"batchSize": 1})
            started = time.perf_counter()

            def first_token() -> None:
                self.metrics.time_to_first_token.observe(time.perf_counter() - started)

            sent = {**body, "chat_template": server.chat_template} if server.chat_template else body
            try:
                result = await self._unless_stopped(complete(
                    self.client, server.url, sent, request.on_text, request.abandoned, first_token,
                    self.settings.ocr_vllm_first_byte_timeout_s))
            except Retryable as exc:
                tried.add(server)
                self.metrics.vllm_requests.labels(server.url, exc.outcome).inc()
                self._mark(server, False)
                if len(tried) > 1 or not self._others(tried):
                    raise UpstreamFailed(f"vLLM failed the page: {exc}") from None
                log.warning("vLLM server %s failed before the first token (%s); retrying on another", server.url, exc)
                continue
            except UpstreamFailed as exc:  # the server's fault: counted against it
                self.metrics.vllm_requests.labels(server.url, exc.outcome).inc()
                log.warning("vLLM server %s failed a page: %s", server.url, exc.detail)
                raise
            except BaseException:
                self.metrics.vllm_requests.labels(server.url, "failed").inc()
                raise
            finally:
                self._release(server)
            self.metrics.vllm_requests.labels(server.url, "ok").inc()
            elapsed = time.perf_counter() - started
            self.metrics.queue_wait.observe(queued)
            self.metrics.inference.observe(elapsed)
            self.metrics.generated_tokens.inc(result.generated_tokens)
            return result, Timings(round(queued * 1000, 1), round(elapsed * 1000, 1), next(self.page_ids))

    async def _unless_stopped(self, page: Awaitable[PageResult]) -> PageResult:
        """The page's result, unless the grace ends first: then its stream is closed (aborting the generation in
        vLLM) and the page fails with 503 and Retry-After."""
        work = asyncio.ensure_future(page)
        stopped = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the caller was cancelled (its client left, its deadline passed)
            work.cancel()
            raise
        finally:
            stopped.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)  # its stream closes, aborting the generation in vLLM
        raise self._shut_down()

    def _others(self, tried: set[Server]) -> list[Server]:
        return [server for server in self.servers if server not in tried]

    async def _acquire(self, tried: set[Server], on_progress: ProgressCallback | None) -> Server:
        """The healthy server with the fewest pages in flight and a free slot; waits for one (that wait is the
        service's queue). With no healthy server at all: 503."""
        self.waiting += 1
        try:
            async with self.freed:
                while True:
                    if self.stopped.is_set():
                        raise self._shut_down()
                    candidates = [s for s in self.healthy_servers if s not in tried]
                    if not candidates:
                        raise Unavailable(self._health_detail(), headers={"Retry-After": str(RETRY_AFTER_S)})
                    free = [s for s in candidates if s.inflight < self.settings.ocr_vllm_max_inflight]
                    if free:
                        server = min(free, key=lambda s: s.inflight)
                        server.inflight += 1
                        self.metrics.vllm_inflight.labels(server.url).set(server.inflight)
                        return server
                    if on_progress:
                        on_progress("queued", {"position": self.waiting - 1})
                    await self.freed.wait()
        finally:
            self.waiting -= 1

    def _release(self, server: Server) -> None:
        server.inflight -= 1
        self.metrics.vllm_inflight.labels(server.url).set(server.inflight)
        asyncio.ensure_future(self._notify())
