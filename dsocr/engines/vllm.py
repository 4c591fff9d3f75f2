"""Talking to one vLLM OpenAI-compatible server: what it serves, whether it answers its health probe, and one page
as one streamed chat completion with upstream's sampling (its body, its stream, its errors). Choosing the server,
probing them all and retrying a page elsewhere is the vLLM pool's (dsocr.serving.vllm_pool). Closing a stream
early (a client gone, a deadline passed) aborts the generation inside vLLM. No torch is needed."""

from __future__ import annotations

import base64
import io
import json
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import httpx
from PIL import Image

from dsocr.catalogue import ModelFamily, served_modes, strip_eos
from dsocr.errors import InvalidField, PayloadTooLarge, ServiceError
from ocr_engine import EngineInfo, PageRequest, PageResult
from settings import Settings

# Table cells legitimately repeat: the repetition guard never blocks these (looked up with /tokenize).
NEVER_BANNED_TOKENS = ("<td>", "</td>")
IMAGE_PLACEHOLDER = "<image>"
CONNECT_TIMEOUT_S = 10


class UpstreamFailed(ServiceError):
    """A vLLM server failed a page (after the retry)."""

    status_code = 502
    reason = "upstream_error"


class Retryable(Exception):
    """A failure before the first token: the page may go to another server."""


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


async def discover(client: httpx.AsyncClient, url: str, wanted: str | None) -> ServedModel:
    """The served model's name and family, and the ids of the tokens the repetition guard never blocks."""
    listed = (await _get_json(client, f"{url}/v1/models"))["data"]
    model = next((m for m in listed if m["id"] == wanted), None) if wanted else listed[0]
    if model is None:
        raise ValueError(f"{url} does not serve {wanted!r} (it serves {', '.join(m['id'] for m in listed)})")
    ids = []
    for token in NEVER_BANNED_TOKENS:
        tokens = (await _post_json(client, f"{url}/tokenize", {"model": model["id"], "prompt": token,
                                                                "add_special_tokens": False}))["tokens"]
        if len(tokens) == 1:  # a tokenizer without the token splits it into pieces: nothing to protect
            ids.append(tokens[0])
    return ServedModel(model["id"], family_of(model), ids)


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
    sampling and its n-gram repetition guard (vLLM's per-request logits processor)."""
    text = request.prompt.replace(IMAGE_PLACEHOLDER + "\n", "").replace(IMAGE_PLACEHOLDER, "")
    body: dict[str, Any] = {
        "model": model.name,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": text},
        ]}],
        "temperature": 0,
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


async def complete(
    client: httpx.AsyncClient, url: str, body: dict, on_text: Callable[[str], None] | None,
    abandoned: threading.Event | None = None, on_first_token: Callable[[], None] = lambda: None,
) -> PageResult:
    """Streams one chat completion from the server at `url`; `on_text` hears the text piece by piece. Once
    `abandoned` is set (nobody waits for the answer any more) the stream is closed, which aborts the generation
    in vLLM, and the text so far is the answer, cut short ("length"). Raises Retryable for a failure before the
    first token (the page may go elsewhere)."""
    pieces: list[str] = []
    finish_reason = None
    tokens = None
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            if response.status_code >= 500:
                raise Retryable(f"{url} answered {response.status_code}: {await _error_text(response)}")
            if response.status_code >= 400:
                raise _refusal(response.status_code, await _error_text(response))
            async for chunk in _chunks(response):
                if abandoned is not None and abandoned.is_set():
                    finish_reason = "length"
                    break
                if "error" in chunk:
                    raise UpstreamFailed(f"vLLM failed the page: {_message(chunk['error'])}")
                for choice in chunk.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text:
                        if not pieces:
                            on_first_token()
                        pieces.append(text)
                        if on_text:
                            on_text(text)
                    finish_reason = choice.get("finish_reason") or finish_reason
                if chunk.get("usage"):
                    tokens = chunk["usage"].get("completion_tokens")
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
        if pieces:
            raise UpstreamFailed(f"vLLM server {url} dropped the page mid-answer: {exc}") from None
        raise Retryable(f"cannot reach {url}: {type(exc).__name__}") from None
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


def png_data_url(image: Image.Image) -> str:
    """The page as the image of a chat message."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
