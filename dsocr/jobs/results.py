"""A job's document as GET /api/jobs/{id}/result gives it: /api/ocr's answer for that file, put together from
the pages kept in the store, plus `documentId` and `status` (and `errors` for pages that failed)."""

from __future__ import annotations

from typing import Any

from dsocr.pipeline.answers import document_response
from schemas import PageOut, TimingsOut


def document_answer(job: dict[str, Any], document: dict[str, Any], model: str) -> dict[str, Any]:
    read = [PageOut.model_validate(page["result"]) for page in document["pages"] if page["result"] is not None]
    for index, page in enumerate(read):
        page.page_index = index  # the position in this answer's `pages`, as /api/ocr counts it
    errors = [{"page": page["page"], "status": page["status"], "error": page["error"]}
              for page in document["pages"] if page["result"] is None]
    head: dict[str, Any] = {"documentId": document["id"], "status": document["status"]}
    if errors:
        head["errors"] = errors
    if not read:
        return {**head, "fileName": document["file_name"], "fileSize": document["file_size"],
                "isPdf": bool(document["is_pdf"]), "pages": []}
    started, finished = document["started"] or 0.0, document["finished"] or document["started"] or 0.0
    answer = document_response(
        read, mode=job["mode"], prompt=job["prompt"], file_name=document["file_name"],
        file_size=document["file_size"], model=model, run_id=document["run_id"], is_pdf=bool(document["is_pdf"]),
        duration_ms=round(max(finished - started, 0) * 1000, 1),
        timings=TimingsOut(queue_ms=max(page.timings.queue_ms for page in read),
                           inference_ms=round(sum(page.timings.inference_ms for page in read), 1)),
        created_at=job["finishedAt"] or job["createdAt"],
    )
    return {**head, **answer.model_dump(by_alias=True)}
