"""Runs the original DeepSeek-OCR checkpoints through their own code: `trust_remote_code` and `model.infer`."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from typing import Any, Iterator

import torch
from transformers import StoppingCriteriaList

from dsocr.catalogue import FinishReason, strip_eos
from dsocr.engines.generation import StopAbandoned
from ocr_engine import EngineInfo, OcrEngine, PageRequest, PageResult, TokenCounter
from settings import Settings

log = logging.getLogger("deepseek_ocr.engine")

PAGE_FILE = "page.png"


class ThreadStdout(io.TextIOBase):
    """Standard output that one thread at a time can capture for itself: what upstream's infer prints on the
    model thread is discarded, while every other thread's prints go on to the real stdout."""

    def __init__(self) -> None:
        self.local = threading.local()

    @contextlib.contextmanager
    def captured(self) -> Iterator[None]:
        if not isinstance(sys.stdout, ThreadStdout):  # installed once, around whatever stdout is
            self.real = sys.stdout
            sys.stdout = self
        self.local.sink = io.StringIO()
        try:
            yield
        finally:
            self.local.sink = None

    def write(self, text: str) -> int:
        sink = getattr(self.local, "sink", None)
        return (sink if sink is not None else self.real).write(text)

    def flush(self) -> None:
        self.real.flush()


MODEL_THREAD_STDOUT = ThreadStdout()


class GenerationCap:
    """Stands in for the model's `generate` while `infer` runs.

    Upstream's `infer` asks for 8192 new tokens whatever the caller wants, greedily; this applies
    DEEPSEEK_OCR_MAX_NEW_TOKENS, samples at `temperature` when the page is read again after it looped (infer has
    no argument for either), and notes whether the answer ended with end-of-sentence. Infer's own repetition guard
    (`no_repeat_ngram_size`) stays as it asks.
    """

    def __init__(self, generate: Any, max_new_tokens: int, eos_id: int | None, abandoned: threading.Event,
                 temperature: float | None = None) -> None:
        self.generate = generate
        self.max_new_tokens = max_new_tokens
        self.eos_id = eos_id
        self.abandoned = abandoned
        self.temperature = temperature
        self.finish_reason: FinishReason | None = None
        self.generated_tokens = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        requested = kwargs.get("max_new_tokens") or self.max_new_tokens
        kwargs["max_new_tokens"] = min(requested, self.max_new_tokens)
        if self.temperature is not None:  # only the temperature shapes the sampling, as on the other engines
            kwargs.update(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0)
        # Nobody waits for the answer any more (client gone, deadline passed): stop at the next token.
        kwargs["stopping_criteria"] = StoppingCriteriaList(
            [*(kwargs.get("stopping_criteria") or []), StopAbandoned([self.abandoned])]
        )
        output = self.generate(*args, **kwargs)
        prompt = args[0] if args else kwargs.get("input_ids")
        if isinstance(output, torch.Tensor) and isinstance(prompt, torch.Tensor):
            new_tokens = output[0, prompt.shape[-1]:].tolist()
            ended = self.eos_id in new_tokens
            self.generated_tokens = new_tokens.index(self.eos_id) + 1 if ended else len(new_tokens)
            self.finish_reason = "stop" if ended else "length"
        return output


class RemoteCodeEngine(OcrEngine):
    max_batch_size = 1  # infer takes one image

    def __init__(self, tokenizer: Any, model: Any, info: EngineInfo, max_new_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.token_counter = TokenCounter(self.tokenizer)
        self.model = model
        self.info = info
        self.max_new_tokens = max_new_tokens

    def count_tokens(self, text: str) -> int:
        return self.token_counter(text)

    @classmethod
    def load(cls, info: EngineInfo, dtype: torch.dtype, settings: Settings) -> "RemoteCodeEngine":
        from transformers import AutoModel, AutoTokenizer

        if info.device != "cuda":
            log.warning("upstream's infer calls .cuda(); on %s only a patched copy of its code runs", info.device)
        tokenizer = AutoTokenizer.from_pretrained(info.model, trust_remote_code=True)
        model = AutoModel.from_pretrained(
            info.model, trust_remote_code=True, use_safetensors=True, _attn_implementation=info.attn_implementation
        )
        return cls(tokenizer, model.eval().to(info.device).to(dtype), info, settings.ocr_max_new_tokens)

    def read_batch(self, batch: list[PageRequest]) -> list[PageResult]:
        return [self._infer_unless_abandoned(request) for request in batch]

    def _infer_unless_abandoned(self, request: PageRequest) -> PageResult:
        """A page whose client left is not read; its run folder may already be gone, so a file missing then is
        expected, not an error (nobody reads the result either way)."""
        if request.abandoned.is_set():
            return PageResult("", "stop", 0)
        try:
            return self._infer(request)
        except FileNotFoundError:
            if request.abandoned.is_set():
                return PageResult("", "stop", 0)
            raise

    def _infer(self, request: PageRequest) -> PageResult:
        image_file = request.work_dir / PAGE_FILE
        request.image.save(image_file)
        cap = GenerationCap(self.model.generate, self.max_new_tokens, self.tokenizer.eos_token_id, request.abandoned,
                            request.temperature)
        self.model.generate = cap  # infer calls self.generate: the instance attribute wins over the method
        try:
            with MODEL_THREAD_STDOUT.captured():  # infer streams its text to stdout; that copy is not the answer
                raw = self.model.infer(
                    self.tokenizer,
                    prompt=request.prompt,
                    image_file=str(image_file),
                    output_path=str(request.work_dir),
                    base_size=request.mode.base_size,
                    image_size=request.mode.image_size,
                    crop_mode=request.mode.crop_mode,
                    test_compress=False,
                    save_results=False,
                    eval_mode=True,
                )
        finally:
            del self.model.generate
            image_file.unlink(missing_ok=True)
        if not isinstance(raw, str):
            raise RuntimeError(f"model.infer returned {type(raw).__name__}, not the text (eval_mode=True ignored?)")
        raw = strip_eos(raw)
        if cap.finish_reason is None:  # infer did not go through self.generate: judge by the text's length
            tokens = len(self.tokenizer.encode(raw, add_special_tokens=False))
            return PageResult(raw, "length" if tokens >= self.max_new_tokens else "stop", tokens)
        return PageResult(raw, cap.finish_reason, cap.generated_tokens)
