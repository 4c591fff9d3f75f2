"""The engine interface and its data types: what the pipeline hands an engine, and what it gets back."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from dsocr.catalogue import FinishReason, Mode, ModelFamily


@dataclass(eq=False)  # compared by identity: a request holds a whole page image
class PageRequest:
    """One page image, validated and oriented, with the prompt and mode it is to be read with."""

    image: Image.Image
    prompt: str
    mode: Mode
    work_dir: Path
    on_text: Callable[[str], None] | None = None  # gets the raw text piece by piece as it is generated
    # Set when nobody waits for the answer any more (client gone, deadline passed): generation may stop early.
    abandoned: threading.Event = field(default_factory=threading.Event)


@dataclass
class PageResult:
    raw_text: str
    finish_reason: FinishReason
    generated_tokens: int


@dataclass
class EngineInfo:
    """What /health and /api/modes say about the loaded model."""

    model: str
    engine: str
    family: ModelFamily
    device: str
    dtype: str
    attn_implementation: str
    modes: tuple[Mode, ...] = field(default=())

    def mode(self, name: str) -> Mode | None:
        return next((mode for mode in self.modes if mode.name == name), None)


class OcrEngine(ABC):
    """Loaded once; runs batches of prepared page requests, one result per request, in order."""

    info: EngineInfo
    max_batch_size: int | None = None  # the most requests one `run` takes; None: whatever the scheduler gathers

    @abstractmethod
    def run(self, batch: list[PageRequest]) -> list[PageResult]: ...
