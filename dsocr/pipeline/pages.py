"""From checked input to the response: each page through the page submitter, its output cleaned, its artifacts
saved."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable


from dsocr.serving.workers import in_worker
from dsocr.pipeline.artifacts import figure_path, save_page_artifacts
from dsocr.pipeline.cleaning import CleanedPage, clean_output
from dsocr.pipeline.documents import Document, PageImage
from dsocr.pipeline.ocr_request import OcrInput
from dsocr.pipeline.runs import Run
from dsocr.serving.submitter import PageSubmitter
from ocr_engine import PageRequest, Timings
from schemas import LayoutBox, LayoutItem, OcrResponse, PageLayout, PageOut, RegionOut, TimingsOut

# Upstream's PDF script joins pages with this line.
PAGE_SPLIT = "\n\n<--- Page Split --->\n\n"

# Progress of a request for streaming clients: (event name, data), e.g. ("delta", {"page": 1, "text": "..."}).
EventSink = Callable[[str, dict], None]
# Normalized layout coordinates keep this many decimals.
NORMALIZED_DIGITS = 6


# Pages of one document that are rendered and not yet finished, at most: enough to fill batches, without holding
# a long document's page images while they wait.
PAGES_IN_FLIGHT = 8


def page_prefix(document: Document, number: int) -> str:
    """Where a page's artifacts go inside its run: the top for an image, pages/N/ for a PDF page."""
    return f"pages/{number}/" if document.is_pdf else ""


def page_layout(cleaned: CleanedPage, width: int, height: int) -> PageLayout:
    """The page's regions as the web frontend draws them: one item per grounding tag, boxes in pixels and as
    fractions of the page."""
    items = []
    for number, block in enumerate(cleaned.blocks):
        boxes = [
            LayoutBox(
                index=index,
                absolute=box,
                normalized=tuple(round(v / side, NORMALIZED_DIGITS) for v, side in zip(box, (width, height) * 2)),
            )
            for index, box in enumerate(block.boxes)
        ]
        items.append(LayoutItem(id=f"{block.label}-{number}", label=block.label, boxes=boxes))
    return PageLayout(width=width, height=height, items=items)


async def _save_artifacts(run_dir: Path, prefix: str, page: PageImage, cleaned: CleanedPage) -> str | None:
    """The page's figures and annotated page, off the event loop; a page without regions (or figures) has none,
    and costs no trip (nor, for a page read by a model server, a decode)."""
    if not cleaned.regions and not cleaned.figures:
        return None
    return await in_worker(lambda: save_page_artifacts(run_dir, prefix, page.pixels(), cleaned))


async def read_page(
    ocr: OcrInput, index: int, submitter: PageSubmitter, run: Run, on_event: EventSink | None,
    previews: bool, stream_text: bool,
) -> tuple[PageOut, Timings]:
    started = time.perf_counter()
    number = ocr.document.numbers[index]
    image = await ocr.document.page(number)
    prefix = page_prefix(ocr.document, number)
    work_dir = run.path / prefix
    work_dir.mkdir(parents=True, exist_ok=True)
    request = PageRequest(image=image.image, prompt=ocr.prompt, mode=ocr.mode, work_dir=work_dir, encoded=image.encoded)
    on_progress = None
    if on_event:
        if stream_text:
            loop = asyncio.get_running_loop()
            # Text arrives on the model's worker thread; the sink lives on the event loop.
            request.on_text = lambda text: loop.call_soon_threadsafe(on_event, "delta", {"page": number, "text": text})
        on_progress = lambda name, data: on_event(name, {"page": number, **data})  # noqa: E731
    result, timings = await submitter.submit(request, on_progress)
    cleaned = clean_output(result.raw_text, image.width, image.height, lambda i: run.url(figure_path(prefix, i)))
    annotated = await _save_artifacts(run.path, prefix, image, cleaned)
    out = PageOut(
        page=number,
        page_index=index,
        text=cleaned.text,
        raw_text=result.raw_text,
        regions=[RegionOut(label=r.label, bbox=r.bbox, text=r.text, page=number) for r in cleaned.regions],
        image_width=image.width,
        image_height=image.height,
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        finish_reason=result.finish_reason,
        generated_tokens=result.generated_tokens,
        attempts=result.attempts,
        repetition_cut=result.repetition_cut,
        annotated_image_url=run.url(annotated) if annotated else None,
        timings=TimingsOut(queue_ms=timings.queue_ms, inference_ms=timings.inference_ms),
        layout=page_layout(cleaned, image.width, image.height),
        image_data=image.preview if previews else None,
    )
    return out, timings


async def read_document(
    ocr: OcrInput, submitter: PageSubmitter, run: Run, on_event: EventSink | None = None,
    previews: bool = True, stream_text: bool = False,
) -> OcrResponse:
    """All pages submitted together, so that they can share batches; the response has them in page order.
    `on_event` hears each page's queue events, its raw text as it is generated when `stream_text`, and
    ("progress", {"done", "total"}) each time a page is finished. At most PAGES_IN_FLIGHT pages are rendered
    and unfinished at a time, taken in page order."""
    started = time.perf_counter()
    total = len(ocr.document.numbers)
    done = 0
    in_flight = asyncio.Semaphore(PAGES_IN_FLIGHT)

    async def read(index: int) -> tuple[PageOut, Timings]:
        nonlocal done
        async with in_flight:
            outcome = await read_page(ocr, index, submitter, run, on_event, previews, stream_text)
        done += 1
        if on_event:
            on_event("progress", {"done": done, "total": total})
        return outcome

    tasks = [asyncio.ensure_future(read(index)) for index in range(total)]
    try:
        outcomes = await asyncio.gather(*tasks)
    except BaseException:  # one page failed, or the request was cancelled: the other pages are not wanted
        for task in tasks:
            task.cancel()
        raise
    pages = [page for page, _ in outcomes]
    batches = {timings.batch_id: timings.inference_ms for _, timings in outcomes}
    first = pages[0]
    return OcrResponse(
        mode=ocr.mode.name,
        prompt=ocr.prompt,
        text=PAGE_SPLIT.join(page.text for page in pages),
        raw_text=PAGE_SPLIT.join(page.raw_text for page in pages),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        file_name=ocr.file_name,
        file_size=ocr.file_size,
        model=submitter.model_name,
        image_width=first.image_width,
        image_height=first.image_height,
        finish_reason="length" if any(page.finish_reason == "length" for page in pages) else "stop",
        regions=[region for page in pages for region in page.regions],
        run_id=run.id,
        annotated_image_url=first.annotated_image_url,
        pages=pages,
        timings=TimingsOut(
            queue_ms=max(timings.queue_ms for _, timings in outcomes),
            inference_ms=round(sum(batches.values()), 1),
        ),
        layout=first.layout,
        is_pdf=ocr.document.is_pdf,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        history_id=None,
    )
