"""Reads a multipart upload under the size limit (refused on Content-Length, or while streaming when it has
none) and within its time: an upload that stops arriving, or trickles in, gives its queue slot back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from dsocr.errors import ClientGone, InvalidField, PayloadTooLarge, RequestTimeout, UnsupportedType
from dsocr.pipeline.ocr_request import UploadForm

# Room for the multipart boundaries and the small text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_TEXT_FIELD_BYTES = 64 * 1024
MAX_TEXT_FIELDS = 16
FILE_FIELD = "image"
JOB_FILE_FIELD = "file"


# Answers that end reading a body part-way also end the connection: reading on would only feed the sender.
CLOSE = {"Connection": "close"}


@dataclass(frozen=True)
class UploadPace:
    """An upload may take `timeout_s`; past that it goes on only while it averages `min_bytes_per_s`."""

    timeout_s: float
    min_bytes_per_s: float


def _too_large(limit: int, file_name: str | None = None) -> PayloadTooLarge:
    which = f"{file_name}: " if file_name else ""
    return PayloadTooLarge(f"{which}Upload too large: the limit is {limit / (1024 * 1024):g} MB (DEEPSEEK_MAX_IMAGE_MB)",
                           headers=CLOSE)


def _guarded(receive: Receive, max_body: int, limit: int, pace: UploadPace) -> Receive:
    """`receive` that fails as soon as more than `max_body` bytes have arrived (413), or when the body is late:
    not complete within `pace.timeout_s` and slower than `pace.min_bytes_per_s` on average (408)."""
    received = 0
    started = time.monotonic()

    async def wrapped() -> Message:
        nonlocal received
        # If nothing more arrives, the upload is too slow at this moment:
        too_slow_at = max(pace.timeout_s, received / pace.min_bytes_per_s)
        try:
            message = await asyncio.wait_for(receive(), max(too_slow_at - (time.monotonic() - started), 0))
        except asyncio.TimeoutError:
            raise RequestTimeout(
                f"The upload did not arrive in time: {received} bytes in {time.monotonic() - started:.0f} s "
                f"(DEEPSEEK_OCR_UPLOAD_TIMEOUT_S={pace.timeout_s:g}, then at least "
                f"{pace.min_bytes_per_s / 1024:g} KiB/s, DEEPSEEK_OCR_UPLOAD_MIN_KIB_S)",
                headers=CLOSE,
            ) from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body:
                raise _too_large(limit)
        return message

    return wrapped


async def read_upload(request: Request, limit: int, text_fields: tuple[str, ...], pace: UploadPace) -> UploadForm:
    """The `image` file (at most `limit` bytes) and the named text fields of a multipart form."""
    files, fields = await _read_form(request, FILE_FIELD, 1, limit, text_fields, pace)
    name, data = files[0]
    return UploadForm(filename=name, data=data, fields=fields)


async def read_job_upload(request: Request, limit: int, max_files: int, text_fields: tuple[str, ...],
                          pace: UploadPace) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """The `file` parts of a job's form (1 to `max_files`, each at most `limit` bytes) and its text fields."""
    return await _read_form(request, JOB_FILE_FIELD, max_files, limit, text_fields, pace)


async def _read_form(request: Request, file_field: str, max_files: int, limit: int, text_fields: tuple[str, ...],
                     pace: UploadPace) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedType(f"Send the upload as multipart/form-data with the file in the '{file_field}' field")
    max_body = max_files * (limit + FORM_OVERHEAD_BYTES)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(limit)

    limited = Request(request.scope, receive=_guarded(request.receive, max_body, limit, pace))
    try:
        form = await limited.form(max_files=max_files, max_fields=MAX_TEXT_FIELDS, max_part_size=MAX_TEXT_FIELD_BYTES)
    except ClientDisconnect:
        raise ClientGone("The client disconnected while sending its upload") from None
    except HTTPException as exc:  # python-multipart's limits (too many files or fields), as Starlette raises them
        if file_field != JOB_FILE_FIELD or not str(exc.detail).startswith("Too many files"):
            raise
        raise PayloadTooLarge(f"{exc.detail} (DEEPSEEK_OCR_MAX_JOB_FILES={max_files})", headers=CLOSE) from None
    try:
        uploads = form.getlist(file_field)
        if not uploads or not all(isinstance(upload, UploadFile) for upload in uploads):
            raise InvalidField(f"The form needs a file in the '{file_field}' field")
        files = []
        for upload in uploads:
            data = await upload.read(limit + 1)
            if len(data) > limit:
                raise _too_large(limit, upload.filename)
            files.append((upload.filename or "", data))
        fields = {}
        for name in text_fields:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise InvalidField(f"Field '{name}' must be text, not a file")
            if value is not None:
                fields[name] = value
        return files, fields
    finally:
        await form.close()
