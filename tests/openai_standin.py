"""A STAND-IN for a vLLM OpenAI-compatible server, for the fast tests of the vLLM engine: the endpoints the
service calls (/health, /v1/models, /tokenize, streamed /v1/chat/completions), with vLLM's shapes, recording what
it receives. Tests script its answers and failures; the real vLLM server is tested in test_vllm_real.py.

It runs in a thread of the test process on a loopback port (uvicorn), and is stopped by the test. Besides vLLM's
own answers it can misbehave as a broken server would: reset the connection (a TCP RST) before answering or
mid-stream, stream without end, send chunks that are not vLLM's shape, accept a request and never answer, or answer
/v1/models and /tokenize with something that is not their shape."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

TOKEN_IDS = {"<td>": [128821], "</td>": [128822]}
BOS_ID = 0
# A chat template sent with a request, refused as vLLM refuses it without --trust-request-chat-template.
UNTRUSTED_TEMPLATE = ("Chat template is passed with request, but --trust-request-chat-template is not set. "
                      "Refused request with untrusted chat template.")
READY_TIMEOUT_S = 30
# A stand-in that never answers holds its requests open: uvicorn gives them this long when the stand-in stops.
STOP_GRACE_S = 1
# How long a stream that resets mid-answer waits after its last piece, so that the pieces reach the client first.
RESET_AFTER_S = 0.2


@dataclass
class Script:
    """What the stand-in does; tests change it while it runs."""

    pieces: list[str] = field(default_factory=lambda: ["# Title", "\n\nSome ", "text."])
    finish_reason: str = "stop"
    healthy: bool = True
    fail_status: int | None = None  # answer chat completions with this status and an error body
    error_message: str = "This model's maximum context length is 4096 tokens."
    hold: threading.Event | None = None  # while not set, streams wait before their first piece
    piece_delay_s: float = 0.0
    # Answer "image <12 hex digits of the image's hash>": a test maps each answer back to the page it read.
    echo_image: bool = False
    # A connection reset (TCP RST) on a chat completion: before answering anything, or after the pieces.
    reset: Literal["before", "mid"] | None = None
    endless: bool = False  # stream the pieces over and over, never finishing
    raw_chunks: list[str] | None = None  # `data:` lines sent as they are instead of the pieces
    never_answer: bool = False  # accept every request (/health included) and never answer it
    models_answer: Any = None  # /v1/models answers this instead of the model list
    tokenize_answer: Any = None  # /tokenize answers this instead of the token ids
    # (pieces, finish reason) answered instead when the request samples (temperature above 0): a page that loops
    # under greedy decoding and reads cleanly when sampled.
    sampled: tuple[list[str], str] | None = None
    # How /tokenize renders chat messages: "plain" as vLLM with DeepSeek-OCR's template (BOS, then the content),
    # "roles" as vLLM with DeepSeek-VL2's (BOS, `<|User|>: `, the content, `\n\n<|Assistant|>: `). A chat template
    # sent with a request is rendered as the plain one, or refused when not trusted.
    chat_rendering: Literal["plain", "roles"] = "plain"
    trust_request_chat_template: bool = True


class OpenAIStandIn:
    def __init__(self, model_id: str = "deepseek-ai/DeepSeek-OCR", root: str | None = None) -> None:
        self.model_id = model_id
        self.root = root or model_id
        self.script = Script()
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.client_ports: list[int] = []  # each chat completion's connection, by the client's port
        self.active = 0
        self.max_active = 0
        self.aborted = 0
        self.completed = 0
        self.model_lists = 0  # /v1/models requests
        self.lock = threading.Lock()
        self.transports: dict[tuple[str, int], asyncio.Transport] = {}
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error",
                                                    lifespan="off", http=self._protocol(),
                                                    timeout_graceful_shutdown=STOP_GRACE_S))
        self.thread: threading.Thread | None = None

    def start(self) -> "OpenAIStandIn":
        self.server.should_exit = False
        self.server.started = False
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self.server.started:
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread:
            self.thread.join(READY_TIMEOUT_S)
        if self.script.hold:
            self.script.hold.set()

    def _protocol(self) -> type[H11Protocol]:
        """uvicorn's HTTP protocol, noting each connection's transport so that a handler can reset it."""
        transports = self.transports

        class Protocol(H11Protocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                if self.client:
                    transports[self.client] = transport

        return Protocol

    def _reset(self, request: Request) -> None:
        """Resets the request's connection: SO_LINGER 0, then close, which sends a TCP RST."""
        assert request.client is not None
        transport = self.transports[(request.client.host, request.client.port)]
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _never_answer(self) -> None:
        while not self.server.should_exit:  # until the stand-in stops
            await asyncio.sleep(0.05)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> JSONResponse:
            if self.script.never_answer:
                await self._never_answer()
            return JSONResponse({}, status_code=200 if self.script.healthy else 503)

        @app.get("/v1/models")
        async def models() -> Any:
            with self.lock:
                self.model_lists += 1
            if self.script.models_answer is not None:
                return JSONResponse(self.script.models_answer)
            return {"object": "list", "data": [{"id": self.model_id, "object": "model", "root": self.root}]}

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Any:
            if self.script.tokenize_answer is not None:
                return JSONResponse(self.script.tokenize_answer)
            body = await request.json()
            if "messages" in body:
                if body.get("chat_template") and not self.script.trust_request_chat_template:
                    return JSONResponse({"error": {"message": UNTRUSTED_TEMPLATE, "type": "BadRequestError",
                                                   "code": 400}}, status_code=400)
                content = "".join(_text_of(message["content"]) for message in body["messages"])
                if self.script.chat_rendering == "roles" and not body.get("chat_template"):
                    content = f"<|User|>: {content}\n\n<|Assistant|>: "
                tokens = [BOS_ID, *map(ord, content)]
            else:
                tokens = TOKEN_IDS.get(body["prompt"]) or [
                    *([BOS_ID] if body.get("add_special_tokens", True) else []), *map(ord, body["prompt"])]
            return {"count": len(tokens), "max_model_len": 4096, "tokens": tokens}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            with self.lock:
                self.bodies.append(body)
                self.headers.append(dict(request.headers))
                self.client_ports.append(request.client.port if request.client else 0)
            if self.script.never_answer:
                await self._never_answer()
            if self.script.reset == "before":
                self._reset(request)
                return None
            if self.script.fail_status:
                return JSONResponse({"error": {"message": self.script.error_message, "type": "BadRequestError",
                                               "code": self.script.fail_status}}, status_code=self.script.fail_status)
            if body.get("chat_template") and not self.script.trust_request_chat_template:
                return JSONResponse({"error": {"message": UNTRUSTED_TEMPLATE, "type": "BadRequestError", "code": 400}},
                                    status_code=400)
            return StreamingResponse(self._stream(request, body), media_type="text/event-stream")

        return app

    async def _stream(self, request: Request, body: dict):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        finished = False
        try:
            if self.script.hold is not None:  # wait for the test to release the stream
                await asyncio.to_thread(self.script.hold.wait)
            if self.script.raw_chunks is not None:
                for raw in self.script.raw_chunks:
                    yield f"data: {raw}\n\n".encode()
            pieces = [f"image {image_hash(body)}"] if self.script.echo_image else self.script.pieces
            finish_reason = self.script.finish_reason
            if self.script.sampled is not None and body.get("temperature", 0) > 0:
                pieces, finish_reason = self.script.sampled
            while True:
                for piece in pieces:
                    # Yields to the loop at every piece, so that a connection the client closed is noticed.
                    await asyncio.sleep(self.script.piece_delay_s)
                    yield _chunk({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                if not self.script.endless:
                    break
            if self.script.reset == "mid":
                await asyncio.sleep(RESET_AFTER_S)
                self._reset(request)
                return
            yield _chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]})
            yield _chunk({"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": len(pieces),
                                                   "total_tokens": 300 + len(pieces)}})
            yield b"data: [DONE]\n\n"
            finished = True
        finally:
            with self.lock:
                self.active -= 1
                if finished:
                    self.completed += 1
                else:  # the client closed the stream: vLLM aborts the request
                    self.aborted += 1


def _text_of(content: str | list[dict]) -> str:
    """A message's content as vLLM renders it for a template that takes strings: an image part is `<image>`, the
    parts joined by line breaks."""
    if isinstance(content, str):
        return content
    return "\n".join("<image>" if part.get("type") == "image_url" else part.get("text", "") for part in content)


def image_hash(body: dict) -> str:
    """12 hex digits of the SHA-256 of the chat request's image URL (the page as the service sent it)."""
    parts = body["messages"][0]["content"]
    url = next(part["image_url"]["url"] for part in parts if part.get("type") == "image_url")
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def _chunk(data: dict) -> bytes:
    return f"data: {json.dumps({'id': 'chatcmpl-1', 'object': 'chat.completion.chunk', 'model': 'm', **data})}\n\n".encode()
