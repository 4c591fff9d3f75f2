"""Which install profile (start.sh's virtual environment) a checkpoint needs: `native`, `remote-code` or `vllm`.

start.sh asks this (`python -m dsocr profile`) before any virtual environment exists, with the system's python3,
so this module imports the standard library only. It reads what the service will read: DEEPSEEK_OCR_ENGINE,
DEEPSEEK_OCR_MODEL_PATH, and for a repo id the config.json already in the Hugging Face cache, never the network.
A checkpoint it cannot read is `native`: the service itself then names what is wrong with it. The rules on what
DEEPSEEK_OCR_MODEL_PATH names (the demo, a repo id, a checkpoint with its own code) live here, and the engines'
loading uses them too, so that start.sh and the service cannot disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any


class Profile(str, Enum):
    native = "native"  # requirements.txt: the transformers that has the native DeepSeek-OCR classes
    remote_code = "remote-code"  # requirements-remote-code.txt: the transformers the original code pins
    vllm = "vllm"  # requirements-service.txt only: the front of vLLM servers, no torch


DEMO = "demo"  # the value of DEEPSEEK_OCR_MODEL_PATH that asks for the demo (dsocr.demo), a native checkpoint
# What looks like a Hugging Face repo id ("owner/name"); a path such as ../x/y is a folder, not a repo.
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# The original checkpoints ship their own modelling code: before they are in the cache, their name says so.
ORIGINAL_REPOS = frozenset({"deepseek-ai/DeepSeek-OCR", "deepseek-ai/DeepSeek-OCR-2"})
# settings.py's default for DEEPSEEK_OCR_MODEL_PATH (the seed's folder, relative to the service's folder).
SEED_MODEL_PATH = "../../ocr_project/model"


def is_demo(model_path: str) -> bool:
    return model_path.strip().lower() == DEMO


def looks_like_repo_id(value: str) -> bool:
    return bool(REPO_ID.fullmatch(value)) and ".." not in value


def ships_own_code(config: Mapping[str, Any]) -> bool:
    """An original-layout checkpoint: its config.json maps the Auto classes to code of its own (`auto_map`), which
    runs through the remote-code engine; one without it is a model type transformers knows."""
    return bool(config.get("auto_map"))


def hub_cache(environ: Mapping[str, str]) -> Path:
    """The Hugging Face hub's cache folder, found as huggingface_hub finds it (an empty variable counts as unset)."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return Path(environ[name]).expanduser()
    home = environ.get("HF_HOME") or str(Path(environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(home).expanduser() / "hub"


def cached_config(repo_id: str, environ: Mapping[str, str]) -> Path | None:
    """config.json of `repo_id` in the hub's cache: the snapshot refs/main names, else any snapshot that has one."""
    repo = hub_cache(environ) / f"models--{repo_id.replace('/', '--')}"
    try:
        revision = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        revision = ""
    if revision and "/" not in revision and (repo / "snapshots" / revision / "config.json").is_file():
        return repo / "snapshots" / revision / "config.json"
    return next((path for path in sorted(repo.glob("snapshots/*/config.json")) if path.is_file()), None)


def _has_own_code(config_file: Path) -> bool:
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and ships_own_code(config)


def checkpoint_profile(model_path: str, environ: Mapping[str, str]) -> Profile:
    """The profile the checkpoint at DEEPSEEK_OCR_MODEL_PATH runs in when the engine is chosen from it (auto)."""
    if is_demo(model_path):
        return Profile.native
    folder_config = Path(model_path).expanduser() / "config.json"
    if folder_config.is_file():
        return Profile.remote_code if _has_own_code(folder_config) else Profile.native
    if looks_like_repo_id(model_path):
        cached = cached_config(model_path, environ)
        if cached is None:
            return Profile.remote_code if model_path in ORIGINAL_REPOS else Profile.native
        return Profile.remote_code if _has_own_code(cached) else Profile.native
    return Profile.native


def profile_for(environ: Mapping[str, str]) -> Profile:
    """The profile for the service as `environ` configures it: DEEPSEEK_OCR_ENGINE when it names one, else the
    checkpoint's layout."""
    engine = environ.get("DEEPSEEK_OCR_ENGINE") or "auto"
    if engine == "vllm":
        return Profile.vllm
    if engine == "remote-code":
        return Profile.remote_code
    if engine != "auto":  # transformers (or a value the service itself will refuse)
        return Profile.native
    return checkpoint_profile(environ.get("DEEPSEEK_OCR_MODEL_PATH") or SEED_MODEL_PATH, environ)
