"""What a model server is sent for a page (dsocr.pipeline.page_images), seen from the STAND-IN vLLM server
(tests/openai_standin.py), which records every request: an upload that needed no change arrives byte for byte as
it was uploaded; a page that was turned, shrunk, flattened or rendered arrives as a lossless TIFF of exactly the
pixels the service read; previews are JPEGs of at most 1280 px a side."""

from __future__ import annotations

import base64
import io
from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageChops, ImageDraw

from dsocr.catalogue import ModelFamily, served_modes
from dsocr.pipeline.documents import decode_image, open_pdf, render_page
from helpers import app_starter, make_pdf, post, post_pdf
from openai_standin import OpenAIStandIn
from settings import Settings, load_settings

MAX_PIXELS = load_settings().ocr_max_image_pixels


@pytest.fixture(scope="module")
def client(module_standin: OpenAIStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("page-images")

    def settings_for() -> Settings:
        return load_settings(ocr_engine="vllm", ocr_vllm_urls=module_standin.url, ocr_runs_dir=folder / "runs",
                             ocr_history_dir=folder / "history", ocr_data_dir=folder / "data")

    starter = app_starter(settings_for)
    yield next(starter)()
    next(starter, None)  # stops the app


def sent(module_standin: OpenAIStandIn) -> tuple[str, bytes]:
    """The MIME type and bytes of the image of the last chat completion the stand-in received."""
    parts = module_standin.bodies[-1]["messages"][0]["content"]
    url = next(part["image_url"]["url"] for part in parts if part["type"] == "image_url")
    head, payload = url.split(",", 1)
    return head.removeprefix("data:").removesuffix(";base64"), base64.b64decode(payload)


def page(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    """A page with text-like strokes, so that any change of its pixels shows."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for line in range(0, size[1] - 20, 24):
        draw.text((10, line + 4), f"line {line} of a page sent to the model", fill=(line % 200, 30, 90))
    return image.convert(mode)


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def same_pixels(first: Image.Image, second: Image.Image) -> bool:
    if first.size != second.size:
        return False
    return ImageChops.difference(first.convert("RGB"), second.convert("RGB")).getbbox() is None


@pytest.mark.parametrize(("fmt", "mime", "mode", "options"), [
    ("PNG", "image/png", "RGB", {}),
    ("PNG", "image/png", "L", {}),  # a grayscale scan: a server's RGB conversion is the service's own
    ("JPEG", "image/jpeg", "RGB", {"quality": 85}),
    ("WEBP", "image/webp", "RGB", {"quality": 80}),
])
def test_an_upload_read_as_it_came_is_sent_byte_for_byte(client, module_standin, fmt, mime, mode, options) -> None:
    upload = encoded(page((900, 1200), mode), fmt, **options)
    response = post(client, upload, filename=f"page.{fmt.lower()}")
    assert response.status_code == 200, response.text
    assert sent(module_standin) == (mime, upload)
    assert (response.json()["imageWidth"], response.json()["imageHeight"]) == (900, 1200)


def decoded_as_the_service_does(upload: bytes) -> Image.Image:
    return decode_image(upload, MAX_PIXELS, gundam_side())


def gundam_side() -> int:
    """The most pixels a side of a page can feed the one mode served through vLLM."""
    [gundam] = served_modes(ModelFamily.v1, True)
    return gundam.max_useful_side


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    return encoded(page((600, 400)), "JPEG", quality=90, exif=exif.tobytes())


@pytest.mark.parametrize("case", ["turned by its EXIF", "too large for the mode", "a palette with transparency",
                                  "16-bit grey"])
def test_a_page_that_needed_a_change_is_sent_as_a_lossless_tiff_of_the_pixels_read(client, module_standin,
                                                                                   case) -> None:
    upload = {
        "turned by its EXIF": exif_rotated_jpeg,
        "too large for the mode": lambda: encoded(page((gundam_side() + 500, 600)), "PNG"),
        "a palette with transparency": lambda: encoded(page((500, 300), "RGBA").convert("P"), "PNG",
                                                       transparency=0),
        "16-bit grey": lambda: encoded(page((400, 300), "L").convert("I;16"), "PNG"),
    }[case]()
    response = post(client, upload)
    assert response.status_code == 200, response.text
    mime, data = sent(module_standin)
    assert mime == "image/tiff" and data != upload
    received = Image.open(io.BytesIO(data))
    assert received.format == "TIFF"
    assert same_pixels(received, decoded_as_the_service_does(upload))
    assert (response.json()["imageWidth"], response.json()["imageHeight"]) == received.size
    if case == "turned by its EXIF":
        assert received.size == (400, 600)


def test_a_pdf_page_is_sent_as_a_lossless_tiff_of_its_rendering(client, module_standin) -> None:
    pdf = make_pdf(((300, 200),))
    response = post_pdf(client, pdf)
    assert response.status_code == 200, response.text
    mime, data = sent(module_standin)
    document = open_pdf(pdf)
    try:
        rendered = render_page(document, 1, 144, MAX_PIXELS, gundam_side())
    finally:
        document.close()
    received = Image.open(io.BytesIO(data))
    assert mime == "image/tiff" and received.format == "TIFF" and same_pixels(received, rendered)


def test_previews_are_jpegs_shrunk_by_a_whole_factor_within_1280_px(client) -> None:
    body = post(client, encoded(page((2700, 1000)), "PNG")).json()
    preview = Image.open(io.BytesIO(base64.b64decode(body["pages"][0]["imageData"].split(",", 1)[1])))
    assert preview.format == "JPEG" and preview.size == (900, 334)  # 2700 / 3, 1000 / 3 rounded up


def test_a_page_with_regions_has_its_figures_and_annotated_page_cut_from_the_pixels_read(client, module_standin) -> None:
    module_standin.script.pieces = ["<|ref|>image<|/ref|><|det|>[[0, 0, 499, 499]]<|/det|>\n"]
    try:
        upload = encoded(page((800, 600)), "PNG")
        body = post(client, upload).json()
    finally:
        module_standin.script.pieces = ["# Title", "\n\nSome ", "text."]
    figure = client.get(body["annotatedImageUrl"].replace("result_with_boxes.jpg", "images/0.jpg"))
    assert figure.status_code == 200
    assert Image.open(io.BytesIO(figure.content)).size == (399, 299)  # the box of 0..999 on an 800x600 page
    assert client.get(body["annotatedImageUrl"]).status_code == 200



def test_pages_are_made_ready_in_the_workers_under_uvloop() -> None:
    """uvloop (uvicorn's loop wherever it is installed, as `uvicorn[standard]` installs it) leaves a descriptor it
    watched non-blocking: the worker's pipe, read and written from threads, must still carry whole pages."""
    import uvloop  # requirements-dev: a missing uvloop fails here rather than skipping the check

    from dsocr.pipeline.pdf_workers import PdfWorkers

    noise = Image.frombytes("RGB", (800, 800), bytes(range(256)) * 7500)
    upload = encoded(noise, "PNG")  # a 4 KB file, whose preview (~270 KB) is more than a socket's buffer holds
    pdf = make_pdf(((600, 800), (800, 600)))

    async def main() -> list:
        workers = PdfWorkers(1, timeout_s=60)
        try:
            ready = [await workers.image(upload, MAX_PIXELS, 4096, True, True) for _ in range(3)]
            document = workers.document(pdf, 144, MAX_PIXELS, 4096, for_server=True, previews=True)
            assert await document.select(None, 10) == [1, 2]
            return ready + [await document.render(1), await document.render(2)]
        finally:
            workers.stop()

    pages = uvloop.run(main())
    assert [page.encoded.data == upload for page in pages[:3]] == [True] * 3
    assert [(page.width, page.height) for page in pages[3:]] == [(1200, 1600), (1600, 1200)]  # 144 DPI
    assert all(page.preview.startswith("data:image/jpeg;base64,") for page in pages)


def test_a_photo_like_page_goes_as_a_png_when_packbits_would_leave_it_near_its_raw_size() -> None:
    from ocr_engine import EncodedImage

    photo = Image.effect_noise((600, 400), 60).convert("RGB")  # no runs of equal pixels for PackBits to pack
    text = page((600, 400))
    as_sent = {name: EncodedImage.lossless(image) for name, image in (("photo", photo), ("text", text))}
    assert as_sent["photo"].mime == "image/png" and len(as_sent["photo"].data) < 600 * 400 * 3 * 0.9
    assert as_sent["text"].mime == "image/tiff"
    for name, image in (("photo", photo), ("text", text)):
        assert same_pixels(Image.open(io.BytesIO(as_sent[name].data)), image)
