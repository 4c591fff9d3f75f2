"""The JSON the service sends: camelCase field names, as in the seed's payload."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class HealthReady(CamelModel):
    status: Literal["ok"] = "ok"
    model: str
    engine: str
    family: str
    device: str
    dtype: str
    attn_implementation: str


class HealthNotReady(CamelModel):
    status: Literal["loading", "error"]
    detail: str


class ModeInfo(CamelModel):
    name: str
    base_size: int
    image_size: int
    crop_mode: bool
    vision_tokens: int  # the most a page costs in this mode: global view plus the most tiles
    description: str


class PromptInfo(CamelModel):
    name: str
    prompt: str


class ModesResponse(CamelModel):
    engine: str
    family: str
    modes: list[ModeInfo]
    default_mode: str
    default_prompt: str
    prompts: list[PromptInfo]
    max_image_mb: float = Field(alias="maxImageMB")  # the seed's spelling


FinishReason = Literal["stop", "length"]


class RegionOut(CamelModel):
    label: str
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the (upright) page image
    text: str
    page: int  # from 1


class TimingsOut(CamelModel):
    queue_ms: float  # waiting for a batch (for a document: the longest any page waited)
    inference_ms: float  # the model's time on the batch(es) that ran these pages


class PageOut(CamelModel):
    page: int
    text: str
    raw_text: str
    regions: list[RegionOut]
    image_width: int
    image_height: int
    duration_ms: float
    finish_reason: FinishReason
    annotated_image_url: str | None
    timings: TimingsOut


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
