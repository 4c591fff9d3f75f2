"""Files a finished page leaves for the client: its figures cropped from the page, and the page with every
layout box drawn on it (upstream's images/N.jpg and result_with_boxes.jpg). The page's preview is made with the
page (dsocr.pipeline.page_images)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image, ImageDraw

from dsocr.pipeline.cleaning import CleanedPage

ANNOTATED_NAME = "result_with_boxes.jpg"
JPEG_QUALITY = 90
# Upstream draws titles thicker than other blocks.
TITLE_WIDTH = 4
BOX_WIDTH = 2


def figure_path(prefix: str, index: int) -> str:
    return f"{prefix}images/{index}.jpg"


def annotated_path(prefix: str) -> str:
    return f"{prefix}{ANNOTATED_NAME}"


def save_page_artifacts(run_dir: Path, prefix: str, image: Image.Image, page: CleanedPage) -> str | None:
    """Writes the figure crops and, when the page has regions, the annotated page; returns the latter's path."""
    for index, box in enumerate(page.figures):
        target = run_dir / figure_path(prefix, index)
        target.parent.mkdir(parents=True, exist_ok=True)
        image.crop(box).save(target, "JPEG", quality=JPEG_QUALITY)
    if not page.regions:
        return None
    target = run_dir / annotated_path(prefix)
    target.parent.mkdir(parents=True, exist_ok=True)
    draw_regions(image, page).save(target, "JPEG", quality=JPEG_QUALITY)
    return annotated_path(prefix)


def draw_regions(image: Image.Image, page: CleanedPage) -> Image.Image:
    annotated = image.copy()
    draw = ImageDraw.Draw(annotated)
    for region in page.regions:
        color = _label_color(region.label)
        width = TITLE_WIDTH if region.label == "title" else BOX_WIDTH
        draw.rectangle(region.bbox, outline=color, width=width)
        x1, y1 = region.bbox[0], region.bbox[1]
        label_box = draw.textbbox((x1, y1), region.label)
        text_height = label_box[3] - label_box[1] + 4
        origin = (x1, max(0, y1 - text_height))
        draw.rectangle(draw.textbbox(origin, region.label), fill=(255, 255, 255))
        draw.text(origin, region.label, fill=color)
    return annotated


def _label_color(label: str) -> tuple[int, int, int]:
    """A stable, fairly dark colour per label (upstream picks random ones)."""
    digest = hashlib.sha256(label.encode()).digest()
    return digest[0] % 200, digest[1] % 200, digest[2] % 200
