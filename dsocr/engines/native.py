"""Runs checkpoints in transformers' native layout (deepseek-community/DeepSeek-OCR-2) with batched generate."""

from __future__ import annotations

from typing import Any

import torch

from dsocr.engines.generation import (
    BatchTextStreamer,
    NGramRepetitionGuard,
    PerRowSampling,
    StopAbandoned,
    never_banned_ids,
    sampling_arguments,
)
from dsocr.catalogue import Mode, ModelFamily
from ocr_engine import EngineInfo, OcrEngine, PageRequest, PageResult, TokenCounter
from settings import Settings


def processor_kwargs(mode: Mode) -> dict[str, Any]:
    """The processor arguments that give `mode`'s views.

    Without cropping the processor resizes the global view to `tile_size` but counts its tokens from `size`,
    so both are set to the mode's view size (otherwise: "Image features and image tokens do not match").
    """
    view = {"height": mode.base_size, "width": mode.base_size}
    if not mode.crop_mode:
        return {"crop_to_patches": False, "size": view, "tile_size": mode.base_size}
    return {
        "crop_to_patches": True,
        "size": view,
        "tile_size": mode.image_size,
        "min_patches": mode.min_tiles,
        "max_patches": mode.max_tiles,
    }


class NativeEngine(OcrEngine):
    def __init__(self, processor: Any, model: Any, info: EngineInfo, settings: Settings) -> None:
        self.processor = processor
        self.model = model
        self.info = info
        self.max_new_tokens = settings.ocr_max_new_tokens
        self.ngram_size = settings.ocr_ngram_size
        self.ngram_window = settings.ocr_ngram_window
        self.tokenizer = processor.tokenizer
        self.token_counter = TokenCounter(self.tokenizer)
        self.never_banned = never_banned_ids(self.tokenizer)
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        # Left padding keeps every prompt's last token at the end of its row, as batched generation needs.
        self.tokenizer.padding_side = "left"

    def count_tokens(self, text: str) -> int:
        return self.token_counter(text)

    @classmethod
    def load(cls, info: EngineInfo, dtype: torch.dtype, settings: Settings) -> "NativeEngine":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if info.family is not ModelFamily.v2:
            raise ValueError(f"transformers' native DeepSeek-OCR classes run DeepSeek-OCR-2 only, not {info.family.value}")
        processor = AutoProcessor.from_pretrained(info.model)
        model = AutoModelForImageTextToText.from_pretrained(info.model, dtype=dtype, attn_implementation=info.attn_implementation)
        return cls(processor, model.to(info.device).eval(), info, settings)

    def read_batch(self, batch: list[PageRequest]) -> list[PageResult]:
        mode = batch[0].mode
        if any(request.mode != mode for request in batch):
            raise ValueError("a batch holds one mode")
        inputs = self.processor(
            images=[request.image for request in batch],
            text=[request.prompt for request in batch],
            padding=True,
            return_tensors="pt",
            **processor_kwargs(mode),
        )
        inputs = inputs.to(self.model.device).to(self.model.dtype)
        prompt_length = inputs["input_ids"].shape[1]
        processors = []
        if self.ngram_size and self.ngram_window:
            processors.append(NGramRepetitionGuard(self.ngram_size, self.ngram_window, prompt_length, self.never_banned))
        # Pages read again after they looped sample; the others of the batch stay greedy.
        temperatures = [request.temperature for request in batch]
        sampling = sampling_arguments(temperatures)
        if sampling["do_sample"]:
            processors.append(PerRowSampling(temperatures))
        callbacks = [request.on_text for request in batch]
        streamer = BatchTextStreamer(self.tokenizer, self.eos_id, callbacks) if any(callbacks) else None
        with torch.inference_mode():
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                **sampling,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                logits_processor=processors,
                stopping_criteria=[StopAbandoned([request.abandoned for request in batch])],
                streamer=streamer,
            )
        return [self._result(row) for row in output[:, prompt_length:].tolist()]

    def _result(self, generated: list[int]) -> PageResult:
        finished = self.eos_id in generated
        if finished:
            generated = generated[: generated.index(self.eos_id)]
        raw_text = self.tokenizer.decode(generated, skip_special_tokens=False).strip()
        return PageResult(raw_text, "stop" if finished else "length", len(generated) + finished)
