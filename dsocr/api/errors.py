"""Errors as JSON `{"detail": ..., "requestId": ...}`: the service's own errors with their status, FastAPI's
parameter checks as one sentence, Starlette's 404 and 405 likewise, anything else as a 500 logged with its
request id."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dsocr.api.middleware.request_ids import error_body
from dsocr.logs import current_request_id
from dsocr.errors import ServiceError

log = logging.getLogger("deepseek_ocr")


async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
    request.app.state.metrics.failures.labels(exc.reason).inc()
    return JSONResponse(error_body(exc.detail), status_code=exc.status_code, headers=exc.headers)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (an unknown path, a wrong method), in the same shape."""
    return JSONResponse(error_body(str(exc.detail)), status_code=exc.status_code, headers=exc.headers)


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's parameter checks, as one sentence like every other error."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'] if part not in ('query', 'path', 'body'))}: {error['msg']}"
        for error in exc.errors()
    )
    request.app.state.metrics.failures.labels("invalid_field").inc()
    return JSONResponse(error_body(f"Invalid request: {problems}"), status_code=422)


class InternalErrorMiddleware:
    """Any other exception becomes a 500 whose request id is in the body and in the log, logged once: an
    exception handler for `Exception` would be re-raised by Starlette and logged again by uvicorn."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
        except Exception as exc:
            request_id = log_internal_error(scope["app"], f"{scope['method']} {scope['path']!r}", exc)
            if started:  # too late for a 500: the client sees the answer cut short
                return
            await JSONResponse(error_body(f"Internal error (request id {request_id})"), status_code=500)(scope, receive, send)


def log_internal_error(app: FastAPI, what: str, exc: BaseException) -> str:
    request_id = current_request_id.get() or "-"
    log.error("request %s failed [request id %s]", what, request_id, exc_info=exc)
    app.state.metrics.failures.labels("internal").inc()
    return request_id


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
    app.add_middleware(InternalErrorMiddleware)
