"""Finds a checkpoint (a folder or a Hugging Face repo id), tells its family and layout from config.json, and
loads it with the engine that layout calls for."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from dsocr.catalogue import FAMILY_MODES, ModelFamily
from ocr_engine import EngineInfo, OcrEngine
from settings import AttnImpl, DeviceChoice, DtypeChoice, EngineChoice, Settings

log = logging.getLogger("deepseek_ocr.engine")

REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
MODEL_PATH_FIX = (
    "Set DEEPSEEK_OCR_MODEL_PATH to a folder holding the checkpoint (config.json, weights, tokenizer) "
    "or to a Hugging Face repo id such as deepseek-community/DeepSeek-OCR-2."
)


class ModelPathError(Exception):
    """DEEPSEEK_OCR_MODEL_PATH names nothing loadable."""


def resolve_model_source(value: str) -> str:
    """A local checkpoint folder (resolved) or a Hugging Face repo id; anything else is refused with the fix."""
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH={value!r} is a file, not a checkpoint folder. {MODEL_PATH_FIX}")
        read_config(path)
        return str(path.resolve())
    if REPO_ID.fullmatch(value) and ".." not in value:
        return value
    raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH={value!r}: no such folder ({path.absolute()}). {MODEL_PATH_FIX}")


def read_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelPathError(f"{folder} has no config.json, so it is not a checkpoint. {MODEL_PATH_FIX}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelPathError(f"cannot read {config_file}: {exc}. {MODEL_PATH_FIX}") from None
    if not isinstance(config, dict):
        raise ModelPathError(f"{config_file} is not a JSON object. {MODEL_PATH_FIX}")
    return config


def fetch_config(source: str) -> dict[str, Any]:
    """config.json of a folder or of a Hub repo (downloaded into the Hugging Face cache)."""
    if Path(source).is_dir():
        return read_config(Path(source))
    from huggingface_hub import hf_hub_download

    return read_config(Path(hf_hub_download(source, "config.json")).parent)


def detect_family(config: dict[str, Any]) -> ModelFamily:
    """DeepSeek-OCR-2 (native `deepseek_ocr2`, or original code named *OCR2*) or the first DeepSeek-OCR."""
    names = [config.get("model_type", ""), *(config.get("architectures") or []), *(config.get("auto_map") or {}).values()]
    text = " ".join(map(str, names)).lower()
    return ModelFamily.v2 if "ocr2" in text or "ocr_2" in text else ModelFamily.v1


def detect_engine(config: dict[str, Any]) -> EngineChoice:
    """Custom code (`auto_map`) runs through remote code; a model type this transformers knows runs natively."""
    if config.get("auto_map"):
        return EngineChoice.remote_code
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING:
        return EngineChoice.transformers
    raise ValueError(
        f"cannot tell how to run model_type {config.get('model_type')!r}: it ships no code (auto_map) and this "
        "transformers does not know it; upgrade transformers or set DEEPSEEK_OCR_ENGINE"
    )


def resolve_device(choice: DeviceChoice) -> str:
    if choice is not DeviceChoice.auto:
        return choice.value
    import torch  # here, not at the top: serving through vLLM needs no torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(choice: DtypeChoice, device: str) -> "torch.dtype":
    import torch

    if choice is DtypeChoice.auto:
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, choice.value)


def resolve_attn(requested: AttnImpl, device: str, fallback: AttnImpl) -> str:
    """flash_attention_2 only where it can run (CUDA with flash-attn installed); otherwise `fallback`, logged."""
    if requested is not AttnImpl.flash_attention_2:
        return requested.value
    from transformers.utils import is_flash_attn_2_available

    if device == "cuda" and is_flash_attn_2_available():
        return requested.value
    reason = "flash-attn is not installed" if device == "cuda" else f"the device is {device}, not CUDA"
    log.warning("DEEPSEEK_ATTN_IMPL=flash_attention_2 but %s: using %s", reason, fallback.value)
    return fallback.value


def load_engine(settings: Settings, source: str, config: dict[str, Any] | None = None) -> OcrEngine:
    """Loads the checkpoint at `source` (whose config.json may be given) with the engine its layout (or
    DEEPSEEK_OCR_ENGINE) calls for."""
    config = config if config is not None else fetch_config(source)
    family = detect_family(config)
    choice = detect_engine(config) if settings.ocr_engine is EngineChoice.auto else settings.ocr_engine
    device = resolve_device(settings.ocr_device)
    dtype = resolve_dtype(settings.ocr_dtype, device)
    # The original code has eager and flash-attention layers only, no sdpa.
    fallback = AttnImpl.eager if choice is EngineChoice.remote_code else AttnImpl.sdpa
    info = EngineInfo(
        model=source,
        engine=choice.value,
        family=family,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        attn_implementation=resolve_attn(settings.attn_impl, device, fallback),
        modes=FAMILY_MODES[family],
    )
    # Imported here: each engine needs its own transformers (the original code pins 4.46.3).
    if choice is EngineChoice.remote_code:
        from dsocr.engines.remote_code import RemoteCodeEngine

        engine: OcrEngine = RemoteCodeEngine.load(info, dtype, settings)
    else:
        from dsocr.engines.native import NativeEngine

        engine = NativeEngine.load(info, dtype, settings)
    log.info("model ready: %s (%s, %s engine) on %s, %s, attention %s",
             info.model, info.family.value, info.engine, info.device, info.dtype, info.attn_implementation)
    return engine
