"""Files a finished page leaves for the client: its figures cropped from the page, and the page with every
layout box drawn on it (upstream's images/N.jpg and result_with_boxes.jpg); and a small preview of the page."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

from PIL import Image, ImageDraw

from dsocr.pipeline.cleaning import CleanedPage

ANNOTATED_NAME = "result_with_boxes.jpg"
JPEG_QUALITY = 90
# Upstream draws titles thicker than other blocks.
TITLE_WIDTH = 4
BOX_WIDTH = 2
# Previews are for the screen: even a dense A4 page stays near half a megabyte of data URL.
PREVIEW_MAX_SIDE = 1280
PREVIEW_QUALITY = 70


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


def page_preview(image: Image.Image) -> str:
    """The page as the model saw it, as a JPEG data URL of at most PREVIEW_MAX_SIDE pixels a side."""
    preview = image.copy()
    preview.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=PREVIEW_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
