"""Talking to one vLLM OpenAI-compatible server: what it serves, whether it answers its health probe, and one page
as one streamed chat completion with upstream's sampling (its body, its stream, its errors). Choosing the server,
probing them all and retrying a page elsewhere is the vLLM pool's (dsocr.serving.vllm_pool). Closing a stream
early (a client gone, a deadline passed) aborts the generation inside vLLM. A server's misbehaviour is its own
fault, never the client's: no first byte in time, a reset, chunks that are not vLLM's, or a stream longer than the
page's max_tokens allows are 502s that name the server (or, before the first token, a retry elsewhere); what a page
may receive is bounded, so a broken server cannot make the service buffer without end. No torch is needed."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import httpx
from pydantic import BaseModel, ValidationError

from dsocr.catalogue import ModelFamily, served_modes, strip_eos
from dsocr.errors import InvalidField, PayloadTooLarge, ServiceError
from ocr_engine import EncodedImage, EngineInfo, PageRequest, PageResult
from settings import Settings

# Table cells legitimately repeat: the repetition guard never blocks these (looked up with /tokenize).
NEVER_BANNED_TOKENS = ("<td>", "</td>")
IMAGE_PLACEHOLDER = "<image>"
CONNECT_TIMEOUT_S = 10
# Upstream feeds DeepSeek-OCR BOS and then `<image>\n<prompt>`, no role markers. vLLM renders chat messages with the
# template of the checkpoint's model_type: DeepSeek-OCR's config.json says deepseek_vl_v2, and vLLM releases without
# the OCR template fix render it as DeepSeek-VL2 does, `<|User|>: ... <|Assistant|>:`. Sent with each page to such a
# server, this template renders the message's content alone (vLLM turns the image part into `<image>`, then a line
# break, then the text).
PLAIN_CHAT_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
TEMPLATE_PROBE_TEXT = "Free OCR."
# What one page's stream may carry, from the max_tokens it asked for: vLLM sends one chunk of a few hundred bytes
# per token (sometimes an empty one between), and a role, a finish and a usage chunk. Past either bound the
# stream is closed: a server that streams without end costs a bounded amount of memory.
STREAM_BYTES_PER_TOKEN = 4096
STREAM_CHUNKS_PER_TOKEN = 2
STREAM_EXTRA_BYTES = 64 * 1024
STREAM_EXTRA_CHUNKS = 16


class UpstreamFailed(ServiceError):
    """A vLLM server failed a page (after the retry)."""

    status_code = 502
    reason = "upstream_error"
    outcome = "failed"  # the `outcome` label of deepseek_ocr_vllm_requests_total


class UpstreamMalformed(UpstreamFailed):
    """A vLLM server sent something that is not an OpenAI chat completion stream, or dropped it mid-answer."""

    reason = "upstream_malformed"
    outcome = "malformed"


class UpstreamOverlong(UpstreamFailed):
    """A vLLM server streamed more than the page's max_tokens can be."""

    reason = "upstream_overlong"
    outcome = "overlong"


class Retryable(Exception):
    """A failure before the first token: the page may go to another server."""

    def __init__(self, message: str, outcome: str = "retried") -> None:
        super().__init__(message)
        self.outcome = outcome  # the `outcome` label of deepseek_ocr_vllm_requests_total


@dataclass
class ServedModel:
    name: str
    family: ModelFamily
    never_banned_ids: list[int] = field(default_factory=list)


def family_of(model: dict[str, Any]) -> ModelFamily:
    """DeepSeek-OCR-2 when the served model's name or source says so, else the first DeepSeek-OCR."""
    text = f"{model.get('root') or ''} {model.get('id') or ''}".lower().replace("-", "").replace("_", "")
    return ModelFamily.v2 if "ocr2" in text else ModelFamily.v1


def served_info(model: ServedModel, servers: int) -> EngineInfo:
    """What /health and /api/modes say of a model served by `servers` vLLM servers."""
    return EngineInfo(model=model.name, engine="vllm", family=model.family, device=f"vllm ({servers} server(s))",
                      dtype="server's", attn_implementation="server's", modes=served_modes(model.family, True))


def new_client(api_key: str | None) -> httpx.AsyncClient:
    """One client for every server: no read timeout (a page takes as long as it takes; the request's deadline cuts
    it off), connections kept for the next pages."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))


class _Model(BaseModel):
    id: str
    root: str | None = None


class _ModelList(BaseModel):
    data: list[_Model]


class _Tokens(BaseModel):
    tokens: list[int]


async def discover(client: httpx.AsyncClient, url: str, wanted: str | None) -> ServedModel:
    """The served model's name and family, and the ids of the tokens the repetition guard never blocks. An answer
    that is not vLLM's shape raises ValueError naming the endpoint (the caller asks again later)."""
    listed = _shaped(_ModelList, await _get_json(client, f"{url}/v1/models"), f"{url}/v1/models").data
    if not listed:
        raise ValueError(f"{url}/v1/models lists no model")
    model = next((m for m in listed if m.id == wanted), None) if wanted else listed[0]
    if model is None:
        raise ValueError(f"{url} does not serve {wanted!r} (it serves {', '.join(m.id for m in listed)})")
    ids = []
    for token in NEVER_BANNED_TOKENS:
        answer = await _post_json(client, f"{url}/tokenize", {"model": model.id, "prompt": token,
                                                               "add_special_tokens": False})
        tokens = _shaped(_Tokens, answer, f"{url}/tokenize").tokens
        if len(tokens) == 1:  # a tokenizer without the token splits it into pieces: nothing to protect
            ids.append(tokens[0])
    return ServedModel(model.id, family_of(model.model_dump()), ids)


