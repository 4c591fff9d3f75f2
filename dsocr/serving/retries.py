"""Pages that loop are read again (olmOCR's answer to DeepSeek-OCR's loops): the first reading is upstream's greedy
decoding; a page that ends by the token cap, or in a repeated tail (dsocr.serving.repetition), is read again
sampling at DEEPSEEK_OCR_RETRY_TEMPERATURES in turn, at most DEEPSEEK_OCR_PAGE_RETRIES more times, and the first
clean reading (ended by the model, no repeated tail) wins. When none is clean, the longest reading once its
repeated tail is cut is kept, cut."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from dsocr.serving.metrics import Metrics
from dsocr.serving.repetition import RepeatedTail, cut_repeated_tail, repeated_tail
from dsocr.serving.workers import in_worker
from ocr_engine import PageRequest, PageResult, ProgressCallback, Timings

log = logging.getLogger("deepseek_ocr.model")

ReadOnce = Callable[[PageRequest], Awaitable[tuple[PageResult, Timings]]]
# How a page that did not read cleanly the first time ended (deepseek_ocr_page_retries_total's label).
Outcome = Literal["recovered", "cut", "unresolved"]


@dataclass
class Reading:
    """One reading of a page, and the repeated tail its text ends in."""

    result: PageResult
    tail: RepeatedTail | None

    @property
    def clean(self) -> bool:
        return self.result.finish_reason == "stop" and self.tail is None

    @property
    def kept_length(self) -> int:
        """How much of its text is left once its repeated tail is cut: the measure of the best reading."""
        return self.tail.keep if self.tail else len(self.result.raw_text)

    @property
    def why(self) -> str:
        return "repetition" if self.tail else "length"


def temperature_of_retry(temperatures: list[float], retry: int) -> float:
    """The temperature of retry number `retry` (from 1): the list in turn, its last one again past its end."""
    return temperatures[min(retry, len(temperatures)) - 1]


async def read_until_clean(
    read: ReadOnce, request: PageRequest, on_progress: ProgressCallback | None, retries: int,
    temperatures: list[float], metrics: Metrics,
) -> tuple[PageResult, Timings]:
    """Reads the page with `read`, then at most `retries` more times as the ladder says. `on_progress` hears
    ("retry", {"attempt", "temperature", "reason"}) before each new reading (the text streamed so far is void: the
    new reading's follows), and ("replace", {"text"}) when the text kept is not the last one streamed. The timings
    add up the readings'."""
    readings: list[Reading] = []
    queue_ms = inference_ms = 0.0
    attempt = request
    while True:
        try:
            result, timings = await read(attempt)
        except Exception as exc:
            if not readings:
                raise
            # A failed retry does not undo the reading the page already has.
            log.warning("reading a page again failed (%s: %s); keeping its earlier reading", type(exc).__name__, exc)
            break
        queue_ms += timings.queue_ms
        inference_ms += timings.inference_ms
        batch_id = timings.batch_id
        reading = Reading(result, await in_worker(repeated_tail, result.raw_text))
        readings.append(reading)
        retry = len(readings)
        if reading.clean or request.abandoned.is_set() or retry > retries:
            break
        temperature = temperature_of_retry(temperatures, retry)
        if on_progress:
            on_progress("retry", {"attempt": retry + 1, "temperature": temperature, "reason": reading.why})
        attempt = dataclasses.replace(request, temperature=temperature)
    kept, outcome = _keep(readings)
    final = dataclasses.replace(
        kept.result,
        raw_text=cut_repeated_tail(kept.result.raw_text, kept.tail) if kept.tail else kept.result.raw_text,
        attempts=len(readings),
        repetition_cut=kept.tail is not None,
    )
    if outcome is not None and not request.abandoned.is_set():
        metrics.page_retries.labels(outcome).inc()
    if on_progress and final.raw_text != readings[-1].result.raw_text:
        on_progress("replace", {"text": final.raw_text})
    return final, Timings(round(queue_ms, 1), round(inference_ms, 1), batch_id)


def _keep(readings: list[Reading]) -> tuple[Reading, Outcome | None]:
    """The reading to answer with, and how the page ended (None: clean the first time)."""
    if readings[-1].clean:
        return readings[-1], ("recovered" if len(readings) > 1 else None)
    best = max(readings, key=lambda reading: reading.kept_length)  # the earliest of equals
    return best, ("cut" if best.tail else "unresolved")
