"""Loads the engine once, in a background thread, and says whether it is loading, ready or failed."""

from __future__ import annotations

import logging
import threading
from typing import Literal

from dsocr.errors import Unavailable
from dsocr.catalogue import FAMILY_MODES, ModelFamily
from dsocr.engines.loading import detect_family, fetch_config, load_engine
from ocr_engine import OcrEngine
from settings import Settings

log = logging.getLogger("deepseek_ocr.model")

# Seconds a client is told to wait before retrying while the model loads.
LOADING_RETRY_AFTER_S = 10


class ModelState:
    def __init__(self) -> None:
        self.status: Literal["loading", "ready", "error"] = "loading"
        self.detail = "The model is loading"
        self.engine: OcrEngine | None = None
        self.family: ModelFamily | None = None  # known from config.json, before the weights load

    @property
    def mode_names(self) -> list[str]:
        return [mode.name for mode in FAMILY_MODES[self.family]] if self.family else []

    def start_loading(self, settings: Settings, source: str) -> None:
        # A daemon thread: a process told to stop while a 7 GB checkpoint loads does not wait for it.
        threading.Thread(target=self._load, args=(settings, source), name="model-loader", daemon=True).start()

    def _load(self, settings: Settings, source: str) -> None:
        log.info("loading %s", source)
        try:
            config = fetch_config(source)
            self.family = detect_family(config)
            self.engine = load_engine(settings, source, config)
        except Exception as exc:  # any failure of a load is reported by /health, not raised
            log.exception("loading %s failed", source)
            self.detail = f"Loading the model from {source} failed: {type(exc).__name__}: {exc}"
            self.status = "error"
            return
        self.detail = "ready"
        self.status = "ready"

    def ready_engine(self) -> OcrEngine:
        if self.engine is None:
            retry = {"Retry-After": str(LOADING_RETRY_AFTER_S)} if self.status == "loading" else None
            raise Unavailable(self.detail, headers=retry)
        return self.engine
