"""PDF uploads: pages rendered with pypdfium2, read one by one, joined; selection, limits and bad PDFs."""

from __future__ import annotations

import io
from pathlib import Path

import pypdf
import pytest

from helpers import assert_error, make_pdf, post_pdf
from standin_checkpoint import calls, set_answer

PAGE_SPLIT = "\n\n<--- Page Split --->\n\n"


def test_multi_page_pdf_through_the_real_model(client) -> None:
    response = post_pdf(client, make_pdf())
    assert response.status_code == 200, response.text
    body = response.json()
    pages = body["pages"]
    assert [p["page"] for p in pages] == [1, 2, 3]
    # 144 DPI, upstream's: two pixels per point.
    assert [(p["imageWidth"], p["imageHeight"]) for p in pages] == [(400, 200), (300, 300), (200, 400)]
    assert body["rawText"] == PAGE_SPLIT.join(p["rawText"] for p in pages)
    assert body["text"] == PAGE_SPLIT.join(p["text"] for p in pages)
    assert len({p["rawText"] for p in pages}) > 1  # the pages differ, so does what the model read
    assert all(p["finishReason"] == "length" and p["durationMs"] > 0 for p in pages)
    assert (body["imageWidth"], body["imageHeight"], body["finishReason"]) == (400, 200, "length")
    assert body["fileName"] == "doc.pdf"


def test_pdf_is_known_by_content(client) -> None:
    response = client.post("/api/ocr", files={"image": ("scan.png", make_pdf(), "image/png")})
    assert response.status_code == 200 and len(response.json()["pages"]) == 3


@pytest.mark.parametrize(("spec", "expected"), [("2-3", [2, 3]), ("3,1", [1, 3]), (" 1 - 2 , 2 ", [1, 2]), ("", [1, 2, 3])])
def test_page_selection(client, spec: str, expected: list[int]) -> None:
    body = post_pdf(client, make_pdf(), pages=spec).json()
    assert [p["page"] for p in body["pages"]] == expected


@pytest.mark.parametrize(("spec", "words"), [("x", ["1-3,7"]), ("4", ["3 page"]), ("0", ["from 1"]),
                                              ("3-1", ["upwards"]), ("1-99999999999999999999", ["3 page"])])
def test_bad_page_selection_is_422(client, spec: str, words: list[str]) -> None:
    assert_error(post_pdf(client, make_pdf(), pages=spec), 422, *words)


def test_more_pages_than_the_limit_is_413_naming_it(start_client) -> None:
    client = start_client(ocr_max_pdf_pages=2)
    assert_error(post_pdf(client, make_pdf()), 413, "DEEPSEEK_OCR_MAX_PDF_PAGES", "limit is 2")
    assert [p["page"] for p in post_pdf(client, make_pdf(), pages="2-3").json()["pages"]] == [2, 3]


def test_dpi_is_a_setting(start_client) -> None:
    body = post_pdf(start_client(ocr_pdf_dpi=72), make_pdf(((200, 100),))).json()
    assert (body["imageWidth"], body["imageHeight"]) == (200, 100)


def test_large_pages_are_rendered_under_the_pixel_cap(start_client) -> None:
    body = post_pdf(start_client(ocr_max_image_pixels=20_000), make_pdf(((200, 100),))).json()
    width, height = body["imageWidth"], body["imageHeight"]
    assert width * height <= 20_000 and abs(width / height - 2) < 0.05


def test_broken_pdf_is_400(client, client_runs_dir: Path) -> None:
    assert_error(post_pdf(client, b"%PDF-1.7\n this is not really a PDF"), 400, "PDF")
    assert list(client_runs_dir.iterdir()) == []


def test_encrypted_pdf_is_422(client) -> None:
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(make_pdf())))
    writer.encrypt(user_password="secret", owner_password="owner")
    buffer = io.BytesIO()
    writer.write(buffer)
    assert_error(post_pdf(client, buffer.getvalue()), 422, "encrypted")


def test_pdf_without_pages_is_422(client) -> None:
    buffer = io.BytesIO()
    pypdf.PdfWriter().write(buffer)
    assert_error(post_pdf(client, buffer.getvalue()), 422, "no pages")


def test_pdf_pages_carry_their_regions_and_figure_links(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=4096)
    set_answer(standin_v1, "<|ref|>image<|/ref|><|det|>[[0, 0, 499, 499]]<|/det|>\n\n"
                           "<|ref|>text<|/ref|><|det|>[[500, 500, 999, 999]]<|/det|>\nwords")
    body = post_pdf(client, make_pdf(), pages="1,3").json()
    run = body["runId"]
    assert [c["image_pixels"] for c in calls(standin_v1)] == [[400, 200], [200, 400]]
    for page in body["pages"]:
        figure = f"/api/runs/{run}/pages/{page['page']}/images/0.jpg"
        assert page["text"] == f"![]({figure})\n\nwords"
        assert client.get(figure).headers["content-type"] == "image/jpeg"
        assert page["annotatedImageUrl"] == f"/api/runs/{run}/pages/{page['page']}/result_with_boxes.jpg"
        assert client.get(page["annotatedImageUrl"]).status_code == 200
        assert [(r["label"], r["page"]) for r in page["regions"]] == [("image", page["page"]), ("text", page["page"])]
    assert [r["page"] for r in body["regions"]] == [1, 1, 3, 3]
    assert body["pages"][1]["regions"][1]["bbox"] == [100, 200, 200, 400]  # int(v / 999 * size) on 200x400
    assert body["finishReason"] == "stop"
