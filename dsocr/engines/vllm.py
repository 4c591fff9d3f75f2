"""Serving through vLLM: the service is the document front of one or many vLLM OpenAI-compatible servers.

Each page is one streamed chat completion with upstream's sampling, sent to the healthy server with the fewest
pages in flight; vLLM batches the pages itself (continuous batching), so the service never batches them. Servers
are probed every few seconds; a connection error or a 5xx before the first token retries the page once on
another server. Closing a stream (a client gone, a deadline passed) aborts the generation inside vLLM.
Nothing loads in this process and no torch is needed."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import httpx
from PIL import Image

from dsocr.catalogue import FAMILY_MODES, ModelFamily, strip_eos
from dsocr.errors import InvalidField, PayloadTooLarge, ServiceError, Unavailable
from dsocr.serving.metrics import Metrics
from dsocr.serving.workers import in_worker
from ocr_engine import Engine, EngineInfo, PageRequest, PageResult, ProgressCallback, Timings
from settings import Settings

log = logging.getLogger("deepseek_ocr.vllm")

# vLLM's DeepSeek-OCR processors fix the image sizes per server (module constants): gundam only.
SERVED_MODE = "gundam"
# Table cells legitimately repeat: the repetition guard never blocks these (looked up with /tokenize).
NEVER_BANNED_TOKENS = ("<td>", "</td>")
IMAGE_PLACEHOLDER = "<image>"
CONNECT_TIMEOUT_S = 10
RETRY_AFTER_S = 5
DISCOVERY_RETRY_S = 2


class UpstreamFailed(ServiceError):
    """A vLLM server failed a page (after the retry)."""

    status_code = 502
    reason = "upstream_error"


class _Retryable(Exception):
    """A failure before the first token: the page may go to another server."""


@dataclass(eq=False)
class Server:
    url: str
    healthy: bool = False
    inflight: int = 0

    @property
    def name(self) -> str:
        return self.url


@dataclass
class ServedModel:
    name: str
    family: ModelFamily
    never_banned_ids: list[int] = field(default_factory=list)


def family_of(model: dict[str, Any]) -> ModelFamily:
    """DeepSeek-OCR-2 when the served model's name or source says so, else the first DeepSeek-OCR."""
    text = f"{model.get('root') or ''} {model.get('id') or ''}".lower().replace("-", "").replace("_", "")
    return ModelFamily.v2 if "ocr2" in text else ModelFamily.v1


