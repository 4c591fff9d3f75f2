"""Turns uploaded bytes into page images: identifies the type by content; decodes an image, or renders the
selected pages of a PDF, under a pixel budget."""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from PIL import ExifTags, Image, ImageOps

from dsocr.errors import BadUpload, InvalidField, PayloadTooLarge, UnsupportedType
from ocr_engine import EncodedImage

if TYPE_CHECKING:
    import pypdfium2 as pdfium

# PDF points are 1/72 inch.
POINTS_PER_INCH = 72
PDF_MAGIC = b"%PDF-"
# Readers accept the header anywhere in the first KiB (PDF 1.7, annex H).
PDF_HEADER_WINDOW = 1024
# ASCII digits only: \d would read "١" as 1.
PAGE_RANGE = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", re.ASCII)
ENCRYPT_KEY = re.compile(rb"/Encrypt\b")
# Longer numbers are past any PDF's end (and Python's int() refuses numbers of over 4300 digits).
MAX_PAGE_DIGITS = 9
EMPTY_PAGE_TREE = re.compile(rb"/Type\s*/Pages\b[^>]*?/Count\s+0\b|/Count\s+0\b[^>]*?/Type\s*/Pages\b")

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
ACCEPTED = "PNG, JPEG, WebP, BMP, TIFF or GIF image, or a PDF"
# Transparent areas are laid on white, as on paper; a black fill would hide black text.
BACKGROUND = (255, 255, 255)
# The most elongated page the model is given: narrower strips are padded (see readable()).
MAX_ASPECT = 20


def sniff(data: bytes) -> str | None:
    """Pillow's format name for `data`, from its first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in SIGNATURES if data.startswith(magic)), None)


class PdfPages(Protocol):
    """Where the pages of a PDF are rendered (dsocr.pipeline.pdf_workers): one call per page, when it is needed."""

    async def render(self, number: int) -> PageImage: ...


@dataclass(eq=False)
class PageImage:
    """A page ready for the model: its size; its pixels (a model in this process) or its file (a model server),
    never both where one will do; and its preview, a JPEG data URL (None when previews are off)."""

    width: int
    height: int
    image: Image.Image | None = None
    encoded: EncodedImage | None = None
    preview: str | None = None

    def pixels(self) -> Image.Image:
        """The page's pixels: the ones held, or its file decoded again (lossless, so the very same pixels)."""
        if self.image is not None:
            return self.image
        assert self.encoded is not None
        with Image.open(io.BytesIO(self.encoded.data)) as image:
            return image.convert("RGB")


@dataclass
class Document:
    """An upload, checked: the page numbers to read (from 1; [1] for an image) and how to get each page ready.
    An image is decoded at once; a PDF's pages are rendered when their turn comes, so that a long document waiting
    in the queue holds no page images."""

    is_pdf: bool
    numbers: list[int]
    image: PageImage | None = None
    pdf: PdfPages | None = None

    async def page(self, number: int) -> PageImage:
        if self.pdf is not None:
            return await self.pdf.render(number)
        assert self.image is not None
        return self.image


def is_pdf(data: bytes) -> bool:
    """A PDF header in the first KiB, where readers look for it; image signatures are checked first (a PNG may
    well hold "%PDF-" in its first KiB)."""
    return sniff(data) is None and PDF_MAGIC in data[:PDF_HEADER_WINDOW]


def parse_page_selection(spec: str | None, page_count: int) -> list[int]:
    """Pages (from 1) named by `spec` like "1-3,7", in document order; all pages when `spec` is empty."""
    if spec is None or not spec.strip():
        return list(range(1, page_count + 1))
    selected: set[int] = set()
    for part in spec.split(","):
        match = PAGE_RANGE.fullmatch(part)
        if match is None:
            raise InvalidField(f"Invalid page selection {spec!r}: use page numbers and ranges like 1-3,7")
        first = _page_number(match.group(1))
        last = _page_number(match.group(2) or match.group(1))
        if first < 1 or last < first:
            raise InvalidField(f"Invalid page range {part.strip()[:40]!r}: pages count from 1, ranges go upwards")
        if last > page_count:
            shown = (match.group(2) or match.group(1))[:MAX_PAGE_DIGITS + 1]
            raise InvalidField(f"Page {shown} does not exist: the PDF has {page_count} page(s)")
        selected.update(range(first, last + 1))
    return sorted(selected)


def _page_number(digits: str) -> int:
    return int(digits) if len(digits.lstrip("0")) <= MAX_PAGE_DIGITS else 10**MAX_PAGE_DIGITS


# What runs in a PDF worker process (dsocr.pipeline.pdf_workers): PDFium is not thread-safe, and a page that
# renders for minutes must be stoppable, so PDFium is only ever used there, one call at a time.

def open_pdf(data: bytes) -> "pdfium.PdfDocument":
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        raise _load_failure(data, exc.err_code) from None


