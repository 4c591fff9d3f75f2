"""Jobs: POST /api/jobs submits documents that are read in the background and kept in the database; the job is
followed by polling (long-polling with ?wait=), by server-sent events, or by a signed webhook; its result is
fetched as JSON, markdown or a zip. Every job belongs to the API key that submitted it; any replica answers."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from enum import Enum
from pathlib import PurePath
from typing import Any, AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from dsocr.api.middleware.auth import client_owner
from dsocr.api.openapi import API_ERRORS, errors
from dsocr.api.sse import KEEPALIVE, SSE_HEADERS, sse, until_streams_end
from dsocr.api.uploads import UploadPace, read_job_upload
from dsocr.errors import Conflict, InvalidField, NotFound, ServiceError
from dsocr.store.changes import Changes, in_store
from dsocr.jobs.results import document_answer
from dsocr.jobs.webhooks import check_callback_url
from dsocr.pipeline.ocr_request import UploadForm, check_ocr_request
from dsocr.store.jobs import FINAL, JobStore, NewDocument
from settings import Settings

router = APIRouter(tags=["jobs"], responses=errors(*API_ERRORS))

MAX_WAIT_S = 60
LIST_LIMIT = 100
MAX_IDEMPOTENCY_KEY = 255
JOB_FIELDS = ("mode", "prompt", "pages", "callbackUrl")

JOB_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                                 "description": "one or more images or PDFs (DEEPSEEK_OCR_MAX_JOB_FILES)"},
                        "mode": {"type": "string"},
                        "prompt": {"type": "string"},
                        "pages": {"type": "string", "description": "PDF pages, e.g. 1-3,7 (for every PDF)"},
                        "callbackUrl": {"type": "string", "description": "POSTed the job's summary when it ends"},
                    },
                }
            }
        },
    }
}


class ResultFormat(str, Enum):
    json = "json"
    md = "md"
    zip = "zip"


def _jobs(request: Request) -> JobStore:
    return request.app.state.jobs.store


def _changes(request: Request) -> Changes:
    return request.app.state.jobs.changes


@router.post("/api/jobs", status_code=202, openapi_extra=JOB_FORM_SCHEMA,
             responses=errors(400, 408, 413, 415, 503))
async def submit_job(request: Request) -> JSONResponse:
    """Checks every file as /api/ocr would (type, size, pages, a PDF that opens), then commits the job with its
    files before answering 202. With an `Idempotency-Key` header, a retried submit answers the same job."""
    settings: Settings = request.app.state.settings
    owner = client_owner(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidField(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    store = _jobs(request)
    if key:  # a retry answers at once, without reading its files again
        existing = await in_store(store.job_for_key, owner, key)
        if existing:
            return _accepted(request, await in_store(store.view, existing, owner))
    submitter = request.app.state.model
    submitter.ready_info()  # 503 while the model loads: modes are checked against it
    pace = UploadPace(settings.ocr_upload_timeout_s, settings.ocr_upload_min_kib_s * 1024)
    files, fields = await read_job_upload(request, settings.max_upload_bytes, settings.ocr_max_job_files, JOB_FIELDS,
                                          pace)
    callback_url = fields.get("callbackUrl") or None
    if callback_url:
        check_callback_url(callback_url, settings.ocr_webhook_hosts)
    documents: list[NewDocument] = []
    mode = prompt = None
    for file_name, data in files:
        form = UploadForm(filename=file_name, data=data, fields=fields)
        try:
            checked = await check_ocr_request(form, submitter, settings, request.app.state.pdf_workers)
        except ServiceError as exc:
            exc.detail = f"{file_name or 'a file without a name'}: {exc.detail}"
            raise
        mode, prompt = checked.mode.name, checked.prompt
        documents.append(NewDocument(file_name, len(data), checked.document.is_pdf, checked.document.numbers, data))
    assert mode is not None and prompt is not None
    job_id, _ = await in_store(store.submit, owner, mode, prompt, callback_url, key, documents)
    view = await in_store(store.view, job_id, owner)  # as submitted: read before this process's worker is woken
    _changes(request).fire("work")
    return _accepted(request, view)


def _accepted(request: Request, view: dict[str, Any] | None) -> JSONResponse:
    if view is None:  # removed between the submit and this answer
        raise NotFound("No such job")
    body = {key: view[key] for key in ("jobId", "status", "createdAt", "pagesTotal", "links")}
    body["documents"] = [{key: doc[key] for key in ("documentId", "fileName", "fileSize", "pages")}
                         for doc in view["documents"]]
    root = request.scope.get("root_path", "")
    return JSONResponse(body, status_code=202, headers={"Location": f"{root}/api/jobs/{view['jobId']}"})


@router.get("/api/jobs")
async def list_jobs(request: Request, status: str | None = Query(None), limit: int = Query(20, ge=1, le=LIST_LIMIT)
                    ) -> dict[str, Any]:
    """The caller's jobs, newest first; `status` keeps one status."""
    if status is not None and status not in ("queued", "running", *FINAL):
        raise InvalidField(f"Unknown status {status!r}: one of queued, running, {', '.join(FINAL)}")
    return {"jobs": await in_store(_jobs(request).listing, client_owner(request), status, limit)}


