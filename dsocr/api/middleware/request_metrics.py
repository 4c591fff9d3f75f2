"""Counts the OCR requests by endpoint and status and times them end to end, into the service's metrics."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dsocr.api.middleware.root_path import route_path
from dsocr.serving.metrics import Metrics


class RequestMetricsMiddleware:
    """Counts OCR requests by endpoint and status and times them end to end, streams included."""

    def __init__(self, app: ASGIApp, metrics: Metrics, paths: tuple[str, ...]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope) if scope["type"] == "http" else ""
        if path not in self.paths:
            await self.app(scope, receive, send)
            return
        status = "500"

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(path, status).inc()
            self.metrics.request_duration.labels(path).observe(time.perf_counter() - started)