def _shaped(shape: type[BaseModel], answer: Any, where: str) -> Any:
    try:
        return shape.model_validate(answer)
    except ValidationError as exc:
        raise ValueError(f"{where} answered something that is not vLLM's shape ({_first_problem(exc)})") from None


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(part) for part in error['loc']) or 'the answer'}: {error['msg']}"


class TemplateRefused(Exception):
    """The server renders role markers around the prompt and refuses a chat template sent with a request."""


async def plain_template_for(client: httpx.AsyncClient, url: str, model: str) -> str | None:
    """The chat template each page must carry for the server at `url` to render upstream's plain prompt, asked of its
    /tokenize: None when it renders a user message as BOS + `<image>\n<prompt>` already (a vLLM whose template for
    the checkpoint's model_type is DeepSeek-OCR's), else PLAIN_CHAT_TEMPLATE once the server was seen to render
    that one plainly. Raises TemplateRefused when the server will not take a template from a request (vLLM without
    --trust-request-chat-template), ValueError when it cannot tell, httpx.HTTPError when it cannot be reached."""
    prompt = f"{IMAGE_PLACEHOLDER}\n{TEMPLATE_PROBE_TEXT}"
    plain = {tuple(await _tokens(client, url, {"model": model, "prompt": prompt, "add_special_tokens": special}))
             for special in (True, False)}
    chat = {"model": model, "messages": [{"role": "user", "content": prompt}], "add_generation_prompt": True,
            "add_special_tokens": False}
    if tuple(await _tokens(client, url, chat)) in plain:
        return None
    try:
        rendered = await _tokens(client, url, {**chat, "chat_template": PLAIN_CHAT_TEMPLATE})
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 400:
            raise TemplateRefused(_message_of(exc.response)) from None
        raise
    if tuple(rendered) not in plain:
        raise ValueError("its /tokenize renders even a plain chat template with more than the prompt")
    return PLAIN_CHAT_TEMPLATE


async def _tokens(client: httpx.AsyncClient, url: str, body: dict) -> list[int]:
    return _shaped(_Tokens, await _post_json(client, f"{url}/tokenize", body), f"{url}/tokenize").tokens


def _message_of(response: httpx.Response) -> str:
    try:
        return _message(response.json())
    except ValueError:
        return response.text[:500]


async def is_healthy(client: httpx.AsyncClient, url: str) -> bool:
    """Whether the server answers its health probe with 200."""
    try:
        return (await client.get(f"{url}/health", timeout=CONNECT_TIMEOUT_S)).status_code == 200
    except httpx.HTTPError:
        return False


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    response = await client.get(url, timeout=CONNECT_TIMEOUT_S)
    response.raise_for_status()
    return response.json()


async def _post_json(client: httpx.AsyncClient, url: str, body: dict) -> Any:
    response = await client.post(url, json=body, timeout=CONNECT_TIMEOUT_S)
    response.raise_for_status()
    return response.json()


def chat_body(model: ServedModel, request: PageRequest, image_url: str, settings: Settings) -> dict:
    """One page as a streamed chat completion: the image, the prompt without its placeholder, upstream's greedy
    decoding (or sampling at the request's temperature, for a page read again after it looped) and its n-gram
    repetition guard (vLLM's per-request logits processor)."""
    text = request.prompt.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
    body: dict[str, Any] = {
        "model": model.name,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": text},
        ]}],
        "temperature": 0 if request.temperature is None else request.temperature,
        "max_tokens": settings.ocr_max_new_tokens,
        "skip_special_tokens": False,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if settings.ocr_ngram_size and settings.ocr_ngram_window:
        body["vllm_xargs"] = {"ngram_size": settings.ocr_ngram_size,
                              "window_size": settings.ocr_ngram_window,
                              "whitelist_token_ids": model.never_banned_ids}
    return body


