"""A job's page, read from its stored upload: decoded (or rendered from the PDF, in a PDF worker), read through
the page submitter, cleaned, its artifacts saved in the document's folder under DEEPSEEK_OCR_DATA_DIR/job-files
(served at /api/runs/{runId}/..., kept as long as the job)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsocr.catalogue import Mode
from dsocr.errors import InvalidField
from dsocr.pipeline.documents import Document
from dsocr.pipeline.ocr_request import OcrInput, ready_image
from dsocr.pipeline.pages import read_page
from dsocr.pipeline.pdf_workers import PdfWorkers
from dsocr.pipeline.runs import RUN_ID, RunStore, Run
from dsocr.serving.submitter import PageSubmitter
from settings import Settings

JOB_FILES = "job-files"


class JobFiles(RunStore):
    """The folders of jobs' documents: like the runs of /api/ocr, but removed with their job, never by age."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir / JOB_FILES, ttl_s=float("inf"), max_bytes=2**62)

    def folder(self, run_id: str, root_path: str = "") -> Run:
        path = self.root / run_id
        path.mkdir(parents=True, exist_ok=True)
        return Run(run_id, path, root_path.rstrip("/"))

    def remove(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            if RUN_ID.fullmatch(run_id):
                shutil.rmtree(self.root / run_id, ignore_errors=True)

    def sweep(self) -> None:  # jobs are swept by the job store, files with them
        return


@dataclass
class StoredPage:
    """Which page of which stored document, and how to read it."""

    run_id: str
    is_pdf: bool
    page_number: int
    page_index: int
    mode: str
    prompt: str
    file_name: str = ""


class StoredPageReader:
    """Reads jobs' pages through the page submitter, in this process."""

    def __init__(self, submitter: PageSubmitter, settings: Settings, pdf_workers: PdfWorkers, files: JobFiles) -> None:
        self.submitter = submitter
        self.settings = settings
        self.pdf_workers = pdf_workers
        self.files = files

    def ready(self) -> bool:
        return self.submitter.status == "ready"

    def _mode(self, name: str) -> Mode:
        mode = next((mode for mode in self.submitter.modes if mode.name == name), None)
        if mode is None:
            raise InvalidField(f"Mode {name!r} is not served here (the model changed since the job was submitted)")
        return mode

    async def read(self, page: StoredPage, content: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        """The page's answer (as /api/ocr's `pages[]` has it) and its event's data."""
        settings = self.settings
        mode = self._mode(page.mode)
        if page.is_pdf:
            pdf = self.pdf_workers.document(content, settings.ocr_pdf_dpi, settings.ocr_max_image_pixels,
                                            mode.max_useful_side, self.submitter.through_vllm,
                                            settings.ocr_page_previews)
            document = Document(True, [page.page_number], pdf=pdf)
        else:
            image = await ready_image(content, mode, self.submitter, settings, self.pdf_workers)
            document = Document(False, [1], image=image)
        ocr = OcrInput(page.file_name, len(content), mode, page.prompt, document)
        run = self.files.folder(page.run_id, settings.ocr_root_path)
        out, _ = await read_page(ocr, 0, self.submitter, run, None, settings.ocr_page_previews, False)
        out.page_index = page.page_index
        result = out.model_dump(by_alias=True)
        event = {"page": out.page, "pageIndex": out.page_index, "text": out.text, "finishReason": out.finish_reason}
        return result, event