@router.get("/api/jobs/{job_id}", responses=errors(404))
async def get_job(request: Request, job_id: str, wait: float = Query(0, ge=0, le=MAX_WAIT_S)) -> dict[str, Any]:
    """The job's status; with `wait`, answers when it changes or ends, or after `wait` seconds."""
    store, owner = _jobs(request), client_owner(request)
    view = await _view(store, job_id, owner)
    if wait <= 0 or view["status"] in FINAL:
        return view
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    seen = _progress(view)
    while (remaining := deadline - loop.time()) > 0:
        await _changes(request).wait(job_id, remaining)
        view = await _view(store, job_id, owner)
        if view["status"] in FINAL or _progress(view) != seen:
            break
    return view


def _progress(view: dict[str, Any]) -> tuple:
    return view["status"], view["pagesDone"], view["pagesFailed"], view["queuePosition"]


async def _view(store: JobStore, job_id: str, owner: str) -> dict[str, Any]:
    view = await in_store(store.view, job_id, owner)
    if view is None:
        raise NotFound("No such job (unknown, removed, or expired)")
    return view


@router.get("/api/jobs/{job_id}/events", response_class=StreamingResponse, responses=errors(404))
async def job_events(request: Request, job_id: str) -> StreamingResponse:
    """Server-sent events: `state` (the job's status, first), `queued` (position), `page` (each finished page with
    its text), `page_failed`, `document`, then `end`, after which the stream ends. Stored events carry ids: a
    client that reconnects with `Last-Event-ID` gets what it missed."""
    store, owner = _jobs(request), client_owner(request)
    view = await _view(store, job_id, owner)
    last = request.headers.get("last-event-id") or request.query_params.get("lastEventId") or "0"
    after = int(last) if last.isascii() and last.isdigit() and len(last) < 19 else 0
    stream = _job_stream(request, store, job_id, owner, view, after)
    # The job outlives this process: a stream the service ends as it stops says so, and the client reconnects.
    shutdown = sse("shutdown", {"detail": "The service is shutting down; reconnect with Last-Event-ID to follow the job"})
    return StreamingResponse(until_streams_end(request.app, stream, [shutdown]), media_type="text/event-stream",
                             headers=SSE_HEADERS)


async def _job_stream(request: Request, store: JobStore, job_id: str, owner: str, view: dict[str, Any],
                      after: int) -> AsyncIterator[bytes]:
    changes = _changes(request)
    ping_s = request.app.state.settings.ocr_sse_ping_s
    loop = asyncio.get_running_loop()
    yield sse("state", view)
    position = view["queuePosition"]
    quiet_since = loop.time()
    while True:
        events = await in_store(store.events, job_id, after)
        for event_id, name, data in events:
            after = event_id
            yield f"id: {event_id}\n".encode() + sse(name, data)
            if name == "end":
                return
        if events:
            quiet_since = loop.time()
        current = await in_store(store.view, job_id, owner)
        if current is None:  # removed meanwhile
            yield sse("end", {"jobId": job_id, "status": "removed"})
            return
        if current["status"] in FINAL and not events:
            if await in_store(store.events, job_id, after, 1):  # stored between the two looks: send them first
                continue
            # Ended before this stream's first look and its events are gone (or the client is past them).
            yield sse("end", {"jobId": job_id, "status": current["status"], "pagesDone": current["pagesDone"],
                              "pagesFailed": current["pagesFailed"], "links": current["links"]})
            return
        if current["queuePosition"] != position and current["queuePosition"] is not None:
            position = current["queuePosition"]
            yield sse("queued", {"position": position})
        if loop.time() - quiet_since >= ping_s:
            quiet_since = loop.time()
            yield KEEPALIVE
        await changes.wait(job_id, ping_s)


