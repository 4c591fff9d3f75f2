"""Errors a request can end in; each carries its HTTP status and is turned into `{"detail": ...}` in app.py."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadUpload(ServiceError):
    """Empty, undecodable or truncated input."""

    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class PayloadTooLarge(ServiceError):
    status_code = 413


class UnsupportedType(ServiceError):
    status_code = 415


class InvalidField(ServiceError):
    status_code = 422


class Unavailable(ServiceError):
    """The model is not loaded (yet), or the queue is full."""

    status_code = 503


class TimedOut(ServiceError):
    status_code = 504
