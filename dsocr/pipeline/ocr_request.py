"""Checks an OCR request's form: the mode against the modes the model reads, the prompt against limits, the
document's pages."""

from __future__ import annotations

from dataclasses import dataclass

from dsocr.serving.workers import in_worker
from dsocr.catalogue import Mode
from dsocr.errors import InvalidField
from dsocr.pipeline.documents import Document, PageImage, is_pdf
from dsocr.pipeline.page_images import prepare_upload
from dsocr.pipeline.pdf_workers import PdfWorkers
from dsocr.serving.submitter import PageSubmitter
from ocr_engine import EngineInfo
from settings import Settings

IMAGE_PLACEHOLDER = "<image>"
OCR_TEXT_FIELDS = ("mode", "prompt", "pages", "task_id")


@dataclass
class UploadForm:
    filename: str
    data: bytes
    fields: dict[str, str]


def resolve_mode(requested: str | None, info: EngineInfo, default: str) -> Mode:
    name = (requested or "").strip().lower() or default
    mode = info.mode(name)
    if mode is None:
        valid = ", ".join(m.name for m in info.modes)
        raise InvalidField(f"Unknown mode {name!r} for {info.family.value}: valid modes are {valid}")
    return mode


def resolve_prompt(requested: str | None, default: str, max_chars: int) -> str:
    """The prompt to send: the default when none is given, always with exactly one `<image>`."""
    prompt = requested if requested and requested.strip() else default
    if len(prompt) > max_chars:
        raise InvalidField(f"Prompt is {len(prompt)} characters; the limit is {max_chars} (DEEPSEEK_OCR_MAX_PROMPT_CHARS)")
    count = prompt.count(IMAGE_PLACEHOLDER)
    if count == 0:
        return f"{IMAGE_PLACEHOLDER}\n{prompt}"
    if count > 1:
        raise InvalidField(f"Prompt must contain {IMAGE_PLACEHOLDER} at most once; it has {count}")
    return prompt


@dataclass
class OcrInput:
    """A request's upload, read and checked: everything the pipeline needs, nothing left to refuse."""

    file_name: str
    file_size: int
    mode: Mode
    prompt: str
    document: Document
    task_id: str | None = None  # a progress task (POST /api/task/create) that follows this request


def check_prompt_tokens(prompt: str, submitter: PageSubmitter, max_tokens: int) -> None:
    """A prompt short in characters can be long in tokens (every "𝔸" is several): limited in tokens too, since a
    batch pads every prompt to its longest."""
    tokens = submitter.count_tokens(prompt)
    if tokens is not None and tokens > max_tokens:
        raise InvalidField(f"Prompt is {tokens} tokens; the limit is {max_tokens} (DEEPSEEK_OCR_MAX_PROMPT_TOKENS)")


async def ready_image(
    data: bytes, mode: Mode, submitter: PageSubmitter, settings: Settings, pdf_workers: PdfWorkers
) -> PageImage:
    """An uploaded image, decoded and made ready for the model (dsocr.pipeline.page_images): in a worker process when
    it goes to a model server, which wants a file (only bytes cross back); on a worker thread when the model is in
    this process, which wants the pixels (no copy between processes)."""
    args = (data, settings.ocr_max_image_pixels, mode.max_useful_side)
    if submitter.through_vllm:
        return await pdf_workers.image(*args, True, settings.ocr_page_previews)
    return await in_worker(prepare_upload, *args, False, settings.ocr_page_previews)


async def check_ocr_request(
    form: UploadForm, submitter: PageSubmitter, settings: Settings, pdf_workers: PdfWorkers
) -> OcrInput:
    """The form's mode, prompt and document, checked: an image decoded off the event loop (ready_image), a PDF opened
    and its page selection checked in a PDF worker (its pages are rendered later, each when its turn comes). Pages are
    never larger than the mode can use."""
    # Admitted while the model was ready: its info stands while the model drains (the admitted work goes on).
    info = submitter.info if submitter.info is not None else submitter.ready_info()
    mode = resolve_mode(form.fields.get("mode"), info, settings.ocr_default_mode)
    prompt = resolve_prompt(form.fields.get("prompt"), settings.ocr_default_prompt, settings.ocr_max_prompt_chars)
    await in_worker(check_prompt_tokens, prompt, submitter, settings.ocr_max_prompt_tokens)
    if form.data and is_pdf(form.data):
        pdf = pdf_workers.document(form.data, settings.ocr_pdf_dpi, settings.ocr_max_image_pixels, mode.max_useful_side,
                                   submitter.through_vllm, settings.ocr_page_previews)
        numbers = await pdf.select(form.fields.get("pages"), settings.ocr_max_pdf_pages)
        document = Document(True, numbers, pdf=pdf)
    else:
        image = await ready_image(form.data, mode, submitter, settings, pdf_workers)
        document = Document(False, [1], image=image)
    return OcrInput(form.filename, len(form.data), mode, prompt, document, form.fields.get("task_id"))