@router.get("/api/jobs/{job_id}/result", responses={**errors(404, 409), 200: {"content": {
    "application/json": {}, "text/markdown": {}, "application/zip": {}}}})
async def job_result(request: Request, job_id: str, format: ResultFormat = ResultFormat.json) -> Response:
    """`{jobId, status, documents}`, each document exactly /api/ocr's answer for that file plus `documentId` (and
    `status`, with `errors` for pages that failed); `format=md` for a one-document job's markdown, `format=zip`
    for a `.md` and a `.json` per document. 409 while the job has not ended."""
    found = await in_store(_jobs(request).result, job_id, client_owner(request))
    if found is None:
        raise NotFound("No such job (unknown, removed, or expired)")
    job, documents = found
    if job["status"] not in FINAL:
        raise Conflict(f"The job has not ended (it is {job['status']}): wait for it (GET /api/jobs/{job_id}?wait=60)")
    model = request.app.state.model.model_name
    answers = [document_answer(job, document, model) for document in documents]
    if format is ResultFormat.md:
        if len(answers) != 1:
            raise InvalidField("format=md is for a job of one document; this one has "
                               f"{len(answers)}: use format=zip")
        if "text" not in answers[0]:
            raise Conflict("No page of this document was read (see the job's result for why)")
        name = _safe_stem(answers[0]["fileName"] or "", 1) + ".md"
        return Response(answers[0].get("text", ""), media_type="text/markdown; charset=utf-8",
                        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})
    if format is ResultFormat.zip:
        return Response(_zip(answers), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{job_id}.zip"'})
    return JSONResponse({"jobId": job["jobId"], "status": job["status"], "documents": answers})


def _zip(answers: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for number, answer in enumerate(answers, start=1):
            stem = _safe_stem(answer.get("fileName") or "", number)
            while stem in used:
                stem = f"{stem}-{number}"
            used.add(stem)
            archive.writestr(f"{stem}.md", answer.get("text", ""))
            archive.writestr(f"{stem}.json", json.dumps(answer, ensure_ascii=False, indent=2))
    return buffer.getvalue()


def _safe_stem(file_name: str, number: int) -> str:
    """A file name's stem that is safe inside a zip: no folders, no dots first, no control characters."""
    stem = PurePath(file_name.replace("\\", "/")).stem
    stem = "".join(c for c in stem if c.isprintable() and c not in '/:*?"<>|').strip(" .")
    return stem[:100] or f"document-{number}"


@router.post("/api/jobs/{job_id}/cancel", responses=errors(404, 409))
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Queued pages never run; running ones are aborted. 409 when the job has ended already."""
    owner = client_owner(request)
    outcome = await in_store(_jobs(request).cancel, job_id, owner)
    if outcome is None:
        raise NotFound("No such job (unknown, removed, or expired)")
    status, cancelled = outcome
    if not cancelled:
        raise Conflict(f"The job has ended already ({status})")
    _stop_here(request, job_id)
    return await _view(_jobs(request), job_id, owner)


@router.delete("/api/jobs/{job_id}", status_code=204, responses=errors(404))
async def delete_job(request: Request, job_id: str) -> Response:
    """Cancels the job and removes it with its files and results: 204, then 404."""
    run_ids = await in_store(_jobs(request).remove, job_id, client_owner(request))
    if run_ids is None:
        raise NotFound("No such job (unknown, removed, or expired)")
    _stop_here(request, job_id)
    await in_store(request.app.state.jobs.files.remove, run_ids)
    return Response(status_code=204)


def _stop_here(request: Request, job_id: str) -> None:
    """This process's pages of the job stop now (other replicas stop theirs at their next lease renewal)."""
    worker = request.app.state.jobs.worker
    if worker is not None:
        worker.drop_job(job_id)
    _changes(request).fire(job_id)
