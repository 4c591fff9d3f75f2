"""Which page submitter serves this process: the vLLM pool (DEEPSEEK_OCR_ENGINE=vllm), else the local host."""

from __future__ import annotations

from dsocr.serving.local_host import LocalHost
from dsocr.serving.metrics import Metrics
from dsocr.serving.submitter import PageSubmitter
from settings import EngineChoice, Settings


def make_submitter(settings: Settings, metrics: Metrics) -> PageSubmitter:
    if settings.ocr_engine is EngineChoice.vllm:
        from dsocr.serving.vllm_pool import VllmPool  # imported only here: the local host's front never needs httpx

        return VllmPool(settings, metrics)
    return LocalHost(settings, metrics)
