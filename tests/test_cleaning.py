"""Raw model output in upstream's format -> clean markdown, figure links and regions."""

from __future__ import annotations

from dsocr.pipeline.cleaning import clean_output, parse_boxes, strip_eos

EOS = "<｜end▁of▁sentence｜>"

RAW_PAGE = (
    "<|ref|>title<|/ref|><|det|>[[330, 198, 559, 230]]<|/det|>\n# Quarterly report\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 250, 900, 400]]<|/det|>\nRevenue grew; let $x \\coloneqq 2$ and $y \\eqqcolon 3$.\n\n\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 450, 500, 800]]<|/det|>\n\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 810, 500, 840]]<|/det|>\nFigure 1: sales.\n"
    + EOS
)


def test_grounding_tags_are_removed_and_figures_linked() -> None:
    page = clean_output(RAW_PAGE, 999, 999)
    assert "<|ref|>" not in page.text and "<|det|>" not in page.text and "title" not in page.text
    assert page.text.startswith("# Quarterly report")
    assert "![](images/0.jpg)" in page.text
    assert page.text.endswith("Figure 1: sales.")


def test_end_of_sentence_token_is_stripped() -> None:
    assert EOS not in clean_output(RAW_PAGE, 100, 100).text
    assert strip_eos("  text\n" + EOS + "\n") == "text"
    assert strip_eos("no end token") == "no end token"


def test_latex_colon_equals_replaced() -> None:
    text = clean_output(RAW_PAGE, 100, 100).text
    assert "$x := 2$" in text and "$y =: 3$" in text
    assert "coloneqq" not in text and "eqqcolon" not in text


def test_runs_of_blank_lines_collapse_to_one() -> None:
    assert "\n\n\n" not in clean_output(RAW_PAGE, 100, 100).text


def test_figures_are_numbered_in_order() -> None:
    raw = "".join(f"<|ref|>image<|/ref|><|det|>[[{i}0, 0, {i}9, 99]]<|/det|>\n" for i in range(1, 4))
    page = clean_output(raw, 999, 999)
    assert [page.text.count(f"images/{n}.jpg") for n in range(3)] == [1, 1, 1]
    assert len(page.figures) == 3


def test_text_without_tags_is_kept() -> None:
    assert clean_output("Free OCR text\nline two" + EOS, 10, 10).text == "Free OCR text\nline two"


def test_boxes_scale_from_0_999_to_pixels() -> None:
    # upstream: int(v / 999 * size)
    assert parse_boxes("[[0, 0, 999, 999]]", 2000, 1000) == [(0, 0, 2000, 1000)]
    assert parse_boxes("[[330, 198, 559, 230]]", 1000, 500) == [(330, 99, 559, 115)]


def test_hostile_or_malformed_boxes_are_dropped() -> None:
    assert parse_boxes("__import__('os').system('touch /tmp/pwned')", 100, 100) == []
    assert parse_boxes("[[1, 2, 3]]", 100, 100) == []
    assert parse_boxes("[[1, 2, 3, 4, 5]]", 100, 100) == []
    assert parse_boxes('[["1", 2, 3, 4]]', 100, 100) == []
    assert parse_boxes("[[true, 2, 3, 4]]", 100, 100) == []
    assert parse_boxes("[" * 10000 + "]" * 10000, 100, 100) == []


def test_boxes_are_ordered_and_clipped() -> None:
    assert parse_boxes("[[999, 999, 0, 0]]", 999, 999) == [(0, 0, 999, 999)]
    assert parse_boxes("[[-50, -50, 5000, 5000]]", 999, 999) == [(0, 0, 999, 999)]


def test_regions_carry_label_box_and_following_text() -> None:
    page = clean_output(RAW_PAGE, 999, 999)
    assert [(r.label, r.bbox) for r in page.regions][:2] == [("title", (330, 198, 559, 230)), ("text", (100, 250, 900, 400))]
    assert page.regions[0].text == "# Quarterly report"
    assert page.regions[1].text.startswith("Revenue grew; let $x := 2$")


def test_hostile_payload_is_removed_from_text_and_never_run(tmp_path) -> None:
    marker = tmp_path / "pwned"
    raw = f"<|ref|>image<|/ref|><|det|>__import__('pathlib').Path('{marker}').touch()<|/det|>\nafter"
    page = clean_output(raw, 100, 100)
    assert page.text == "after" and page.figures == [] and page.regions == []
    assert not marker.exists()
