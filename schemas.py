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


class OcrResponse(CamelModel):
    mode: str
    prompt: str
    text: str
    raw_text: str
    duration_ms: float
    file_name: str
    file_size: int
    model: str
    image_width: int
    image_height: int
    finish_reason: Literal["stop", "length"]
