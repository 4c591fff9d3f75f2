"""Settings come from the DEEPSEEK_* variables (docs/configuration.md); a bad value stops startup naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from settings import AttnImpl, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("clean_env")


def test_defaults_are_the_seeds() -> None:
    settings = load_settings()
    assert settings.ocr_model_path == "../../ocr_project/model"
    assert settings.attn_impl is AttnImpl.flash_attention_2
    assert settings.allowed_origins == ["*"]
    assert settings.max_image_mb == 15
    assert settings.ocr_default_prompt == "<image>\n<|grounding|>Convert the document to markdown."
    assert settings.ocr_runs_dir == Path("runs")
    assert (settings.ocr_device.value, settings.ocr_dtype.value, settings.ocr_engine.value) == ("auto", "auto", "auto")
    assert (settings.ocr_max_new_tokens, settings.ocr_default_mode, settings.ocr_max_prompt_chars) == (8192, "gundam", 4000)


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSEEK_OCR_MODEL_PATH", "deepseek-community/DeepSeek-OCR-2")
    monkeypatch.setenv("DEEPSEEK_ATTN_IMPL", "eager")
    monkeypatch.setenv("DEEPSEEK_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("DEEPSEEK_MAX_IMAGE_MB", "2.5")
    monkeypatch.setenv("DEEPSEEK_OCR_DEVICE", "cpu")
    monkeypatch.setenv("DEEPSEEK_OCR_MAX_NEW_TOKENS", "77")
    monkeypatch.setenv("DEEPSEEK_OCR_DEFAULT_MODE", "BASE")
    settings = load_settings()
    assert settings.ocr_model_path == "deepseek-community/DeepSeek-OCR-2"
    assert settings.attn_impl is AttnImpl.eager
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.max_upload_bytes == int(2.5 * 1024 * 1024)
    assert (settings.ocr_device.value, settings.ocr_max_new_tokens, settings.ocr_default_mode) == ("cpu", 77, "base")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DEEPSEEK_MAX_IMAGE_MB", "lots"),
        ("DEEPSEEK_MAX_IMAGE_MB", "0"),
        ("DEEPSEEK_OCR_DEVICE", "gpu"),
        ("DEEPSEEK_OCR_DTYPE", "int3"),
        ("DEEPSEEK_ATTN_IMPL", "magic"),
        ("DEEPSEEK_OCR_MAX_NEW_TOKENS", "-1"),
        ("DEEPSEEK_OCR_DEFAULT_MODE", "huge"),
        ("DEEPSEEK_OCR_MAX_PROMPT_CHARS", "0"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_uvicorn_refuses_to_start_with_a_bad_value() -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DEEPSEEK_")}
    env["DEEPSEEK_OCR_DEVICE"] = "gpu"
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "DEEPSEEK_OCR_DEVICE" in result.stderr


def test_a_root_path_must_be_an_absolute_prefix() -> None:
    import pytest as _pytest

    from settings import SettingsError, load_settings

    assert load_settings(ocr_root_path="/ocr").ocr_root_path == "/ocr"
    with _pytest.raises(SettingsError, match="DEEPSEEK_OCR_ROOT_PATH"):
        load_settings(ocr_root_path="ocr")
