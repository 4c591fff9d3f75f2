"""What /openapi.json says beyond the routes: one error model for every error answer, stable operation ids."""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute

from schemas import ErrorOut

ERROR_DESCRIPTIONS = {
    400: "The upload is empty, corrupt or truncated",
    401: "An API key is required (DEEPSEEK_OCR_API_KEYS) and none or an unknown one was sent",
    404: "No such entry, job or file",
    409: "The job has not ended yet (its result), or has ended already (cancelling it)",
    408: "The upload did not arrive in time (DEEPSEEK_OCR_UPLOAD_TIMEOUT_S, DEEPSEEK_OCR_UPLOAD_MIN_KIB_S)",
    413: "The upload, the image's pixels or the PDF's selected pages are past their limit",
    415: "Not an image or PDF, or not sent as multipart/form-data",
    416: "A Range header asks for bytes outside the file",
    422: "A field is invalid (mode, prompt, pages), or a PDF is encrypted or renders past its time budget",
    499: "The client left before its answer (seen only in logs and metrics)",
    500: "An internal error; its request id is in the log",
    503: "The model is loading or failed, the service is draining, the queue is full, or the database is "
         "unavailable (see Retry-After)",
    504: "The request took longer than DEEPSEEK_OCR_REQUEST_TIMEOUT_S",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route answering with these error statuses, all with the one error model."""
    return {status: {"model": ErrorOut, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


# Every /api/ route may answer these.
API_ERRORS = (401, 422, 500)
OCR_ERRORS = errors(400, *API_ERRORS, 408, 413, 415, 422, 503, 504)


def operation_id(route: APIRoute) -> str:
    """The route's function name (`api_ocr`, `list_history`): stable, and what generated clients call."""
    return route.name
