"""The history of finished results: the list, one result, one result as a file."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import PurePath
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from dsocr.store.changes import in_store
from dsocr.api.middleware.auth import client_owner
from dsocr.api.dependencies import get_history
from dsocr.api.openapi import API_ERRORS, errors
from dsocr.errors import NotFound
from dsocr.store.history import HistoryStore
from schemas import HistoryItem, HistoryList, OcrResponse

router = APIRouter(tags=["history"], responses=errors(*API_ERRORS))

HISTORY_LIST_LIMIT = 200


class DownloadFormat(str, Enum):
    md = "md"
    json = "json"
    raw = "raw"


# What each download format holds: (media type, file name suffix).
DOWNLOADS = {
    DownloadFormat.md: ("text/markdown; charset=utf-8", ".md"),
    DownloadFormat.json: ("application/json", ".json"),
    DownloadFormat.raw: ("text/plain; charset=utf-8", ".raw.txt"),
}


@router.get("/api/history", response_model=HistoryList)
async def history_list(
    request: Request, limit: int = Query(30, ge=1, le=HISTORY_LIST_LIMIT),
    history: HistoryStore | None = Depends(get_history),
) -> HistoryList:
    """Kept results, newest first (empty when DEEPSEEK_OCR_HISTORY is off); with API keys, the key's own."""
    if history is None:
        return HistoryList(items=[])
    rows = await in_store(history.list, limit, client_owner(request))
    return HistoryList(items=[HistoryItem(**row) for row in rows])


async def _history_entry(request: Request, entry_id: str, history: HistoryStore | None) -> dict:
    entry = await in_store(history.get, entry_id, client_owner(request)) if history else None
    if entry is None:
        raise NotFound("No such history entry (unknown or expired)")
    return entry


@router.get("/api/history/{entry_id}", response_model=OcrResponse, responses=errors(404))
async def history_entry(
    request: Request, entry_id: str, history: HistoryStore | None = Depends(get_history)
) -> JSONResponse:
    """A kept result: /api/ocr's JSON as it was answered, page previews included."""
    return JSONResponse(await _history_entry(request, entry_id, history))


@router.get("/api/history/{entry_id}/download", responses={
    200: {"content": {"text/markdown": {}, "text/plain": {}, "application/json": {}}, "description": "the file"},
    **errors(404),
})
async def history_download(
    request: Request, entry_id: str, format: DownloadFormat = DownloadFormat.md,
    history: HistoryStore | None = Depends(get_history),
) -> Response:
    """A kept result as a file: `md` the markdown, `raw` the model's raw output, `json` the whole result."""
    entry = await _history_entry(request, entry_id, history)
    if format is DownloadFormat.json:
        content = json.dumps(entry, ensure_ascii=False, indent=2)
    else:
        content = entry["text"] if format is DownloadFormat.md else entry["rawText"]
    media_type, suffix = DOWNLOADS[format]
    name = download_name(entry["fileName"], suffix)
    return Response(content, media_type=media_type, headers={"Content-Disposition": content_disposition(name)})


def download_name(file_name: str, suffix: str) -> str:
    """The upload's name with the download's suffix; only the name's last component counts, never a path."""
    stem = PurePath(file_name.replace("\\", "/")).stem or "result"
    return f"{stem}{suffix}"


def content_disposition(name: str) -> str:
    """`attachment` with an ASCII fallback and the UTF-8 name (RFC 6266)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
