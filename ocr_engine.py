"""The engine interface (a model loaded in this process) and the data types of reading a page: what a page
submitter is handed (PageRequest), and what it answers (PageResult, Timings)."""

from __future__ import annotations

import base64
import copy
import io
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from dsocr.catalogue import FinishReason, Mode, ModelFamily


# The file a page is sent as when it cannot be sent as uploaded: a TIFF compressed with PackBits, lossless. Measured on
# a PDF page rendered at 144 DPI (1191x1684), one core: 3-9 ms to encode and ~2 ms for the server to decode, against
# 35-39 ms and ~12 ms for a PNG at zlib's fastest level (Pillow filters every row of a PNG, whatever the level), for
# a file about 1.5 times as large (0.9 MB against 0.6). vLLM opens any format Pillow reads. PackBits only packs runs:
# a photo-like page would stay near its raw size, so past RAW_SHARE_FOR_PNG of it the page goes as a PNG at zlib's
# fastest level instead (about half the raw size for such a page).
LOSSLESS_FORMAT, LOSSLESS_MIME, LOSSLESS_OPTIONS = "TIFF", "image/tiff", {"compression": "packbits"}
RAW_SHARE_FOR_PNG = 0.5
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """A page as an image file, as a model server is sent it: the upload's own bytes when the page is read as it was
    uploaded, else one lossless encoding of its pixels."""

    data: bytes
    mime: str  # image/png, image/jpeg or image/webp as uploaded; image/tiff or image/png when encoded here
    width: int
    height: int

    @classmethod
    def lossless(cls, image: Image.Image) -> EncodedImage:
        """The pixels as one lossless file, fast to make and to read (LOSSLESS_FORMAT says which and why)."""
        buffer = io.BytesIO()
        image.save(buffer, LOSSLESS_FORMAT, **LOSSLESS_OPTIONS)
        raw_size = image.width * image.height * len(image.getbands())
        if buffer.tell() <= raw_size * RAW_SHARE_FOR_PNG:
            return cls(buffer.getvalue(), LOSSLESS_MIME, image.width, image.height)
        png = io.BytesIO()
        image.save(png, "PNG", compress_level=PNG_COMPRESS_LEVEL)
        smaller = min((buffer, LOSSLESS_MIME), (png, "image/png"), key=lambda encoded: encoded[0].tell())
        return cls(smaller[0].getvalue(), smaller[1], image.width, image.height)

    def data_url(self) -> str:
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(eq=False)  # compared by identity: a request holds a whole page image
class PageRequest:
    """One page image, validated and oriented, with the prompt and mode it is to be read with: its pixels for a
    model in this process, its file (`encoded`) for a model server; a page headed for a server may have no pixels
    here at all (they were decoded in a worker process)."""

    image: Image.Image | None
    prompt: str
    mode: Mode
    work_dir: Path
    on_text: Callable[[str], None] | None = None  # gets the raw text piece by piece as it is generated
    # Set when nobody waits for the answer any more (client gone, deadline passed): generation may stop early.
    abandoned: threading.Event = field(default_factory=threading.Event)
    # None: upstream's greedy decoding. A number: sample at that temperature (a page read again after it looped).
    temperature: float | None = None
    encoded: EncodedImage | None = None


@dataclass
class PageResult:
    raw_text: str
    finish_reason: FinishReason
    generated_tokens: int
    attempts: int = 1  # times the page was read (dsocr.serving.retries)
    repetition_cut: bool = False  # the text's repeated tail was cut (dsocr.serving.repetition)


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
    demo: bool = False  # the demo's random checkpoint (DEEPSEEK_OCR_MODEL_PATH=demo): the text is random

    def mode(self, name: str) -> Mode | None:
        return next((mode for mode in self.modes if mode.name == name), None)


@dataclass
class Timings:
    queue_ms: float  # waiting for the model (a batch, or a vLLM server's free slot)
    inference_ms: float
    batch_id: int  # pages of one batch share it


# What a waiting page is told: ("queued", {"position": n}), ("started", {"batchSize": n}).
ProgressCallback = Callable[[str, dict], None]


class TokenCounter:
    """Counts tokens with a private copy of a tokenizer: the model thread's own copy changes its padding state
    while it runs, which a fast tokenizer does not allow from two threads at once."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = copy.deepcopy(tokenizer)
        self.lock = threading.Lock()

    def __call__(self, text: str) -> int:
        with self.lock:
            return len(self.tokenizer.encode(text, add_special_tokens=False))


class OcrEngine(ABC):
    """A model in this process: loaded once; runs batches of prepared page requests (on the model thread), one
    result per request, in order; `info` says what it is."""

    info: EngineInfo
    max_batch_size: int | None = None  # the most requests one `read_batch` takes; None: whatever the scheduler gathers

    @abstractmethod
    def read_batch(self, batch: list[PageRequest]) -> list[PageResult]: ...

    def count_tokens(self, text: str) -> int | None:
        """How many tokens `text` is for this model's tokenizer; None when the engine cannot tell. Called from
        worker threads."""
        return None
