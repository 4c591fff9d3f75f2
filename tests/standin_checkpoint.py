"""Builds a STAND-IN checkpoint in the original remote-code layout (config.json with `auto_map`).

The original deepseek-ai/DeepSeek-OCR and DeepSeek-OCR-2 folders cannot be downloaded here; this folder has
their layout (config + custom modeling code + safetensors + tokenizer) with the code of standin/modeling_standin.py,
whose `infer` returns the answer a test writes with `set_answer`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

from dsocr.tiny.tokenizer import build_tokenizer

MODELING_FILE = Path(__file__).parent / "standin" / "modeling_standin.py"
ARCHITECTURES = {"v1": "DeepseekOCRForCausalLM", "v2": "DeepseekOCR2ForCausalLM"}


def build_standin_checkpoint(folder: Path, family: str = "v1") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(MODELING_FILE, folder / MODELING_FILE.name)
    spec = importlib.util.spec_from_file_location(f"standin_{folder.name}", folder / MODELING_FILE.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.StandInOcrModel(module.StandInOcrConfig()).save_pretrained(folder, safe_serialization=True)
    build_tokenizer().save_pretrained(folder)
    # A class name every transformers version knows, so that a folder built under one loads under the other.
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = {
        "model_type": "deepseek_vl_v2",
        "architectures": [ARCHITECTURES[family]],
        "auto_map": {
            "AutoConfig": "modeling_standin.StandInOcrConfig",
            "AutoModel": "modeling_standin.StandInOcrModel",
        },
        "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    set_answer(folder, "")
    return folder


def set_answer(folder: Path, text: str = "", raise_message: str | None = None, token_delay_s: float = 0.0,
               sampled_text: str | None = None) -> None:
    """What the stand-in's infer answers next (or raises; `sampled_text` when asked to sample), and how long each
    generated token takes."""
    (folder / "answer.json").write_text(json.dumps({"text": text, "raise": raise_message,
                                                    "token_delay_s": token_delay_s, "sampled_text": sampled_text}))


def calls(folder: Path) -> list[dict[str, Any]]:
    log = folder / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def load_arguments(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "load.json").read_text())
