"""GET /api/modes: the loaded family's modes in the seed's shape, the prompts and the upload limit."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from dsocr.api.dependencies import get_settings, ready_info
from dsocr.api.openapi import API_ERRORS, errors
from dsocr.catalogue import PROMPT_PRESETS
from ocr_engine import EngineInfo
from schemas import ModeInfo, ModesResponse, PromptInfo
from settings import Settings

router = APIRouter(tags=["service"], responses=errors(*API_ERRORS))


@router.get("/api/modes", response_model=ModesResponse)
async def api_modes(
    info: EngineInfo = Depends(ready_info), settings: Settings = Depends(get_settings)
) -> ModesResponse:
    """The seed's shape: `modes` is an object keyed by mode name (the default mode first), `maxImageMb` the
    upload limit."""
    ordered = sorted(info.modes, key=lambda mode: mode.name != settings.ocr_default_mode)
    return ModesResponse(
        default_prompt=settings.ocr_default_prompt,
        modes={
            mode.name: ModeInfo(
                label=mode.label,
                description=mode.description,
                base_size=mode.base_size,
                image_size=mode.image_size,
                crop_mode=mode.crop_mode,
                speed=mode.speed,
                quality=mode.quality,
                vision_tokens=mode.max_vision_tokens,
            )
            for mode in ordered
        },
        max_image_mb=settings.max_image_mb,
        engine=info.engine,
        family=info.family.value,
        default_mode=settings.ocr_default_mode,
        prompts=[PromptInfo(name=preset.name, prompt=preset.prompt) for preset in PROMPT_PRESETS],
    )
