"""Regions, figure crops, the annotated page, the artifacts route and retention, over HTTP.

The model's output is chosen by the test through the STAND-IN remote-code checkpoint (tests/standin_checkpoint.py):
random native weights never write grounding tags, the real weights cannot be downloaded here.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from helpers import post
from standin_checkpoint import build_standin_checkpoint, set_answer

UNCAPPED = 4096


def page_with_red_figure(size: tuple[int, int] = (1000, 500)) -> bytes:
    image = Image.new("RGB", size, "white")
    image.paste((255, 0, 0), (200, 100, 600, 300))  # the "figure"
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def layout_client(start_module_client, tmp_path_factory: pytest.TempPathFactory):
    """One app for the module on a stand-in checkpoint: each test sets the answer it reads."""
    standin = build_standin_checkpoint(tmp_path_factory.mktemp("layout") / "standin-deepseek-ocr", family="v1")
    client = start_module_client(checkpoint=standin, ocr_max_new_tokens=UNCAPPED)
    client.checkpoint = standin
    return client


def answer(client, text: str) -> None:
    set_answer(client.checkpoint, text)


def test_regions_in_output_order_with_boxes_in_pixels(layout_client) -> None:
    answer(layout_client,
           "<|ref|>title<|/ref|><|det|>[[100, 200, 300, 400]]<|/det|>\n# Title\n\n"
           "<|ref|>text<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\nBody \\coloneqq text")
    body = post(layout_client, page_with_red_figure((2000, 1000))).json()
    assert body["regions"] == [
        {"label": "title", "bbox": [200, 200, 600, 400], "text": "# Title", "page": 1},  # int(v / 999 * size)
        {"label": "text", "bbox": [0, 0, 2000, 1000], "text": "Body := text", "page": 1},
    ]
    assert body["text"] == "# Title\n\nBody := text"


def test_boxes_refer_to_the_upright_image(layout_client) -> None:
    answer(layout_client, "<|ref|>text<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\nx")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200), "white").save(buffer, "JPEG", exif=exif.tobytes())
    body = post(layout_client, buffer.getvalue()).json()
    assert body["regions"][0]["bbox"] == [0, 0, 200, 300]


def test_one_region_per_box_and_locate_answers_have_no_text(layout_client) -> None:
    answer(layout_client, "<|ref|>the cat<|/ref|><|det|>[[0, 0, 499, 499], [500, 500, 999, 999]]<|/det|>")
    body = post(layout_client, page_with_red_figure((999, 999)), prompt="Locate <|ref|>the cat<|/ref|> in the image.").json()
    assert body["regions"] == [
        {"label": "the cat", "bbox": [0, 0, 499, 499], "text": "", "page": 1},
        {"label": "the cat", "bbox": [500, 500, 999, 999], "text": "", "page": 1},
    ]
    assert body["text"] == ""


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch /tmp/deepseek-pwned')",
        "[[1, 2, 3]]",
        "[[1, 2, 3, 4, 5]]",
        "[[\"a\", 2, 3, 4]]",
        "[[1, 2, 3, 4]",
        "[[NaN, 2, 3, 4]]",
        "[[1e999, 2, 3, 4]]",
    ],
)
def test_malformed_or_hostile_boxes_are_dropped(layout_client, payload: str) -> None:
    answer(layout_client, f"<|ref|>image<|/ref|><|det|>{payload}<|/det|>\nafter\n"
                          "<|ref|>text<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>\nkept")
    body = post(layout_client, page_with_red_figure()).json()
    assert [r["label"] for r in body["regions"]] == ["text"]
    assert "images/" not in body["text"] and "<|det|>" not in body["text"]
    assert not Path("/tmp/deepseek-pwned").exists()


def test_out_of_range_boxes_are_ordered_and_clipped(layout_client) -> None:
    answer(layout_client, "<|ref|>text<|/ref|><|det|>[[1500, 900, -20, 100]]<|/det|>\nx")
    body = post(layout_client, page_with_red_figure((999, 999))).json()
    assert body["regions"][0]["bbox"] == [0, 100, 999, 900]


def test_figures_are_cropped_linked_and_served(layout_client) -> None:
    # The red block spans x 200..600 of 1000 and y 100..300 of 500: 0..999 coordinates below.
    answer(layout_client, "<|ref|>image<|/ref|><|det|>[[200, 200, 599, 599]]<|/det|>\n\n"
                          "<|ref|>image_caption<|/ref|><|det|>[[200, 610, 599, 650]]<|/det|>\nFigure 1")
    body = post(layout_client, page_with_red_figure()).json()
    url = f"/api/runs/{body['runId']}/images/0.jpg"
    assert body["text"] == f"![]({url})\n\nFigure 1"
    figure = layout_client.get(url)
    assert figure.status_code == 200 and figure.headers["content-type"] == "image/jpeg"
    crop = Image.open(io.BytesIO(figure.content)).convert("RGB")
    assert crop.size == (int(599 / 999 * 1000) - int(200 / 999 * 1000), int(599 / 999 * 500) - int(200 / 999 * 500))
    red, green, blue = crop.resize((1, 1)).getpixel((0, 0))
    assert red > 200 and green < 60 and blue < 60


def test_annotated_page_draws_every_box(layout_client) -> None:
    answer(layout_client, "<|ref|>title<|/ref|><|det|>[[100, 100, 900, 900]]<|/det|>\n# T")
    upload = page_with_red_figure()
    body = post(layout_client, upload).json()
    assert body["annotatedImageUrl"] == f"/api/runs/{body['runId']}/result_with_boxes.jpg"
    served = layout_client.get(body["annotatedImageUrl"])
    assert served.headers["content-type"] == "image/jpeg"
    annotated = Image.open(io.BytesIO(served.content)).convert("RGB")
    assert annotated.size == (1000, 500)
    left_edge = annotated.getpixel((int(100 / 999 * 1000) + 1, 250))
    assert left_edge != (255, 255, 255) and max(left_edge) < 230  # a box line where the page is white


def test_without_regions_there_is_no_annotated_page_and_no_run_left(layout_client, client_runs_dir: Path) -> None:
    answer(layout_client, "plain text")
    before = set(client_runs_dir.iterdir())
    body = post(layout_client, page_with_red_figure()).json()
    assert body["annotatedImageUrl"] is None and body["regions"] == []
    assert set(client_runs_dir.iterdir()) == before


def test_only_artifacts_remain_not_the_upload(layout_client, client_runs_dir: Path) -> None:
    answer(layout_client, "<|ref|>image<|/ref|><|det|>[[0, 0, 500, 500]]<|/det|>")
    run_id = post(layout_client, page_with_red_figure()).json()["runId"]
    run = client_runs_dir / run_id
    kept = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert kept == ["images/0.jpg", "result_with_boxes.jpg"]


@pytest.mark.parametrize(
    "path",
    [
        "{run}/../../settings.py",
        "{run}/%2e%2e/%2e%2e/settings.py",
        "{run}/images/%2e%2e%2f%2e%2e%2fsettings.py",
        "{run}/%2Fetc%2Fpasswd",
        "{run}//etc/passwd",
        "{run}/images",
        "{run}/nope.jpg",
        "..%2f{run}/images/0.jpg",
        "0123456789abcdef0123456789abcdef/images/0.jpg",
        "not-a-run/images/0.jpg",
    ],
)
def test_artifacts_route_serves_nothing_outside_the_run(layout_client, client_runs_dir: Path, path: str) -> None:
    answer(layout_client, "<|ref|>image<|/ref|><|det|>[[0, 0, 500, 500]]<|/det|>")
    run_id = post(layout_client, page_with_red_figure()).json()["runId"]
    (client_runs_dir / "secret.txt").write_text("secret")
    response = layout_client.get("/api/runs/" + path.format(run=run_id))
    assert response.status_code == 404
    assert "secret" not in response.text and "root:" not in response.text


def test_another_runs_files_are_not_reachable_through_a_run(layout_client) -> None:
    answer(layout_client, "<|ref|>image<|/ref|><|det|>[[0, 0, 500, 500]]<|/det|>")
    first = post(layout_client, page_with_red_figure()).json()["runId"]
    second = post(layout_client, page_with_red_figure()).json()["runId"]
    assert layout_client.get(f"/api/runs/{second}/%2e%2e/{first}/images/0.jpg").status_code == 404
    assert layout_client.get(f"/api/runs/{first}/images/0.jpg").status_code == 200


def _age(folder: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(folder, (past, past))


def test_runs_expire_after_the_ttl(start_client, standin_v1: Path, runs_dir: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED, ocr_run_ttl_s=600)
    set_answer(standin_v1, "<|ref|>image<|/ref|><|det|>[[0, 0, 500, 500]]<|/det|>")
    old = post(client, page_with_red_figure()).json()["runId"]
    assert client.get(f"/api/runs/{old}/images/0.jpg").status_code == 200
    _age(runs_dir / old, 601)
    assert client.get(f"/api/runs/{old}/images/0.jpg").status_code == 404
    new = post(client, page_with_red_figure()).json()["runId"]  # each finished run sweeps the store
    assert not (runs_dir / old).exists()
    assert client.get(f"/api/runs/{new}/images/0.jpg").status_code == 200


def test_runs_dir_cap_removes_the_oldest_runs_first(start_client, standin_v1: Path, runs_dir: Path) -> None:
    # Each run keeps two JPEGs of a 400x300 page, about 8 KB: a 20 KB cap holds two runs.
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED, ocr_runs_max_mb=0.02)
    set_answer(standin_v1, "<|ref|>image<|/ref|><|det|>[[0, 0, 999, 999]]<|/det|>")
    ids = []
    for age in (300, 200, 100):
        ids.append(post(client, page_with_red_figure((400, 300))).json()["runId"])
        if (runs_dir / ids[-1]).exists():
            _age(runs_dir / ids[-1], age)
    newest = post(client, page_with_red_figure((400, 300))).json()["runId"]
    remaining = {p.name for p in runs_dir.iterdir()}
    assert ids[0] not in remaining and ids[1] not in remaining  # the oldest went first
    assert newest in remaining
    total = sum(f.stat().st_size for f in runs_dir.rglob("*") if f.is_file())
    assert total <= 0.02 * 1024 * 1024
