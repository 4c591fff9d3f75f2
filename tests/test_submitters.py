"""The one page-submitting interface, used as a background worker uses it: outside any HTTP request, a page is
handed over as a bare PageRequest with a progress callback, and its result comes back; cancelling the wait, or
setting the request's `abandoned`, stops its generation. Both implementations: the local host on the real tiny
checkpoint, and the vLLM pool on the OpenAI stand-in (see openai_standin.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Awaitable, Callable, TypeVar

import pytest
from PIL import Image

from dsocr.catalogue import V2_MODES
from dsocr.errors import Unavailable
from dsocr.serving.local_host import LocalHost
from dsocr.serving.metrics import Metrics
from dsocr.serving.submitter import PageSubmitter
from dsocr.serving.vllm_pool import VllmPool
from helpers import registry_sample
from ocr_engine import PageRequest
from openai_standin import OpenAIStandIn
from settings import load_settings

T = TypeVar("T")
WAIT_S = 120
PROMPT = "<image>\nFree OCR."


async def until(condition: Callable[[], bool]) -> None:
    """Waits on the event loop until `condition` holds; fails the test after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def serving(submitter: PageSubmitter, source: str, test: Callable[[PageSubmitter], Awaitable[T]]) -> T:
    """Runs `test(submitter)` once the submitter is ready, then stops it."""
    async def main() -> T:
        submitter.start(source)
        try:
            await until(lambda: submitter.status != "loading" and submitter.info is not None)
            return await asyncio.wait_for(test(submitter), WAIT_S)
        finally:
            await submitter.stop(0)

    return asyncio.run(main())


def page(submitter: PageSubmitter, tmp_path: Path) -> PageRequest:
    return PageRequest(image=Image.new("RGB", (64, 64), "white"), prompt=PROMPT,
                       mode=submitter.ready_info().modes[-1], work_dir=tmp_path)


async def read_then_leave(submitter: PageSubmitter, request: PageRequest, how: str) -> tuple[object, list[str]]:
    """Submits `request` and, once its first text has come, stops waiting for it: `cancel` the wait, or `abandon`
    (set the request's `abandoned`). Returns what the submission ended with (its result or exception) and the
    text pieces heard."""
    pieces: list[str] = []
    request.on_text = pieces.append  # called on the model thread
    reading = asyncio.ensure_future(submitter.submit(request))
    await until(lambda: bool(pieces))
    if how == "cancel":
        reading.cancel()
    else:
        request.abandoned.set()
    return (await asyncio.gather(reading, return_exceptions=True))[0], pieces


def local_host(checkpoint: Path, max_new_tokens: int) -> tuple[LocalHost, Metrics]:
    metrics = Metrics()
    # Random weights end every page by the cap: read once, as the tests' settings read it (helpers.make_settings).
    settings = load_settings(ocr_model_path=str(checkpoint), ocr_max_new_tokens=max_new_tokens, ocr_batch_wait_ms=0,
                             ocr_page_retries=0)
    return LocalHost(settings, metrics), metrics


def vllm_pool(openai_standin: OpenAIStandIn) -> tuple[VllmPool, Metrics]:
    metrics = Metrics()
    settings = load_settings(ocr_engine="vllm", ocr_vllm_urls=openai_standin.url, ocr_vllm_probe_interval_s=0.05)
    return VllmPool(settings, metrics), metrics


def test_the_local_host_reads_a_bare_page_request(native_checkpoint: Path, tmp_path: Path) -> None:
    host, _ = local_host(native_checkpoint, max_new_tokens=6)
    heard: list[str] = []

    async def test(submitter: PageSubmitter) -> tuple:
        return await submitter.submit(page(submitter, tmp_path), lambda name, data: heard.append(name))

    result, timings = serving(host, str(native_checkpoint), test)
    assert heard == ["queued", "started"]
    assert (result.finish_reason, result.generated_tokens) == ("length", 6)  # random weights never stop early
    assert timings.inference_ms > 0


def test_the_vllm_pool_reads_a_bare_page_request(openai_standin: OpenAIStandIn, tmp_path: Path) -> None:
    pool, _ = vllm_pool(openai_standin)
    heard: list[str] = []

    async def test(submitter: PageSubmitter) -> tuple:
        return await submitter.submit(page(submitter, tmp_path), lambda name, data: heard.append(name))

    result, _ = serving(pool, "", test)
    assert heard == ["started"]
    assert (result.raw_text, result.finish_reason) == ("# Title\n\nSome text.", "stop")
    assert openai_standin.bodies[0]["messages"][0]["content"][1]["text"] == "Free OCR."


@pytest.mark.parametrize("how", ["cancel", "abandon"])
def test_the_local_host_stops_a_generation_nobody_waits_for(native_checkpoint: Path, tmp_path: Path, how: str) -> None:
    limit = 2000
    host, metrics = local_host(native_checkpoint, max_new_tokens=limit)

    async def test(submitter: PageSubmitter) -> None:
        request = page(submitter, tmp_path)
        await read_then_leave(submitter, request, how)
        await until(lambda: registry_sample(metrics.registry, "deepseek_ocr_batch_size_count") == 1
                    and not host.scheduler.running)
        assert request.abandoned.is_set()

    serving(host, str(native_checkpoint), test)
    assert 0 < registry_sample(metrics.registry, "deepseek_ocr_generated_tokens_total") < limit


@pytest.mark.parametrize("how", ["cancel", "abandon"])
def test_the_vllm_pool_aborts_a_generation_nobody_waits_for(openai_standin: OpenAIStandIn, tmp_path: Path, how: str) -> None:
    openai_standin.script.pieces = ["piece "] * 400
    openai_standin.script.piece_delay_s = 0.05
    pool, _ = vllm_pool(openai_standin)

    async def test(submitter: PageSubmitter) -> None:
        outcome, pieces = await read_then_leave(submitter, page(submitter, tmp_path), how)
        if how == "abandon":  # the text so far, cut short
            assert outcome[0].finish_reason == "length" and len(pieces) < 400
        await until(lambda: openai_standin.aborted == 1)

    serving(pool, "", test)
    assert openai_standin.completed == 0


def test_a_page_submitted_while_the_model_loads_is_refused_with_a_retry_after(tmp_path: Path) -> None:
    """A background worker may call before the model is ready: 503 with Retry-After, nothing queued."""
    host = LocalHost(load_settings(ocr_model_path="unused"), Metrics())
    request = PageRequest(image=Image.new("RGB", (8, 8)), prompt=PROMPT, mode=V2_MODES[0], work_dir=tmp_path)

    with pytest.raises(Unavailable) as refused:
        asyncio.run(host.submit(request))
    assert refused.value.headers == {"Retry-After": "10"} and not host.scheduler.queue
