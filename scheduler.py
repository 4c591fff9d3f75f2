"""Runs page requests on the engine, one batch at a time, off the event loop."""

from __future__ import annotations

import asyncio

from ocr_engine import OcrEngine, PageRequest, PageResult


class InferenceRunner:
    """The seed's protection against running out of GPU memory: one call into the model at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()

    async def run(self, engine: OcrEngine, page: PageRequest) -> PageResult:
        async with self.lock:
            [result] = await asyncio.to_thread(engine.run, [page])
        return result
