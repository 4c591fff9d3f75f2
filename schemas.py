"""The JSON the service sends: camelCase field names, as in the seed's payload; where the seed's frontend reads a
field under another spelling (the modes' `base_size`, `maxImageMb`), that spelling."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from dsocr.catalogue import FinishReason


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorOut(CamelModel):
    """Every error answer (4xx and 5xx), and the `error` event of a stream."""

    detail: str = Field(description="What went wrong, and what to change", examples=["Unknown mode 'huge' for deepseek-ocr-2: valid modes are tiny, small, base, large, gundam"])
    request_id: str = Field(description="The request's id (X-Request-ID): find its log line by it", examples=["7f3c2a9e4b1d4e0c8a6f5b2d1c0e9a8b"])


class HealthReady(CamelModel):
    status: Literal["ok"] = "ok"
    model_loaded: Literal[True] = True  # the seed backend's field
    modes: list[str]  # the seed backend's field: the loaded family's mode names
    model: str
    engine: str
    family: str
    device: str
    dtype: str
    attn_implementation: str
    demo: bool = False  # DEEPSEEK_OCR_MODEL_PATH=demo: a tiny random checkpoint, whose text is random


class HealthNotReady(CamelModel):
    status: Literal["loading", "draining", "error"]
    model_loaded: Literal[False] = False
    modes: list[str]  # known as soon as the checkpoint's config.json is read; empty before
    detail: str
    demo: bool = False  # known from DEEPSEEK_OCR_MODEL_PATH before anything loads


class ModeInfo(BaseModel):
    """A mode as the seed's backend described it (its snake_case keys), plus `visionTokens`."""

    model_config = ConfigDict(populate_by_name=True)

    label: str
    description: str
    base_size: int
    image_size: int
    crop_mode: bool
    test_compress: bool = False  # upstream's infer option; the service never compresses
    speed: str
    quality: str
    vision_tokens: int = Field(alias="visionTokens")  # the most a page costs: global view plus the most tiles


class PromptInfo(CamelModel):
    name: str
    prompt: str


class ModesResponse(CamelModel):
    default_prompt: str
    modes: dict[str, ModeInfo]  # keyed by mode name, the default mode first
    max_image_mb: float  # `maxImageMb`, the seed's spelling
    engine: str
    family: str
    default_mode: str
    prompts: list[PromptInfo]


class RegionOut(CamelModel):
    label: str
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the (upright) page image
    text: str
    page: int  # from 1


class TimingsOut(CamelModel):
    queue_ms: float  # waiting for a batch (for a document: the longest any page waited)
    inference_ms: float  # the model's time on the batch(es) that ran these pages


class LayoutBox(CamelModel):
    index: int  # position among its item's boxes
    absolute: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the page image
    normalized: tuple[float, float, float, float]  # the same, as fractions of the page's width and height


class LayoutItem(CamelModel):
    id: str  # "{label}-{n}", n counting the page's items from 0
    label: str
    boxes: list[LayoutBox]


class PageLayout(CamelModel):
    """A page's regions grouped as the model wrote them: one item per grounding tag, with all its boxes."""

    width: int
    height: int
    items: list[LayoutItem]


class PageOut(CamelModel):
    page: int  # the PDF's page number, from 1
    page_index: int  # position in `pages`, from 0
    text: str
    raw_text: str
    regions: list[RegionOut]
    image_width: int
    image_height: int
    duration_ms: float
    finish_reason: FinishReason
    generated_tokens: int = Field(0, description="Tokens the model generated for the page (in the reading kept)")
    attempts: int = Field(1, description="Times the page was read: more than 1 when it looped and was read again")
    repetition_cut: bool = Field(False, description="The text ended in a span repeated over and over (a loop), "
                                                    "cut to its first copy")
    annotated_image_url: str | None
    timings: TimingsOut
    layout: PageLayout
    image_data: str | None  # JPEG data URL of the page as the model saw it, downscaled; None when turned off


class OcrResponse(CamelModel):
    mode: str
    prompt: str
    text: str
    raw_text: str
    duration_ms: float
    file_name: str
    file_size: int
    model: str
    image_width: int  # of the first page for a PDF
    image_height: int
    finish_reason: FinishReason  # "length" when any page hit the token cap
    regions: list[RegionOut]
    run_id: str
    annotated_image_url: str | None  # of the first page
    pages: list[PageOut]
    timings: TimingsOut
    layout: PageLayout  # of the first page
    is_pdf: bool
    created_at: str  # ISO 8601, UTC
    history_id: str | None  # where /api/history/{id} finds this result again; None when history is off


class TaskCreated(CamelModel):
    task_id: str


class HistoryItem(CamelModel):
    id: str
    created_at: str
    file_name: str
    file_size: int
    mode: str
    duration_ms: float
    pages: int  # how many pages were read
    is_pdf: bool


class HistoryList(CamelModel):
    items: list[HistoryItem]  # newest first