class VllmEngine(Engine):
    """Pages to vLLM servers. `info` is what /health and /api/modes say; `read` reads one page."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.servers = [Server(url) for url in settings.ocr_vllm_urls]
        headers = {"Authorization": f"Bearer {settings.ocr_vllm_api_key}"} if settings.ocr_vllm_api_key else {}
        # No read timeout: a page takes as long as it takes; the request's deadline cuts it off.
        self.client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
                                        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        self.model: ServedModel | None = None
        self.freed = asyncio.Condition()  # a slot was given back, or a server came back
        self.waiting = 0
        self.page_ids = itertools.count(1)
        self.tasks: list[asyncio.Task] = []
        self.on_health: Callable[[], None] = lambda: None

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def start(self, on_ready: Callable[["VllmEngine"], None], on_health: Callable[[], None]) -> None:
        """Finds the served model (retrying until a server answers), then probes the servers for good."""
        self.on_health = on_health
        self.tasks.append(asyncio.create_task(self._discover_then_probe(on_ready), name="vllm-probe"))

    @property
    def inflight(self) -> int:
        return sum(server.inflight for server in self.servers)

    async def drain(self, grace_s: float) -> None:
        """Waits up to `grace_s` for the pages in flight to finish."""
        async def idle() -> None:
            async with self.freed:
                await self.freed.wait_for(lambda: self.inflight == 0)

        try:
            await asyncio.wait_for(idle(), grace_s)
        except asyncio.TimeoutError:
            log.warning("%d page(s) still in flight on vLLM after the grace; closing their streams", self.inflight)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.client.aclose()

    async def _discover_then_probe(self, on_ready: Callable[["VllmEngine"], None]) -> None:
        while self.model is None:
            for server in self.servers:  # any server will do: they all serve the same model
                try:
                    self.model = await self._discover(server.url)
                    break
                except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                    log.warning("vLLM server %s cannot say what it serves yet (%s: %s)", server.url,
                                type(exc).__name__, exc)
            else:
                await asyncio.sleep(DISCOVERY_RETRY_S)
        modes = tuple(mode for mode in FAMILY_MODES[self.model.family] if mode.name == SERVED_MODE)
        self.info = EngineInfo(model=self.model.name, engine="vllm", family=self.model.family,
                               device=f"vllm ({len(self.servers)} server(s))", dtype="server's",
                               attn_implementation="server's", modes=modes)
        log.info("serving %s (%s) through %d vLLM server(s): %s", self.model.name, self.model.family.value,
                 len(self.servers), ", ".join(server.url for server in self.servers))
        await self._probe_all()
        on_ready(self)
        while True:
            await asyncio.sleep(self.settings.ocr_vllm_probe_interval_s)
            await self._probe_all()

    async def _discover(self, url: str) -> ServedModel:
        """The served model's name and family, and the ids of the tokens the repetition guard never blocks."""
        listed = (await self._get_json(f"{url}/v1/models"))["data"]
        wanted = self.settings.ocr_vllm_model
        model = next((m for m in listed if m["id"] == wanted), None) if wanted else listed[0]
        if model is None:
            raise ValueError(f"{url} does not serve {wanted!r} (it serves {', '.join(m['id'] for m in listed)})")
        ids = []
        for token in NEVER_BANNED_TOKENS:
            tokens = (await self._post_json(f"{url}/tokenize", {"model": model["id"], "prompt": token,
                                                                  "add_special_tokens": False}))["tokens"]
            if len(tokens) == 1:  # a tokenizer without the token splits it into pieces: nothing to protect
                ids.append(tokens[0])
        return ServedModel(model["id"], family_of(model), ids)

    async def _get_json(self, url: str) -> Any:
        response = await self.client.get(url, timeout=CONNECT_TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    async def _post_json(self, url: str, body: dict) -> Any:
        response = await self.client.post(url, json=body, timeout=CONNECT_TIMEOUT_S)
        response.raise_for_status()
        return response.json()

    async def _probe_all(self) -> None:
        await asyncio.gather(*(self._probe(server) for server in self.servers))

    async def _probe(self, server: Server) -> None:
        try:
            healthy = (await self.client.get(f"{server.url}/health", timeout=CONNECT_TIMEOUT_S)).status_code == 200
        except httpx.HTTPError:
            healthy = False
        self._mark(server, healthy)

    def _mark(self, server: Server, healthy: bool) -> None:
        if healthy != server.healthy:
            log.log(logging.INFO if healthy else logging.WARNING, "vLLM server %s is %s", server.url,
                    "healthy" if healthy else "unreachable or unhealthy")
        server.healthy = healthy
        self.metrics.vllm_healthy.labels(server.url).set(int(healthy))
        self.on_health()
        if healthy:
            asyncio.ensure_future(self._notify())

    async def _notify(self) -> None:
        async with self.freed:
            self.freed.notify_all()

    @property
    def healthy_servers(self) -> list[Server]:
        return [server for server in self.servers if server.healthy]

    def health_detail(self) -> str:
        return "no vLLM server is healthy: " + ", ".join(server.url for server in self.servers)

    # --- pages ---------------------------------------------------------------------------------------------------

    async def read(self, request: PageRequest, on_progress: ProgressCallback | None) -> tuple[PageResult, Timings]:
        """One page, streamed from the least busy healthy server; once more on another before its first token."""
        enqueued = time.perf_counter()
        image_url = await in_worker(_png_data_url, request.image)
        body = self._body(request, image_url)
        tried: set[Server] = set()
        while True:
            server = await self._acquire(tried, on_progress)
            queued = time.perf_counter() - enqueued
            if on_progress:
                on_progress("started", {"batchSize": 1})
            started = time.perf_counter()
            try:
                result = await self._complete(server, body, request)
            except _Retryable as exc:
                tried.add(server)
                self.metrics.vllm_requests.labels(server.url, "retried").inc()
                self._mark(server, False)
                if len(tried) > 1 or not self._others(tried):
                    raise UpstreamFailed(f"vLLM failed the page: {exc}") from None
                log.warning("vLLM server %s failed before the first token (%s); retrying on another", server.url, exc)
                continue
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

    def _others(self, tried: set[Server]) -> list[Server]:
        return [server for server in self.servers if server not in tried]

    def _body(self, request: PageRequest, image_url: str) -> dict:
        assert self.model is not None
        text = request.prompt.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
        body: dict[str, Any] = {
            "model": self.model.name,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": image_url}},
                {"type": "text", "text": text},
            ]}],
            "temperature": 0,
            "max_tokens": self.settings.ocr_max_new_tokens,
            "skip_special_tokens": False,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.settings.ocr_ngram_size and self.settings.ocr_ngram_window:
            body["vllm_xargs"] = {"ngram_size": self.settings.ocr_ngram_size,
                                  "window_size": self.settings.ocr_ngram_window,
                                  "whitelist_token_ids": self.model.never_banned_ids}
        return body

    async def _acquire(self, tried: set[Server], on_progress: ProgressCallback | None) -> Server:
        """The healthy server with the fewest pages in flight and a free slot; waits for one (that wait is the
        service's queue). With no healthy server at all: 503."""
        self.waiting += 1
        try:
            async with self.freed:
                while True:
                    candidates = [s for s in self.healthy_servers if s not in tried]
                    if not candidates:
                        raise Unavailable(self.health_detail(), headers={"Retry-After": str(RETRY_AFTER_S)})
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

    async def _complete(self, server: Server, body: dict, request: PageRequest) -> PageResult:
        """Streams one chat completion; closing the stream early (cancellation) aborts it inside vLLM."""
        pieces: list[str] = []
        finish_reason = None
        tokens = None
        started = time.perf_counter()
        try:
            async with self.client.stream("POST", f"{server.url}/v1/chat/completions", json=body) as response:
                if response.status_code >= 500:
                    raise _Retryable(f"{server.url} answered {response.status_code}: {await _error_text(response)}")
                if response.status_code >= 400:
                    raise _refusal(response.status_code, await _error_text(response))
                async for chunk in _chunks(response):
                    if "error" in chunk:
                        raise UpstreamFailed(f"vLLM failed the page: {_message(chunk['error'])}")
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") or ""
                        if text:
                            if not pieces:
                                self.metrics.time_to_first_token.observe(time.perf_counter() - started)
                            pieces.append(text)
                            if request.on_text:
                                request.on_text(text)
                        finish_reason = choice.get("finish_reason") or finish_reason
                    if chunk.get("usage"):
                        tokens = chunk["usage"].get("completion_tokens")
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            if pieces:
                raise UpstreamFailed(f"vLLM server {server.url} dropped the page mid-answer: {exc}") from None
            raise _Retryable(f"cannot reach {server.url}: {type(exc).__name__}") from None
        if finish_reason not in ("stop", "length"):
            raise UpstreamFailed(f"vLLM ended the page with finish_reason {finish_reason!r}")
        raw = strip_eos("".join(pieces))
        return PageResult(raw, finish_reason, tokens if tokens is not None else len(pieces))


