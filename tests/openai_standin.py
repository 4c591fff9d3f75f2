"""A STAND-IN for a vLLM OpenAI-compatible server, for the fast tests of the vLLM engine: the endpoints the
service calls (/health, /v1/models, /tokenize, streamed /v1/chat/completions), with vLLM's shapes, recording what
it receives. Tests script its answers and failures; the real vLLM server is tested in test_vllm_real.py.

It runs in a thread of the test process on a loopback port (uvicorn), and is stopped by the test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

TOKEN_IDS = {"<td>": [128821], "</td>": [128822]}
READY_TIMEOUT_S = 30


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


class OpenAIStandIn:
    def __init__(self, model_id: str = "deepseek-ai/DeepSeek-OCR", root: str | None = None) -> None:
        self.model_id = model_id
        self.root = root or model_id
        self.script = Script()
        self.bodies: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.active = 0
        self.max_active = 0
        self.aborted = 0
        self.completed = 0
        self.lock = threading.Lock()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error",
                                                    lifespan="off"))
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

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> JSONResponse:
            return JSONResponse({}, status_code=200 if self.script.healthy else 503)

        @app.get("/v1/models")
        async def models() -> dict:
            return {"object": "list", "data": [{"id": self.model_id, "object": "model", "root": self.root}]}

        @app.post("/tokenize")
        async def tokenize(request: Request) -> dict:
            prompt = (await request.json())["prompt"]
            tokens = TOKEN_IDS.get(prompt, [1, 2])
            return {"count": len(tokens), "max_model_len": 4096, "tokens": tokens}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            with self.lock:
                self.bodies.append(body)
                self.headers.append(dict(request.headers))
            if self.script.fail_status:
                return JSONResponse({"error": {"message": self.script.error_message, "type": "BadRequestError",
                                               "code": self.script.fail_status}}, status_code=self.script.fail_status)
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
            pieces = [f"image {image_hash(body)}"] if self.script.echo_image else self.script.pieces
            for piece in pieces:
                if self.script.piece_delay_s:
                    await asyncio.sleep(self.script.piece_delay_s)
                yield _chunk({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            yield _chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": self.script.finish_reason}]})
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


def image_hash(body: dict) -> str:
    """12 hex digits of the SHA-256 of the chat request's image URL (the page as the service sent it)."""
    parts = body["messages"][0]["content"]
    url = next(part["image_url"]["url"] for part in parts if part.get("type") == "image_url")
    return hashlib.sha256(url.encode()).hexdigest()[:12]


def _chunk(data: dict) -> bytes:
    return f"data: {json.dumps({'id': 'chatcmpl-1', 'object': 'chat.completion.chunk', 'model': 'm', **data})}\n\n".encode()
