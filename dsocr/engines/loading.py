"""Finds a checkpoint (a folder, a Hugging Face repo id, or the demo's), tells its family and layout from
config.json, and loads it with the engine that layout calls for."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

from dsocr.catalogue import ModelFamily, served_modes
from dsocr.demo import DEMO, DEMO_DIR_ENV, DemoError, check_demo_can_run, demo_settings, ensure_demo_checkpoint, is_demo
from dsocr.profiles import looks_like_repo_id, ships_own_code
from ocr_engine import EngineInfo, OcrEngine
from settings import AttnImpl, DeviceChoice, DtypeChoice, EngineChoice, Settings

log = logging.getLogger("deepseek_ocr.engine")

MODEL_PATH_FIX = (
    "Set DEEPSEEK_OCR_MODEL_PATH to a folder holding the checkpoint (config.json, weights, tokenizer) "
    "or to a Hugging Face repo id such as deepseek-community/DeepSeek-OCR-2."
)
# Without DEEPSEEK_OCR_MODEL_PATH: the seed's folder when it exists, else this repo from the Hugging Face hub.
DEFAULT_REPO = "deepseek-community/DeepSeek-OCR-2"
# How long the hub gets to answer before startup gives up on it (huggingface_hub itself retries for ~25 s).
HUB_PROBE_TIMEOUT_S = 5
NO_HUB_FIX = (
    "Run `./start.sh demo` (or DEEPSEEK_OCR_MODEL_PATH=demo) to try the service on a tiny random checkpoint, "
    "or set DEEPSEEK_OCR_MODEL_PATH to a checkpoint folder."
)


class ModelPathError(Exception):
    """DEEPSEEK_OCR_MODEL_PATH names nothing loadable."""


def model_source(settings: Settings) -> str:
    """What DEEPSEEK_OCR_MODEL_PATH names, checked before anything loads: `demo`, a checkpoint folder (resolved)
    or a Hugging Face repo id the hub (or its cache) can give. Unset, it is the seed's folder when that exists,
    else DEFAULT_REPO from the hub."""
    value = settings.ocr_model_path
    if is_demo(value):
        return demo_source(settings)
    if "ocr_model_path" not in settings.model_fields_set and not Path(value).expanduser().exists():
        seed_folder = os.path.abspath(Path(value).expanduser())
        log.info("DEEPSEEK_OCR_MODEL_PATH is not set and %s does not exist: the checkpoint is %s from the Hugging "
                 "Face hub", seed_folder, DEFAULT_REPO)
        try:
            check_hub(DEFAULT_REPO)
        except ModelPathError as exc:
            raise ModelPathError(
                f"no checkpoint: DEEPSEEK_OCR_MODEL_PATH is not set, {seed_folder} does not exist, and "
                f"{DEFAULT_REPO} {exc}. {NO_HUB_FIX}"
            ) from None
        return DEFAULT_REPO
    return resolve_model_source(value)


def demo_source(settings: Settings) -> str:
    """The demo: refused where it cannot run (the remote-code engine, transformers without the native classes);
    its checkpoint is built on the model thread, when the model loads."""
    if settings.ocr_engine is EngineChoice.remote_code:
        raise ModelPathError("DEEPSEEK_OCR_MODEL_PATH=demo is a native checkpoint: unset DEEPSEEK_OCR_ENGINE=remote-code "
                             "(and run ./start.sh demo)")
    try:
        folder = check_demo_can_run()
    except DemoError as exc:
        raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH=demo: {exc}") from None
    log.warning(
        "DEMO: DEEPSEEK_OCR_MODEL_PATH=demo serves a tiny RANDOMLY INITIALISED DeepSeek-OCR-2 checkpoint (kept in %s; "
        "%s moves it): every endpoint works, but the text it returns is random, not a reading of your documents; "
        "generation stops after %d tokens a page (DEEPSEEK_OCR_MAX_NEW_TOKENS). Set DEEPSEEK_OCR_MODEL_PATH to a "
        "real checkpoint to read documents.",
        folder, DEMO_DIR_ENV, demo_settings(settings).ocr_max_new_tokens,
    )
    return DEMO


def resolve_model_source(value: str) -> str:
    """A local checkpoint folder (resolved) or a Hugging Face repo id that the hub or its cache can give;
    anything else is refused with the fix."""
    path = Path(value).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH={value!r} is a file, not a checkpoint folder. {MODEL_PATH_FIX}")
        read_config(path)
        return str(path.resolve())
    if looks_like_repo_id(value):
        try:
            check_hub(value)
        except ModelPathError as exc:
            raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH={value!r}: the repo {exc}. {NO_HUB_FIX}") from None
        return value
    raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH={value!r}: no such folder ({path.absolute()}). {MODEL_PATH_FIX}")


def check_hub(repo: str) -> None:
    """Fails at once (ModelPathError, its message to follow the repo's name) when `repo` can come neither from
    the Hugging Face hub nor from its cache: offline (HF_HUB_OFFLINE) or the hub unreachable within
    HUB_PROBE_TIMEOUT_S, where huggingface_hub itself would retry for half a minute and then raise. Logs
    where the checkpoint comes from."""
    from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache

    cache = constants.HF_HUB_CACHE
    cached = isinstance(try_to_load_from_cache(repo, "config.json"), str)
    if constants.HF_HUB_OFFLINE:
        if not cached:
            raise ModelPathError(f"is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set")
        log.info("%s: from the Hugging Face cache %s (HF_HUB_OFFLINE is set)", repo, cache)
        return
    problem = _probe_hub(hf_hub_url(repo, "config.json"))
    if problem and not cached:
        raise ModelPathError(f"cannot be downloaded: {problem}")
    if problem:
        log.warning("%s: %s; using the copy in the Hugging Face cache %s (set HF_HUB_OFFLINE=1 to skip the hub)",
                    repo, problem, cache)
        return
    weights = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
    if any(isinstance(try_to_load_from_cache(repo, name), str) for name in weights):
        log.info("%s: from the Hugging Face cache %s", repo, cache)
    else:
        log.info("downloading %s from the Hugging Face hub into %s (HF_HUB_CACHE): several GB, once; later starts "
                 "read it from there", repo, cache)


def _probe_hub(url: str) -> str | None:
    """None when the hub answers for `url`; else what is wrong, in words."""
    from huggingface_hub.utils import build_hf_headers, get_session

    try:
        response = get_session().head(url, headers=build_hf_headers(), timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as exc:  # httpx or requests, depending on huggingface_hub's version
        host = url.split("/", 3)[2] if "://" in url else url
        return f"the Hugging Face hub ({host}) cannot be reached: {type(exc).__name__}: {' '.join(str(exc).split())}"
    if response.status_code in (401, 403, 404):
        return (f"the hub answers {response.status_code} for {url}: no such repo, or a gated or private one "
                "(log in with `hf auth login` or set HF_TOKEN)")
    if response.status_code >= 500:
        return f"the hub answers {response.status_code} for {url}"
    return None


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


def checkpoint_location(source: str) -> str:
    """The folder or repo id to load from: the demo's folder is built first (once; later calls find it built)."""
    if source != DEMO:
        return source
    try:
        return str(ensure_demo_checkpoint())
    except DemoError as exc:
        raise ModelPathError(f"DEEPSEEK_OCR_MODEL_PATH=demo: {exc}") from None


def fetch_config(source: str) -> dict[str, Any]:
    """config.json of a folder, of a Hub repo (downloaded into the Hugging Face cache) or of the demo."""
    source = checkpoint_location(source)
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
    if ships_own_code(config):
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
    DEEPSEEK_OCR_ENGINE) calls for. The demo's is built first, and generates DEMO_MAX_NEW_TOKENS tokens a page
    unless DEEPSEEK_OCR_MAX_NEW_TOKENS is set."""
    demo = source == DEMO
    if demo:
        source = checkpoint_location(source)
        settings = demo_settings(settings)
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
        modes=served_modes(family),
        demo=demo,
    )
    # Imported here: each engine needs its own transformers (the original code pins 4.46.3).
    if choice is EngineChoice.remote_code:
        from dsocr.engines.remote_code import RemoteCodeEngine

        engine: OcrEngine = RemoteCodeEngine.load(info, dtype, settings)
    else:
        from dsocr.engines.native import NativeEngine

        engine = NativeEngine.load(info, dtype, settings)
    log.info("model ready: %s (%s, %s engine) on %s, %s, attention %s%s",
             info.model, info.family.value, info.engine, info.device, info.dtype, info.attn_implementation,
             " (DEMO: random weights, random text)" if demo else "")
    return engine