async def _chunks(response: httpx.Response) -> AsyncIterator[dict]:
    """The JSON chunks of an OpenAI-style event stream, up to `data: [DONE]`."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        try:
            yield json.loads(data)
        except ValueError:
            raise UpstreamFailed(f"vLLM sent a chunk that is not JSON: {data[:200]!r}") from None


async def _error_text(response: httpx.Response) -> str:
    body = (await response.aread()).decode("utf-8", "replace")
    try:
        return _message(json.loads(body))
    except ValueError:
        return body[:500]


def _message(error: Any) -> str:
    """vLLM's error body: {"error": {"message": ...}}, {"message": ...} or {"detail": ...}."""
    if isinstance(error, dict):
        inner = error.get("error", error)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("detail") or inner)[:500]
        return str(inner)[:500]
    return str(error)[:500]


def _refusal(status: int, message: str) -> ServiceError:
    """A page vLLM refuses (e.g. longer than its --max-model-len) is the request's fault: 422 (413 when too big);
    refused credentials are the service's: 502."""
    if status in (401, 403):
        return UpstreamFailed(f"vLLM refused the service's credentials (DEEPSEEK_OCR_VLLM_API_KEY): {message}")
    if status == 413:
        return PayloadTooLarge(f"vLLM refused the page as too large: {message}")
    return InvalidField(f"vLLM refused the page: {message}")


def _png_data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