class _Delta(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    delta: _Delta | None = None
    finish_reason: str | None = None


class _Usage(BaseModel):
    completion_tokens: int | None = None


class _Chunk(BaseModel):
    """One chunk of a streamed chat completion, as far as the service reads it (other fields are ignored)."""

    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


async def complete(
    client: httpx.AsyncClient, url: str, body: dict, on_text: Callable[[str], None] | None,
    abandoned: threading.Event | None = None, on_first_token: Callable[[], None] = lambda: None,
    first_byte_timeout_s: float | None = None,
) -> PageResult:
    """Streams one chat completion from the server at `url`; `on_text` hears the text piece by piece. Once
    `abandoned` is set (nobody waits for the answer any more) the stream is closed, which aborts the generation
    in vLLM, and the text so far is the answer, cut short ("length"). Raises Retryable for a failure before the
    first token (the page may go elsewhere): a 5xx, a connection refused or reset, or no answer's head within
    `first_byte_timeout_s`."""
    pieces: list[str] = []
    finish_reason = None
    tokens = None
    try:
        response = await _send(client, client.build_request("POST", f"{url}/v1/chat/completions", json=body),
                               first_byte_timeout_s)
        try:
            if response.status_code >= 500:
                raise Retryable(f"{url} answered {response.status_code}: {await _error_text(response)}")
            if response.status_code >= 400:
                raise _refusal(response.status_code, await _error_text(response))
            async for chunk in _chunks(response, url, body.get("max_tokens")):
                if abandoned is not None and abandoned.is_set():
                    finish_reason = "length"
                    break
                if chunk.error is not None:
                    raise UpstreamFailed(f"vLLM failed the page: {_message(chunk.error)}")
                for choice in chunk.choices or []:
                    text = (choice.delta.content if choice.delta else None) or ""
                    if text:
                        if not pieces:
                            on_first_token()
                        pieces.append(text)
                        if on_text:
                            on_text(text)
                    finish_reason = choice.finish_reason or finish_reason
                if chunk.usage:
                    tokens = chunk.usage.completion_tokens
        finally:
            await response.aclose()  # before the end: aborts the generation in vLLM
    except httpx.TransportError as exc:  # refused, reset, closed, a protocol error
        if pieces:
            raise UpstreamMalformed(f"vLLM server {url} dropped the page mid-answer "
                                    f"({type(exc).__name__}: {exc or 'no detail'})") from None
        raise Retryable(f"cannot reach {url} or it dropped the request ({type(exc).__name__})") from None
    if finish_reason not in ("stop", "length"):
        raise UpstreamMalformed(f"vLLM server {url} ended the page with finish_reason {finish_reason!r}")
    raw = strip_eos("".join(pieces))
    return PageResult(raw, finish_reason, tokens if tokens is not None else len(pieces))


async def _send(client: httpx.AsyncClient, request: httpx.Request, first_byte_timeout_s: float | None) -> httpx.Response:
    """Sends the request and waits for the answer's head, at most `first_byte_timeout_s` (no limit when None): a
    server that accepts and never answers must not hold a page until the request's deadline."""
    try:
        async with asyncio.timeout(first_byte_timeout_s):
            return await client.send(request, stream=True)
    except TimeoutError:
        raise Retryable(f"{request.url.host}:{request.url.port} sent nothing within {first_byte_timeout_s:g} s "
                        "(DEEPSEEK_OCR_VLLM_FIRST_BYTE_TIMEOUT_S)", outcome="timed_out") from None


async def _chunks(response: httpx.Response, url: str, max_tokens: int | None) -> AsyncIterator[_Chunk]:
    """The chunks of an OpenAI-style event stream, up to `data: [DONE]`, each checked against vLLM's shape; at
    most what `max_tokens` can take (STREAM_*)."""
    tokens = max_tokens or 0
    max_chunks = STREAM_CHUNKS_PER_TOKEN * tokens + STREAM_EXTRA_CHUNKS
    chunks = 0
    lines = _lines(response, url, STREAM_BYTES_PER_TOKEN * tokens + STREAM_EXTRA_BYTES)
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            # The body's end is read too: a response closed unread closes its connection, and every page would
            # then open a new one (a TCP handshake and a new HTTP connection on both sides, per page).
            async for _ in lines:
                pass
            return
        chunks += 1
        if chunks > max_chunks:
            raise UpstreamOverlong(f"vLLM server {url} streamed more than {max_chunks} chunks for a page of at most "
                                   f"{tokens} tokens (max_tokens); the stream was closed")
        try:
            yield _Chunk.model_validate_json(data)
        except ValidationError as exc:
            raise UpstreamMalformed(f"vLLM server {url} sent a chunk that is not a chat completion chunk "
                                    f"({_first_problem(exc)}): {data[:200]!r}") from None


async def _lines(response: httpx.Response, url: str, max_bytes: int) -> AsyncIterator[str]:
    """The stream's lines (vLLM ends them with \n), reading at most `max_bytes`: a line without end is bounded
    too, where httpx's aiter_lines would keep all of it."""
    received = 0
    pending = b""
    async for data in response.aiter_bytes():
        received += len(data)
        if received > max_bytes:
            raise UpstreamOverlong(f"vLLM server {url} streamed more than {max_bytes} bytes for one page, more than "
                                   "its max_tokens allows; the stream was closed")
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


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


def image_url(request: PageRequest) -> str:
    """The page as the image of a chat message: its file as the pipeline made it ready (the upload's own bytes, or
    one lossless file), else (a page handed over as pixels only) a lossless file of its pixels. Called off the event
    loop."""
    if request.encoded is not None:
        return request.encoded.data_url()
    assert request.image is not None
    return EncodedImage.lossless(request.image).data_url()
