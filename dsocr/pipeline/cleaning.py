"""Turns the model's raw output into clean markdown and layout regions, by upstream's rules.

Grounding prompts make the model write `<|ref|>LABEL<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|>` before
each block. Upstream parses the boxes with `eval`; here they are parsed as JSON data and dropped when they are
anything but lists of four finite numbers.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Callable

from dsocr.catalogue import strip_eos

# Boxes are on a 0..999 grid whatever the image size (upstream: int(v / 999 * size)).
BOX_SCALE = 999
GROUNDING = re.compile(r"<\|ref\|>(.*?)<\|/ref\|><\|det\|>(.*?)<\|/det\|>", re.DOTALL)
FIGURE_LABEL = "image"
EXTRA_NEWLINES = re.compile(r"\n{3,}")
# Upstream's LaTeX replacements for symbols markdown renderers lack.
LATEX_REPLACEMENTS = (("\\coloneqq", ":="), ("\\eqqcolon", "=:"))

Box = tuple[int, int, int, int]


@dataclass
class Region:
    label: str
    bbox: Box  # pixels of the page image: x1, y1, x2, y2
    text: str


@dataclass
class Block:
    """One grounding tag: a label with all the boxes of its `<|det|>` (at least one) and the text after it."""

    label: str
    boxes: list[Box]
    text: str


@dataclass
class CleanedPage:
    text: str
    blocks: list[Block] = field(default_factory=list)
    figures: list[Box] = field(default_factory=list)  # figure N of the text's links is figures[N]

    @property
    def regions(self) -> list[Region]:
        """One region per box, in output order."""
        return [Region(block.label, box, block.text) for block in self.blocks for box in block.boxes]


def upstream_figure_link(index: int) -> str:
    return f"images/{index}.jpg"


def clean_text(text: str) -> str:
    for latex, plain in LATEX_REPLACEMENTS:
        text = text.replace(latex, plain)
    return EXTRA_NEWLINES.sub("\n\n", text).strip()


def parse_boxes(payload: str, width: int, height: int) -> list[Box]:
    """Pixel boxes from a `<|det|>` payload; whatever is not a list of 4 finite numbers is dropped."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return []
    if not isinstance(data, list):
        return []
    candidates = data if data and all(isinstance(item, list) for item in data) else [data]
    boxes = []
    for candidate in candidates:
        box = _pixel_box(candidate, width, height)
        if box is not None:
            boxes.append(box)
    return boxes


def _pixel_box(candidate: object, width: int, height: int) -> Box | None:
    if not isinstance(candidate, list) or len(candidate) != 4:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in candidate):
        return None
    x1, y1, x2, y2 = (min(max(float(v), 0.0), BOX_SCALE) for v in candidate)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    box = (
        int(x1 / BOX_SCALE * width),
        int(y1 / BOX_SCALE * height),
        int(x2 / BOX_SCALE * width),
        int(y2 / BOX_SCALE * height),
    )
    return box if box[2] > box[0] and box[3] > box[1] else None


def clean_output(
    raw: str, width: int, height: int, figure_link: Callable[[int], str] = upstream_figure_link
) -> CleanedPage:
    """Markdown without grounding tags (figures become links), plus each region with the text that follows it."""
    text = strip_eos(raw)
    matches = list(GROUNDING.finditer(text))
    parts = [text[: matches[0].start()] if matches else text]
    page = CleanedPage(text="")
    for index, match in enumerate(matches):
        label = match.group(1).strip()
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        following = text[match.end() : end]
        boxes = parse_boxes(match.group(2), width, height)
        if boxes:
            page.blocks.append(Block(label, boxes, clean_text(following)))
        if label == FIGURE_LABEL and boxes:
            for box in boxes:
                parts.append(f"![]({figure_link(len(page.figures))})\n")
                page.figures.append(box)
        parts.append(following)
    page.text = clean_text("".join(parts))
    return page
