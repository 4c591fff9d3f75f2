"""Reads a multipart upload under the size limit (refused on Content-Length, or while streaming when it has
none) and within its time: an upload that stops arriving, or trickles in, gives its queue slot back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from dsocr.errors import ClientGone, InvalidField, PayloadTooLarge, RequestTimeout, UnsupportedType
from dsocr.pipeline.ocr_request import UploadForm

# Room for the multipart boundaries and the small text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_TEXT_FIELD_BYTES = 64 * 1024
MAX_TEXT_FIELDS = 16
FILE_FIELD = "image"


# Answers that end reading a body part-way also end the connection: reading on would only feed the sender.
CLOSE = {"Connection": "close"}


@dataclass(frozen=True)
class UploadPace:
    """An upload may take `timeout_s`; past that it goes on only while it averages `min_bytes_per_s`."""

    timeout_s: float
    min_bytes_per_s: float


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Upload too large: the limit is {limit / (1024 * 1024):g} MB (DEEPSEEK_MAX_IMAGE_MB)",
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
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedType("Send the upload as multipart/form-data with the file in the 'image' field")
    max_body = limit + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(limit)

    limited = Request(request.scope, receive=_guarded(request.receive, max_body, limit, pace))
    try:
        form = await limited.form(max_files=1, max_fields=MAX_TEXT_FIELDS, max_part_size=MAX_TEXT_FIELD_BYTES)
    except ClientDisconnect:
        raise ClientGone("The client disconnected while sending its upload") from None
    try:
        upload = form.get(FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise InvalidField("The form needs a file in the 'image' field")
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise _too_large(limit)
        fields = {}
        for name in text_fields:
            value = form.get(name)
            if isinstance(value, UploadFile):
                raise InvalidField(f"Field '{name}' must be text, not a file")
            if value is not None:
                fields[name] = value
        return UploadForm(filename=upload.filename or "", data=data, fields=fields)
    finally:
        await form.close()
