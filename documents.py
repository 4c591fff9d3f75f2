"""Turns uploaded bytes into page images: identifies the type by content, decodes under a pixel budget."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps

from errors import BadUpload, PayloadTooLarge, UnsupportedType

# Magic numbers of the accepted raster formats, keyed to Pillow's format names.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
ACCEPTED = "PNG, JPEG, WebP, BMP, TIFF or GIF"
# Transparent areas are laid on white, as on paper; a black fill would hide black text.
BACKGROUND = (255, 255, 255)


def sniff(data: bytes) -> str | None:
    """Pillow's format name for `data`, from its first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in SIGNATURES if data.startswith(magic)), None)


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """An RGB image upright by its EXIF orientation; the pixel count is checked before anything is decoded."""
    if not data:
        raise BadUpload("The uploaded file is empty")
    fmt = sniff(data)
    if fmt is None:
        raise UnsupportedType(f"Unsupported file type: upload a {ACCEPTED} image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            width, height = image.size
            if width * height > max_pixels:
                raise PayloadTooLarge(
                    f"Image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} "
                    "(DEEPSEEK_OCR_MAX_IMAGE_PIXELS)"
                )
            image.load()  # the first frame of an animation
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"Image has too many pixels; the limit is {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadUpload(f"Cannot decode the {fmt} image (corrupt or truncated): {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        page = Image.new("RGB", rgba.size, BACKGROUND)
        page.paste(rgba, mask=rgba.getchannel("A"))
        return page
    return image.convert("RGB")
