"""A page made ready for the model in one trip: decoded and checked, what the model is handed (its pixels for a model
in this process; for a model server its file, the upload's own bytes when the page needed no change, else one fast
lossless TIFF), and its preview. For a model server this runs in a worker process (dsocr.pipeline.pdf_workers), so
that the server's process only moves bytes; for a model in this process, on a worker thread (no copy between
processes of pixels the model reads here)."""

from __future__ import annotations

import base64
import io

from PIL import Image

from dsocr.pipeline.documents import SENT_AS_UPLOADED, PageImage, decode_upload
from ocr_engine import EncodedImage

# Previews are for the screen: even a dense A4 page stays near half a megabyte of data URL.
PREVIEW_MAX_SIDE = 1280
PREVIEW_QUALITY = 70


def prepare_upload(data: bytes, max_pixels: int, max_side: int, for_server: bool, previews: bool) -> PageImage:
    """An uploaded image as a page (dsocr.pipeline.documents.decode_upload checks and decodes it)."""
    decoded = decode_upload(data, max_pixels, max_side)
    own = data if decoded.as_uploaded and decoded.format in SENT_AS_UPLOADED else None
    return prepare(decoded.image, for_server, previews, own, decoded.format)


def prepare(image: Image.Image, for_server: bool, previews: bool, own: bytes | None = None,
            fmt: str = "PNG") -> PageImage:
    """`image` as a page: for a model server its file (`own`, the upload's bytes in format `fmt`, when given;
    else a lossless TIFF of the pixels), the pixels themselves otherwise."""
    page = PageImage(image.width, image.height, preview=page_preview(image) if previews else None)
    if not for_server:
        page.image = image
    elif own is not None:
        page.encoded = EncodedImage(own, SENT_AS_UPLOADED[fmt], image.width, image.height)
    else:
        page.encoded = EncodedImage.lossless(image)
    return page


def page_preview(image: Image.Image) -> str:
    """The page as the model reads it, as a JPEG data URL of at most PREVIEW_MAX_SIDE pixels a side: shrunk by a
    whole factor (Image.reduce averages each square of pixels, an order of magnitude cheaper than resampling)."""
    factor = -(-max(image.size) // PREVIEW_MAX_SIDE)
    preview = image.reduce(factor) if factor > 1 else image
    buffer = io.BytesIO()
    preview.save(buffer, "JPEG", quality=PREVIEW_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
