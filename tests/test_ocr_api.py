"""POST /api/ocr over HTTP on a tiny real DeepSeek-OCR-2 checkpoint: payload, modes, prompts, guardrails."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from dsocr.pipeline.cleaning import clean_output
from direct_model import BASE_ARGS, GUNDAM_ARGS, expected_raw_text
from helpers import TEST_MAX_NEW_TOKENS, assert_error, image_bytes, make_settings, post
from settings import DEFAULT_PROMPT


def test_payload_has_the_seed_fields_and_the_models_own_output(client, native_checkpoint: Path) -> None:
    data = image_bytes((1000, 800))  # larger than a 768 tile: gundam crops it
    response = post(client, data, filename="math.png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"mode", "prompt", "text", "rawText", "durationMs", "fileName", "fileSize",
                         "model", "imageWidth", "imageHeight", "finishReason"}
    assert body["mode"] == "gundam" and body["prompt"] == DEFAULT_PROMPT
    assert body["fileName"] == "math.png" and body["fileSize"] == len(data)
    assert (body["imageWidth"], body["imageHeight"]) == (1000, 800)
    assert body["model"] == str(native_checkpoint.resolve())
    assert body["durationMs"] > 0
    expected = expected_raw_text(native_checkpoint, data, DEFAULT_PROMPT, GUNDAM_ARGS, TEST_MAX_NEW_TOKENS)
    assert body["rawText"] == expected
    assert body["text"] == clean_output(expected, 1000, 800).text
    assert body["finishReason"] == "length"  # random weights run into the token cap


def test_base_mode_reaches_the_model_as_one_1024_view(client, native_checkpoint: Path) -> None:
    data = image_bytes((1000, 800))
    body = post(client, data, mode="base").json()
    assert body["mode"] == "base"
    assert body["rawText"] == expected_raw_text(native_checkpoint, data, DEFAULT_PROMPT, BASE_ARGS, TEST_MAX_NEW_TOKENS)


def test_mode_names_are_case_insensitive(client) -> None:
    assert post(client, image_bytes(), mode="Base").json()["mode"] == "base"


def test_prompt_without_image_tag_gets_one_in_front(client, native_checkpoint: Path) -> None:
    data = image_bytes()
    body = post(client, data, prompt="Free OCR.").json()
    assert body["prompt"] == "<image>\nFree OCR."
    assert body["rawText"] == expected_raw_text(
        native_checkpoint, data, "<image>\nFree OCR.", GUNDAM_ARGS, TEST_MAX_NEW_TOKENS
    )


def test_a_model_that_ends_its_answer_reports_stop(start_client, stopping_checkpoint: Path) -> None:
    body = post(start_client(checkpoint=stopping_checkpoint), image_bytes()).json()
    assert body["finishReason"] == "stop"
    assert body["rawText"] == "" and body["text"] == ""


def test_token_cap_comes_from_the_setting(start_client, native_checkpoint: Path) -> None:
    data = image_bytes()
    body = post(start_client(ocr_max_new_tokens=3), data).json()
    assert body["rawText"] == expected_raw_text(native_checkpoint, data, DEFAULT_PROMPT, GUNDAM_ARGS, 3)
    assert body["finishReason"] == "length"


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_raster_formats_are_accepted(client, fmt: str) -> None:
    response = post(client, image_bytes((300, 200), fmt=fmt), filename="scan.bin", content_type="application/octet-stream")
    assert response.status_code == 200, response.text
    assert (response.json()["imageWidth"], response.json()["imageHeight"]) == (300, 200)


def test_type_is_known_by_content_not_by_name(client) -> None:
    assert post(client, image_bytes(), filename="notes.txt", content_type="text/plain").status_code == 200
    assert_error(post(client, b"just some text, not an image", filename="page.png"), 415, "unsupported")


def test_gif_uses_its_first_frame(client, native_checkpoint: Path) -> None:
    frames = [Image.new("RGB", (200, 100), color) for color in ("white", "black", "red")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    body = post(client, buffer.getvalue(), filename="anim.gif").json()
    first = io.BytesIO()
    frames[0].save(first, "PNG")
    assert body["rawText"] == expected_raw_text(
        native_checkpoint, first.getvalue(), DEFAULT_PROMPT, GUNDAM_ARGS, TEST_MAX_NEW_TOKENS
    )


def test_exif_orientation_is_applied(client) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    data = image_bytes((300, 200), fmt="JPEG", exif=exif.tobytes())
    body = post(client, data, filename="photo.jpg").json()
    assert (body["imageWidth"], body["imageHeight"]) == (200, 300)


def test_transparent_png_is_laid_on_white(client, native_checkpoint: Path) -> None:
    transparent = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    buffer = io.BytesIO()
    transparent.save(buffer, "PNG")
    plain = io.BytesIO()
    Image.new("RGB", (200, 100), "white").save(plain, "PNG")
    body = post(client, buffer.getvalue()).json()
    assert body["rawText"] == expected_raw_text(
        native_checkpoint, plain.getvalue(), DEFAULT_PROMPT, GUNDAM_ARGS, TEST_MAX_NEW_TOKENS
    )


def test_unknown_mode_is_422_listing_the_valid_ones(client) -> None:
    assert_error(post(client, image_bytes(), mode="huge"), 422, "huge", "base", "gundam")


def test_mode_of_another_family_is_422(client) -> None:
    assert_error(post(client, image_bytes(), mode="tiny"), 422, "tiny", "base, gundam")


def test_overlong_prompt_is_422(start_client) -> None:
    client = start_client(ocr_max_prompt_chars=60)  # the default prompt (54 characters) must still fit
    assert_error(post(client, image_bytes(), prompt="x" * 61), 422, "60")


def test_prompt_with_two_images_is_422(client) -> None:
    assert_error(post(client, image_bytes(), prompt="<image><image> read both"), 422, "<image>")


def test_missing_file_field_is_422(client) -> None:
    assert_error(client.post("/api/ocr", data={"mode": "base"}, files={"other": ("a.png", image_bytes())}), 422, "image")


def test_not_multipart_is_415(client) -> None:
    assert_error(client.post("/api/ocr", content=image_bytes(), headers={"content-type": "image/png"}), 415, "multipart")


def test_empty_file_is_400(client) -> None:
    assert_error(post(client, b""), 400, "empty")


def test_truncated_image_is_400(client) -> None:
    data = image_bytes((400, 300), fmt="JPEG")
    assert_error(post(client, data[: len(data) // 2], filename="cut.jpg"), 400, "JPEG")


def test_corrupt_image_with_a_valid_signature_is_400(client) -> None:
    assert_error(post(client, b"\x89PNG\r\n\x1a\n" + b"garbage" * 20), 400, "PNG")


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(client) -> None:
    # 100k x 100k pixels declared in a file of a hundred bytes.
    assert_error(post(client, _png_header(100_000, 100_000)), 413, "pixels")


def test_pixel_budget_is_a_setting(start_client) -> None:
    client = start_client(ocr_max_image_pixels=300 * 200 - 1)
    assert_error(post(client, image_bytes((300, 200))), 413, "DEEPSEEK_OCR_MAX_IMAGE_PIXELS")
    assert post(client, image_bytes((299, 200))).status_code == 200


def test_body_over_the_limit_is_413_and_the_server_stays_up(start_client) -> None:
    client = start_client(max_image_mb=0.5)
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (600 * 1024)
    assert_error(post(client, big), 413, "0.5 MB")
    assert client.get("/health").status_code == 200
    assert post(client, image_bytes()).status_code == 200


def test_chunked_body_over_the_limit_is_413(start_client) -> None:
    client = start_client(max_image_mb=0.5)
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()

    def body():  # no Content-Length: the client streams it chunked
        yield head
        for _ in range(40):
            yield b"\0" * (64 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/ocr", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_error(response, 413, "limit")


def test_filename_is_echoed_never_used_as_a_path(client, client_runs_dir: Path, tmp_path: Path) -> None:
    name = "../../../" + str(tmp_path / "escaped.png")
    body = post(client, image_bytes(), filename=name).json()
    assert body["fileName"] == name
    assert not (tmp_path / "escaped.png").exists()
    assert list(client_runs_dir.iterdir()) == []


def test_nothing_stays_in_the_runs_dir(client, client_runs_dir: Path) -> None:
    assert post(client, image_bytes()).status_code == 200
    assert post(client, b"").status_code == 400
    assert post(client, b"%%% not an image").status_code == 415
    assert post(client, image_bytes(), mode="nope").status_code == 422
    assert client_runs_dir.is_dir() and list(client_runs_dir.iterdir()) == []


def test_requests_before_the_model_is_ready_get_503(native_checkpoint: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app import create_app

    # Without entering the lifespan the model never starts loading: the state every request sees at first.
    client = TestClient(create_app(make_settings(native_checkpoint, tmp_path / "runs")))
    response = post(client, image_bytes())
    assert_error(response, 503, "loading")
    assert response.headers["retry-after"]


def test_repetition_guard_breaks_loops_and_can_be_turned_off(start_client, native_checkpoint: Path) -> None:
    data = image_bytes((300, 200), color="black")
    loose = expected_raw_text(native_checkpoint, data, DEFAULT_PROMPT, GUNDAM_ARGS, 40)
    guarded = expected_raw_text(native_checkpoint, data, DEFAULT_PROMPT, GUNDAM_ARGS, 40, ngram=(3, 30))
    assert loose != guarded  # this page sends the tiny model into a loop that the guard breaks
    with_guard = post(start_client(ocr_max_new_tokens=40, ocr_ngram_size=3, ocr_ngram_window=30), data).json()
    assert with_guard["rawText"] == guarded
    without = post(start_client(ocr_max_new_tokens=40, ocr_ngram_size=0), data).json()
    assert without["rawText"] == loose
