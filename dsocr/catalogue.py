"""What the service knows of DeepSeek-OCR: its model families, their resolution modes (upstream's sizes and
vision-token counts), upstream's prompts, its end-of-sentence token and how an answer can finish."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

# Upstream's end-of-sentence token (full-width bars); it ends every complete answer.
EOS_TOKEN = "<｜end▁of▁sentence｜>"
# "stop": the model ended its answer; "length": it hit DEEPSEEK_OCR_MAX_NEW_TOKENS.
FinishReason = Literal["stop", "length"]
# The seed's default prompt.
DEFAULT_PROMPT = "<image>\n<|grounding|>Convert the document to markdown."

# Both encoders cut the image into 16 px patches and downsample them 4x per side (upstream deepencoder):
# a view of S pixels becomes (S / 64)^2 vision tokens.
PATCH_SIZE = 16
DOWNSAMPLE_RATIO = 4


def tokens_for_view(size: int) -> int:
    side = -(-size // (PATCH_SIZE * DOWNSAMPLE_RATIO))
    return side * side


class ModelFamily(str, Enum):
    v1 = "deepseek-ocr"  # deepseek-ai/DeepSeek-OCR
    v2 = "deepseek-ocr-2"  # deepseek-ai/DeepSeek-OCR-2 and deepseek-community/DeepSeek-OCR-2


@dataclass(frozen=True)
class Mode:
    name: str
    base_size: int  # the global view, in pixels
    image_size: int  # the tile size when cropping, else the view size
    crop_mode: bool
    min_tiles: int
    max_tiles: int
    description: str
    label: str  # for people, as the seed's frontend shows it on the mode card
    speed: str  # short words, relative to the family's other modes
    quality: str

    @property
    def global_tokens(self) -> int:
        return tokens_for_view(self.base_size)

    @property
    def tile_tokens(self) -> int:
        return tokens_for_view(self.image_size)

    @property
    def max_useful_side(self) -> int:
        """The most pixels a side of a page can feed this mode: the global view, or the longest row of tiles."""
        return max(self.base_size, self.image_size * self.max_tiles if self.crop_mode else 0)

    @property
    def max_vision_tokens(self) -> int:
        """The most vision tokens one page costs in this mode (global view plus the most tiles)."""
        return self.global_tokens + (self.tile_tokens * self.max_tiles if self.crop_mode else 0)


def tile_grid(mode: Mode, width: int, height: int) -> tuple[int, int]:
    """Columns and rows of tiles a page is cut into (upstream's dynamic preprocessing): the grid of
    `min_tiles`..`max_tiles` tiles whose shape is closest to the page's; (0, 0) without cropping or for a page
    that fits in one tile."""
    if not mode.crop_mode or (width <= mode.image_size and height <= mode.image_size):
        return 0, 0
    aspect = width / height
    grids = sorted(
        {(cols, rows) for cols in range(1, mode.max_tiles + 1) for rows in range(1, mode.max_tiles + 1)
         if mode.min_tiles <= cols * rows <= mode.max_tiles},
        key=lambda grid: grid[0] * grid[1],
    )
    best, best_difference = grids[0], float("inf")
    for cols, rows in grids:
        difference = abs(aspect - cols / rows)
        if difference < best_difference:
            best, best_difference = (cols, rows), difference
        elif difference == best_difference and width * height > 0.5 * mode.image_size**2 * cols * rows:
            best = (cols, rows)
    return best


def vision_tokens(mode: Mode, width: int, height: int) -> int:
    """The vision tokens a page of `width` x `height` pixels costs in `mode`."""
    cols, rows = tile_grid(mode, width, height)
    return mode.global_tokens + mode.tile_tokens * cols * rows


def strip_eos(raw: str) -> str:
    """The answer without the end-of-sentence token that ends a complete one, and without surrounding space."""
    return raw.strip().removesuffix(EOS_TOKEN).strip()


def _fixed(name: str, size: int, what: str, speed: str, quality: str) -> Mode:
    description = f"{size}x{size} single view, {tokens_for_view(size)} vision tokens; {what}"
    return Mode(name, size, size, False, 0, 0, description, f"{name.capitalize()} ({size}x{size})", speed, quality)


GUNDAM_LABEL = "Gundam (dynamic tiles)"

# Upstream README table (DeepSeek-OCR v1). Gundam tiles: 2..9 allowed upstream, 6 by default.
V1_MODES = (
    _fixed("tiny", 512, "for sparse pages", "fastest", "basic"),
    _fixed("small", 640, "for simple pages", "fast", "good"),
    _fixed("base", 1024, "general documents", "medium", "high"),
    _fixed("large", 1280, "dense or small print", "slowest", "highest"),
    Mode("gundam", 1024, 640, True, 2, 6,
         "1024 global view + 2-6 tiles of 640: 256 + 100 per tile vision tokens; large or dense pages",
         GUNDAM_LABEL, "medium", "higher"),
)

# DeepSeek-OCR-2 has learned queries for 1024 (256 tokens) and 768 (144 tokens) views only.
V2_MODES = (
    _fixed("base", 1024, "general documents", "fast", "high"),
    Mode("gundam", 1024, 768, True, 2, 6,
         "1024 global view + 2-6 tiles of 768: 256 + 144 per tile vision tokens; large or dense pages",
         GUNDAM_LABEL, "medium", "highest"),
)

FAMILY_MODES: dict[ModelFamily, tuple[Mode, ...]] = {ModelFamily.v1: V1_MODES, ModelFamily.v2: V2_MODES}
ALL_MODE_NAMES = sorted({mode.name for modes in FAMILY_MODES.values() for mode in modes})
# vLLM's DeepSeek-OCR processors fix the image sizes per server (module constants), at gundam's.
VLLM_MODE_NAMES = ("gundam",)


def served_modes(family: ModelFamily, through_vllm: bool = False) -> tuple[Mode, ...]:
    """The modes a model of `family` reads pages in: all of its family's in this process, gundam only through
    vLLM. The one list of them: what /health and /api/modes show, what requests and DEEPSEEK_OCR_DEFAULT_MODE are
    checked against."""
    modes = FAMILY_MODES[family]
    return tuple(mode for mode in modes if mode.name in VLLM_MODE_NAMES) if through_vllm else modes


@dataclass(frozen=True)
class PromptPreset:
    name: str
    prompt: str


# The prompts of the upstream README.
PROMPT_PRESETS = (
    PromptPreset("document", DEFAULT_PROMPT),
    PromptPreset("ocr", "<image>\n<|grounding|>OCR this image."),
    PromptPreset("free", "<image>\nFree OCR."),
    PromptPreset("figure", "<image>\nParse the figure."),
    PromptPreset("describe", "<image>\nDescribe this image in detail."),
    PromptPreset("locate", "<image>\nLocate <|ref|>xxxx<|/ref|> in the image."),
)
