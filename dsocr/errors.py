"""Errors a request can end in; each carries its HTTP status and is turned into `{"detail": ...}` by dsocr.api.errors."""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 500
    reason = "error"  # the `reason` label of deepseek_ocr_failures_total

    def __init__(self, detail: str, headers: dict[str, str] | None = None, reason: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        if reason:
            self.reason = reason


class BadUpload(ServiceError):
    """Empty, undecodable or truncated input."""

    status_code = 400
    reason = "bad_input"


class NotFound(ServiceError):
    status_code = 404
    reason = "not_found"


class RequestTimeout(ServiceError):
    """The request's body did not arrive in time."""

    status_code = 408
    reason = "upload_timeout"


class PayloadTooLarge(ServiceError):
    status_code = 413
    reason = "too_large"


class UnsupportedType(ServiceError):
    status_code = 415
    reason = "unsupported_type"


class InvalidField(ServiceError):
    status_code = 422
    reason = "invalid_field"


class Unavailable(ServiceError):
    """The model is not loaded (yet), or the queue is full."""

    status_code = 503
    reason = "not_ready"


class TimedOut(ServiceError):
    status_code = 504
    reason = "timeout"


class ClientGone(ServiceError):
    """The client disconnected before its answer; nobody reads this response (nginx's 499)."""

    status_code = 499
    reason = "client_disconnected"


class Conflict(ServiceError):
    """The resource is not in a state that allows this (a job's result before it ends, cancelling an ended job)."""

    status_code = 409
    reason = "conflict"


class StorageFull(ServiceError):
    """The disk (or quota) the request's files are written to is full: not the client's fault, and not for a retry
    elsewhere in this process until space is freed."""

    status_code = 507
    reason = "storage_full"
