"""A document's answer (/api/ocr's JSON) put together from its pages' answers: the same for a request read at
once and for a job's document read page by page."""

from __future__ import annotations

from datetime import datetime, timezone

from schemas import OcrResponse, PageOut, TimingsOut

# Upstream's PDF script joins pages with this line.
PAGE_SPLIT = "\n\n<--- Page Split --->\n\n"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def document_response(
    pages: list[PageOut], *, mode: str, prompt: str, file_name: str, file_size: int, model: str, run_id: str,
    is_pdf: bool, duration_ms: float, timings: TimingsOut, created_at: str | None = None,
) -> OcrResponse:
    """The answer for a document whose `pages` (at least one) were read, in page order."""
    first = pages[0]
    return OcrResponse(
        mode=mode,
        prompt=prompt,
        text=PAGE_SPLIT.join(page.text for page in pages),
        raw_text=PAGE_SPLIT.join(page.raw_text for page in pages),
        duration_ms=duration_ms,
        file_name=file_name,
        file_size=file_size,
        model=model,
        image_width=first.image_width,
        image_height=first.image_height,
        finish_reason="length" if any(page.finish_reason == "length" for page in pages) else "stop",
        regions=[region for page in pages for region in page.regions],
        run_id=run_id,
        annotated_image_url=first.annotated_image_url,
        pages=pages,
        timings=timings,
        layout=first.layout,
        is_pdf=is_pdf,
        created_at=created_at or utc_now_iso(),
        history_id=None,
    )
