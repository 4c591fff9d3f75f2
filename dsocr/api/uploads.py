"""Reads a multipart upload under the size limit: refused on Content-Length, or while streaming when it has none."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive

from dsocr.errors import ClientGone, InvalidField, PayloadTooLarge, UnsupportedType
from dsocr.pipeline.ocr_request import UploadForm

# Room for the multipart boundaries and the small text fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_TEXT_FIELD_BYTES = 64 * 1024
MAX_TEXT_FIELDS = 16
FILE_FIELD = "image"


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Upload too large: the limit is {limit / (1024 * 1024):g} MB (DEEPSEEK_MAX_IMAGE_MB)")


def _counting(receive: Receive, max_body: int, limit: int) -> Receive:
    """`receive` that fails as soon as more than `max_body` bytes have arrived."""
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_body:
                raise _too_large(limit)
        return message

    return wrapped


async def read_upload(request: Request, limit: int, text_fields: tuple[str, ...]) -> UploadForm:
    """The `image` file (at most `limit` bytes) and the named text fields of a multipart form."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "multipart/form-data":
        raise UnsupportedType("Send the upload as multipart/form-data with the file in the 'image' field")
    max_body = limit + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise _too_large(limit)

    limited = Request(request.scope, receive=_counting(request.receive, max_body, limit))
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
