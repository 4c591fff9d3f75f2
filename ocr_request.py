"""Checks the text fields of an OCR request: the mode against the loaded family, the prompt against limits."""

from __future__ import annotations

from errors import InvalidField
from modes import Mode
from ocr_engine import EngineInfo

IMAGE_PLACEHOLDER = "<image>"


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
