"""The remote-code engine (original checkpoints, `model.infer`), driven over HTTP.

The original checkpoints cannot be downloaded here: these tests load STAND-IN folders of the same layout
(tests/standin_checkpoint.py), whose `infer` records the arguments it got and returns the answer each test sets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from dsocr.engines.loading import detect_engine
from helpers import image_bytes, post
from settings import DEFAULT_PROMPT, EngineChoice
from standin_checkpoint import calls, load_arguments, set_answer

GROUNDED = (
    "<|ref|>title<|/ref|><|det|>[[100, 100, 900, 200]]<|/det|>\n# Invoice 42\n\n"
    "<|ref|>text<|/ref|><|det|>[[100, 250, 900, 400]]<|/det|>\nTotal $x \\coloneqq 3$\n\n\n\nDue soon."
)

# The stand-in's answers are short: a cap they never reach (the conftest default is a few tokens).
UNCAPPED = 4096

V1_MODES = {  # upstream README: name -> (base_size, image_size, crop_mode, vision tokens)
    "tiny": (512, 512, False, 64),
    "small": (640, 640, False, 100),
    "base": (1024, 1024, False, 256),
    "large": (1280, 1280, False, 400),
    "gundam": (1024, 640, True, 256 + 6 * 100),
}


def test_original_v1_layout_is_detected_and_served_through_infer(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED)
    health = client.get("/health").json()
    assert (health["status"], health["engine"], health["family"]) == ("ok", "remote-code", "deepseek-ocr")
    modes = client.get("/api/modes").json()
    assert (modes["engine"], modes["family"]) == ("remote-code", "deepseek-ocr")
    listed = {name: (m["base_size"], m["image_size"], m["crop_mode"], m["visionTokens"]) for name, m in modes["modes"].items()}
    assert listed == V1_MODES
    assert list(modes["modes"])[0] == "gundam"  # the default mode first, as the seed listed it


def test_loaded_with_remote_code_safetensors_eval_mode_and_attention_fallback(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED)
    # No CUDA here: flash_attention_2 falls back to eager, the original code having no sdpa layers.
    assert client.get("/health").json()["attnImplementation"] == "eager"
    assert load_arguments(standin_v1) == {"use_safetensors": True, "_attn_implementation": "eager"}
    set_answer(standin_v1, "hello")
    assert post(client, image_bytes()).status_code == 200
    [call] = calls(standin_v1)
    assert (call["training"], call["device"], call["dtype"]) == (False, "cpu", "float32")


@pytest.mark.parametrize("mode", sorted(V1_MODES))
def test_each_v1_mode_reaches_infer_with_upstreams_sizes(start_client, standin_v1: Path, runs_dir: Path, mode: str) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED)
    set_answer(standin_v1, "some text")
    assert post(client, image_bytes((500, 400)), mode=mode).status_code == 200
    [call] = calls(standin_v1)
    base_size, image_size, crop_mode, _ = V1_MODES[mode]
    assert (call["base_size"], call["image_size"], call["crop_mode"]) == (base_size, image_size, crop_mode)
    assert (call["test_compress"], call["save_results"], call["eval_mode"]) == (False, False, True)
    assert call["prompt"] == DEFAULT_PROMPT
    output_path = Path(call["output_path"])
    assert output_path.parent == runs_dir.resolve() or output_path.parent == runs_dir
    assert Path(call["image_file"]).parent == output_path
    assert call["image_pixels"] == [500, 400]


def test_original_v2_layout_has_the_v2_modes(start_client, standin_v2: Path) -> None:
    client = start_client(checkpoint=standin_v2, ocr_max_new_tokens=UNCAPPED)
    body = client.get("/api/modes").json()
    assert body["family"] == "deepseek-ocr-2"
    assert {name: (m["base_size"], m["image_size"], m["crop_mode"], m["visionTokens"]) for name, m in body["modes"].items()} == {
        "base": (1024, 1024, False, 256),
        "gundam": (1024, 768, True, 256 + 6 * 144),
    }
    set_answer(standin_v2, "x")
    assert post(client, image_bytes(), mode="gundam").status_code == 200
    assert [(c["base_size"], c["image_size"], c["crop_mode"]) for c in calls(standin_v2)] == [(1024, 768, True)]
    response = post(client, image_bytes(), mode="tiny")
    assert response.status_code == 422
    assert "base, gundam" in response.json()["detail"]


def test_infer_output_is_cleaned_and_printing_is_not_the_answer(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED)
    set_answer(standin_v1, GROUNDED)
    body = post(client, image_bytes(), prompt="OCR this.").json()
    assert body["rawText"] == GROUNDED
    assert body["text"] == "# Invoice 42\n\nTotal $x := 3$\n\nDue soon."
    assert body["finishReason"] == "stop"
    assert body["prompt"] == "<image>\nOCR this."
    assert calls(standin_v1)[0]["prompt"] == "<image>\nOCR this."
    assert "stand-in streaming output" not in body["rawText"]


def test_the_token_cap_reaches_infers_generate(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=6)
    set_answer(standin_v1, "a long answer " * 50)  # far more than 6 tokens
    body = post(client, image_bytes()).json()
    assert calls(standin_v1)[0]["generate_max_new_tokens"] == [6]  # upstream asks for 8192
    assert body["finishReason"] == "length"
    assert 0 < len(body["rawText"]) < len("a long answer " * 50)


def test_the_validated_upright_image_is_what_infer_reads(start_client, standin_v1: Path, runs_dir: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED)
    exif = Image.Exif()
    exif[0x0112] = 6
    body = post(client, image_bytes((300, 200), fmt="JPEG", exif=exif.tobytes())).json()
    assert calls(standin_v1)[0]["image_pixels"] == [200, 300]
    assert (body["imageWidth"], body["imageHeight"]) == (200, 300)
    assert list(runs_dir.iterdir()) == []


def test_a_failing_infer_is_a_500_with_request_id_and_the_service_recovers(start_client, standin_v1: Path, runs_dir: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=UNCAPPED, raise_server_exceptions=False)
    set_answer(standin_v1, raise_message="CUDA out of memory (stand-in)")
    failed = post(client, image_bytes())
    assert failed.status_code == 500
    body = failed.json()
    assert body["requestId"] and body["requestId"] in body["detail"]
    assert list(runs_dir.iterdir()) == []
    set_answer(standin_v1, "recovered")
    again = post(client, image_bytes())
    assert again.status_code == 200 and again.json()["text"] == "recovered"
    assert client.get("/health").status_code == 200


def test_engine_auto_detection_of_both_layouts(native_checkpoint: Path, standin_v1: Path) -> None:
    from dsocr.engines.loading import read_config

    assert detect_engine(read_config(standin_v1)) is EngineChoice.remote_code
    assert detect_engine(read_config(native_checkpoint)) is EngineChoice.transformers
    with pytest.raises(ValueError, match="DEEPSEEK_OCR_ENGINE"):
        detect_engine({"model_type": "no_such_model"})


def test_engine_setting_overrides_detection(start_client, standin_v1: Path) -> None:
    # Forcing the native engine onto an original folder fails the load, visibly.
    response = start_client(checkpoint=standin_v1, ocr_engine="transformers").get("/health")
    assert response.status_code == 503 and response.json()["status"] == "error"


def test_a_page_that_loops_is_read_again_through_infer_sampling(start_client, standin_v1: Path) -> None:
    """Infer has no temperature argument: the service asks its `generate` call to sample instead."""
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=400, ocr_page_retries=2)
    looped = "# Notice\n" + "The landlord may enter the premises with notice.\n" * 40
    set_answer(standin_v1, looped, sampled_text="# Notice\nPets are allowed.")
    body = post(client, image_bytes()).json()
    assert [call["generate_temperatures"] for call in calls(standin_v1)] == [[0.0], [0.2]]
    [page] = body["pages"]
    assert (page["rawText"], page["finishReason"], page["attempts"], page["repetitionCut"]) == (
        "# Notice\nPets are allowed.", "stop", 2, False)


def test_with_retries_off_infers_looping_answer_is_cut(start_client, standin_v1: Path) -> None:
    client = start_client(checkpoint=standin_v1, ocr_max_new_tokens=400, ocr_page_retries=0)
    set_answer(standin_v1, "# Notice\n" + "The landlord may enter the premises with notice.\n" * 40)
    [page] = post(client, image_bytes()).json()["pages"]
    assert len(calls(standin_v1)) == 1
    assert (page["rawText"], page["finishReason"], page["attempts"], page["repetitionCut"]) == (
        "# Notice\nThe landlord may enter the premises with notice.", "length", 1, True)
