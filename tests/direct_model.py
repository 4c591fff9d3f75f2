"""Runs a checkpoint straight through transformers, bypassing the service, to get the output to expect."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from transformers import AutoModelForImageTextToText, AutoProcessor

# The processor arguments each DeepSeek-OCR-2 mode must reach the model with, written out independently of the
# service's own mapping: base = one 1024 view; gundam = 1024 global view + 2..6 tiles of 768.
BASE_ARGS = {"crop_to_patches": False, "size": {"height": 1024, "width": 1024}, "tile_size": 1024}
GUNDAM_ARGS = {"crop_to_patches": True, "min_patches": 2, "max_patches": 6, "tile_size": 768,
               "size": {"height": 1024, "width": 1024}}


@lru_cache(maxsize=4)
def _load(checkpoint: str) -> tuple[Any, Any]:
    processor = AutoProcessor.from_pretrained(checkpoint)
    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    return processor, model


def expected_raw_text(
    checkpoint: Path, data: bytes, prompt: str, args: dict[str, Any], max_new_tokens: int, ngram: tuple[int, int] | None = None
) -> str:
    """What the checkpoint generates greedily; with `ngram` = (size, window), under that repetition guard."""
    processor, model = _load(str(checkpoint))
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    inputs = processor(images=image, text=prompt, return_tensors="pt", **args)
    processors = []
    if ngram:
        from dsocr.engines.generation import NGramRepetitionGuard, never_banned_ids

        processors.append(NGramRepetitionGuard(*ngram, inputs["input_ids"].shape[1], never_banned_ids(processor.tokenizer)))
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, logits_processor=processors)
    generated = output[0, inputs["input_ids"].shape[1]:].tolist()
    eos = processor.tokenizer.eos_token_id
    if eos in generated:
        generated = generated[: generated.index(eos)]
    return processor.tokenizer.decode(generated, skip_special_tokens=False).strip()
