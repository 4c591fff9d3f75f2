"""From page images to the response: each page through the engine, its output cleaned, its artifacts saved."""

from __future__ import annotations

import asyncio
import time

from artifacts import figure_path, save_page_artifacts
from cleaning import clean_output
from documents import Document, PageImage
from modes import Mode
from ocr_engine import OcrEngine, PageRequest
from runs import Run
from scheduler import InferenceRunner
from schemas import OcrResponse, PageOut, RegionOut

# Upstream's PDF script joins pages with this line.
PAGE_SPLIT = "\n\n<--- Page Split --->\n\n"


def page_prefix(document: Document, page: PageImage) -> str:
    """Where a page's artifacts go inside its run: the top for an image, pages/N/ for a PDF page."""
    return f"pages/{page.number}/" if document.is_pdf else ""


async def read_page(
    document: Document, page: PageImage, prompt: str, mode: Mode, engine: OcrEngine, runner: InferenceRunner, run: Run
) -> PageOut:
    started = time.perf_counter()
    prefix = page_prefix(document, page)
    work_dir = run.path / prefix
    work_dir.mkdir(parents=True, exist_ok=True)
    result = await runner.run(engine, PageRequest(image=page.image, prompt=prompt, mode=mode, work_dir=work_dir))
    image = page.image
    cleaned = clean_output(result.raw_text, image.width, image.height, lambda i: run.url(figure_path(prefix, i)))
    annotated = await asyncio.to_thread(save_page_artifacts, run.path, prefix, image, cleaned)
    return PageOut(
        page=page.number,
        text=cleaned.text,
        raw_text=result.raw_text,
        regions=[RegionOut(label=r.label, bbox=r.bbox, text=r.text, page=page.number) for r in cleaned.regions],
        image_width=image.width,
        image_height=image.height,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        finish_reason=result.finish_reason,
        annotated_image_url=run.url(annotated) if annotated else None,
    )


async def read_document(
    document: Document, prompt: str, mode: Mode, engine: OcrEngine, runner: InferenceRunner, run: Run
) -> list[PageOut]:
    """All pages, submitted together so that the scheduler can run them side by side; results in page order."""
    tasks = [asyncio.ensure_future(read_page(document, page, prompt, mode, engine, runner, run))
             for page in document.pages]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:  # one page failed, or the request was cancelled: the other pages are not wanted
        for task in tasks:
            task.cancel()
        raise


def document_response(
    pages: list[PageOut], *, mode: Mode, prompt: str, file_name: str, file_size: int, model: str, run: Run,
    duration_ms: float,
) -> OcrResponse:
    """The seed's payload for the whole upload: pages joined as upstream joins them, the first page's size."""
    first = pages[0]
    return OcrResponse(
        mode=mode.name,
        prompt=prompt,
        text=PAGE_SPLIT.join(page.text for page in pages),
        raw_text=PAGE_SPLIT.join(page.raw_text for page in pages),
        duration_ms=round(duration_ms, 1),
        file_name=file_name,
        file_size=file_size,
        model=model,
        image_width=first.image_width,
        image_height=first.image_height,
        finish_reason="length" if any(page.finish_reason == "length" for page in pages) else "stop",
        regions=[region for page in pages for region in page.regions],
        run_id=run.id,
        annotated_image_url=first.annotated_image_url,
        pages=pages,
    )
