"""Request ids: the client's `X-Request-ID` when it is a sensible one, else a new one; on every response, in every
error body, on every log line written while the request is served, and in the one summary line logged for each OCR
request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dsocr.api.middleware.root_path import route_path
from dsocr.logs import current_request_id

REQUEST_ID_HEADER = "X-Request-ID"
# What a client may send as its id: short, and nothing that could forge a log line or a header.
CLIENT_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")

summary_log = logging.getLogger("deepseek_ocr.request")


def request_id_of(request: Request) -> str:
    return request.scope.get("state", {}).get("request_id", "")


def new_request_id() -> str:
    return uuid.uuid4().hex


def error_body(detail: str) -> dict[str, str]:
    """Every error's JSON: what went wrong, and the id to find it by in the log."""
    return {"detail": detail, "requestId": current_request_id.get() or new_request_id()}


class RequestIdMiddleware:
    """Outermost: every answer carries the id, refusals by other middlewares included. For the OCR paths it logs
    one line when the answer (a stream's last byte included) has been sent, from what the handler noted in
    `request.state.summary`."""

    def __init__(self, app: ASGIApp, summarised: tuple[str, ...] = ()) -> None:
        self.app = app
        self.summarised = summarised

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-request-id"]
        request_id = sent[0] if sent and CLIENT_ID.fullmatch(sent[0]) else new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        summary: dict = {}
        state["summary"] = summary
        token = current_request_id.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if route_path(scope) in self.summarised:
                log_summary(scope, request_id, summary.pop("status", status), summary, time.perf_counter() - started)
            current_request_id.reset(token)


def log_summary(scope: Scope, request_id: str, status: int, summary: dict, seconds: float) -> None:
    """The OCR request's one line: its id, status, mode, pages, upload bytes, queue and inference ms, generated
    tokens, finish reasons and times each page was read (those known when it ended)."""
    fields = {"request_id": request_id, "method": scope["method"], "path": route_path(scope), "status": status,
              **summary, "duration_ms": round(seconds * 1000, 1)}
    text = " ".join(f"{key}={_shown(value)}" for key, value in fields.items() if key not in ("method", "path"))
    summary_log.info("%s %s %s", scope["method"], fields["path"], text, extra={"fields": fields})


def _shown(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value) or "-"
    return str(value)