def select_pages(document: "pdfium.PdfDocument", page_spec: str | None, max_pages: int) -> list[int]:
    """The numbers of the pages `page_spec` selects, checked against the document and the page limit."""
    if len(document) == 0:
        raise InvalidField("The PDF has no pages")
    numbers = parse_page_selection(page_spec, len(document))
    if len(numbers) > max_pages:
        raise PayloadTooLarge(
            f"{len(numbers)} pages selected; the limit is {max_pages} (DEEPSEEK_OCR_MAX_PDF_PAGES): "
            "send fewer with the 'pages' field, e.g. pages=1-10"
        )
    return numbers


def render_page(document: "pdfium.PdfDocument", number: int, dpi: float, max_pixels: int, max_side: int) -> Image.Image:
    """Page `number` (from 1) at `dpi`, but never larger than `max_side` pixels a side (the most the mode can use:
    a 591-byte PDF may ask for 7072x7072) nor than `max_pixels`."""
    page = document[number - 1]
    try:
        width_pt, height_pt = page.get_size()
        scale = min(dpi / POINTS_PER_INCH, max_side / max(width_pt, height_pt, 1))
        pixels = width_pt * scale * height_pt * scale
        if pixels > max_pixels:
            scale *= (max_pixels / pixels) ** 0.5
        bitmap = page.render(scale=scale)
        return readable(bitmap.to_pil().convert("RGB"))
    except Exception as exc:  # PDFium reports a page it cannot draw with various errors
        raise BadUpload(f"Cannot render page {number} of the PDF: {exc}") from None
    finally:
        page.close()


def _load_failure(data: bytes, err_code: int | None) -> Exception:
    """Why PDFium refused a document. Encrypted only when PDFium says so and the file has an encryption
    dictionary: PDFium's error code is process-wide and not reset by every failure (a PDF without pages can
    report the password error of an earlier document), and a broken file may merely contain the word."""
    import pypdfium2.raw as pdfium_c

    if EMPTY_PAGE_TREE.search(data):
        return InvalidField("The PDF has no pages")
    if err_code in (pdfium_c.FPDF_ERR_PASSWORD, pdfium_c.FPDF_ERR_SECURITY) and ENCRYPT_KEY.search(data):
        return InvalidField("The PDF is encrypted (password protected): upload an unprotected copy")
    return BadUpload("Cannot read the PDF: it is broken or truncated")


# Formats a model server decodes itself, by their MIME types: a page uploaded in one of them is sent as it came
# when it needed no change (dsocr.pipeline.page_images).
SENT_AS_UPLOADED = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# Modes whose pixels a server's RGB conversion leaves as this service's would (Pillow's convert("RGB")).
RGB_AS_IS = ("RGB", "L")


@dataclass
class DecodedUpload:
    image: Image.Image  # RGB, upright, within the size limits
    format: str  # Pillow's name of the upload's format
    as_uploaded: bool  # the pixels are the file's own: nothing turned, scaled, padded, flattened or converted


def decode_image(data: bytes, max_pixels: int, max_side: int) -> Image.Image:
    """The upload's page image (see decode_upload)."""
    return decode_upload(data, max_pixels, max_side).image


def decode_upload(data: bytes, max_pixels: int, max_side: int) -> DecodedUpload:
    """An RGB image upright by its EXIF orientation, no larger than `max_side` pixels a side (the most the mode can
    use: a 143 KB PNG may hold 7000x7000 pixels, and every later copy would be as large), and whether those are the
    file's pixels as a decoder reads them. The pixel count is checked before anything is decoded; a JPEG is decoded
    at a reduced scale where that still covers `max_side`."""
    if not data:
        raise BadUpload("The uploaded file is empty")
    fmt = sniff(data)
    if fmt is None:
        raise UnsupportedType(f"Unsupported file type: upload a {ACCEPTED}")
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
            if fmt == "JPEG":
                image.draft("RGB", (max_side, max_side))
            image.load()  # the first frame of an animation
            plain = image.mode in RGB_AS_IS and getattr(image, "n_frames", 1) == 1 and not _turned(image)
            ImageOps.exif_transpose(image, in_place=True)
            image = readable(_thumbnail(_to_rgb(image), max_side))
            return DecodedUpload(image, fmt, plain and image.size == (width, height))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PayloadTooLarge(f"Image has too many pixels; the limit is {max_pixels}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadUpload(f"Cannot decode the {fmt} image (corrupt or truncated): {exc}") from None


def _turned(image: Image.Image) -> bool:
    """Whether the image's EXIF orientation turns or mirrors it (exif_transpose acts on 2 to 8)."""
    return image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9)


def _thumbnail(image: Image.Image, max_side: int) -> Image.Image:
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def readable(image: Image.Image) -> Image.Image:
    """The page with its short side padded (white, at the bottom or right) so that it is at least 1/MAX_ASPECT of
    the long side: the image processor scales a 3000x1 strip to a view 0 pixels high and fails."""
    width, height = image.size
    short = -(-max(width, height) // MAX_ASPECT)
    if min(width, height) >= short:
        return image
    page = Image.new("RGB", (max(width, short), max(height, short)), BACKGROUND)
    page.paste(image, (0, 0))
    return page


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        page = Image.new("RGB", rgba.size, BACKGROUND)
        page.paste(rgba, mask=rgba.getchannel("A"))
        return page
    return image.convert("RGB")
