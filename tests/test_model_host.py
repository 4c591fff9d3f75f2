"""The model host and its scheduler: one thread for the model, a total batch loop, out-of-memory retries, device
failures, shutdown.

Most of these use a TEST DOUBLE engine (ScriptedEngine below) because what they check cannot be produced by the
real tiny checkpoint on a CPU: instant answers, CUDA out-of-memory, CUDA errors, an engine breaking its
contract. The HTTP-level tests run the real checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Callable

import pytest
import torch
from PIL import Image

from helpers import image_bytes, registry_sample
from dsocr.catalogue import V2_MODES, ModelFamily, vision_tokens
from dsocr.errors import ServiceError, Unavailable
from dsocr.serving.metrics import Metrics
from dsocr.serving.local_host import LocalHost
from dsocr.serving.submitter import EngineDead
from dsocr.serving.workers import IO_WORKERS, in_worker
from ocr_engine import EngineInfo, OcrEngine, PageRequest, PageResult
from settings import load_settings

BASE, GUNDAM = V2_MODES
WAIT_S = 60


class ScriptedEngine(OcrEngine):
    """TEST DOUBLE: answers at once ("page N" for the Nth page it sees), or as `script(batch)` says."""

    def __init__(self, script: Callable[[list[PageRequest]], list[PageResult]] | None = None) -> None:
        self.info = EngineInfo("scripted", "scripted", ModelFamily.v2, "cpu", "float32", "eager", V2_MODES)
        self.script = script
        self.batches: list[list[PageRequest]] = []
        self.threads: set[str] = set()

    def read_batch(self, batch: list[PageRequest]) -> list[PageResult]:
        self.batches.append(list(batch))
        self.threads.add(threading.current_thread().name)
        if self.script:
            return self.script(batch)
        return [PageResult(f"page {len(self.batches)}", "stop", 1) for _ in batch]


def page(mode=BASE, size: tuple[int, int] = (64, 64)) -> PageRequest:
    return PageRequest(image=Image.new("RGB", size, "white"), prompt="<image>\nFree OCR.", mode=mode, work_dir=Path("."))


def run_host(engine: OcrEngine, test: Callable[[LocalHost], object], **settings: object) -> tuple[LocalHost, list]:
    """Runs `test(host)` (a coroutine function) on a host serving `engine`; returns the host and its fatal calls."""
    fatal: list = []
    values = {"ocr_model_path": "unused", "ocr_batch_wait_ms": 0, **settings}

    async def main() -> LocalHost:
        host = LocalHost(load_settings(**values), Metrics(), on_fatal=lambda: fatal.append(True))
        host.serve(engine)
        try:
            await asyncio.wait_for(test(host), WAIT_S)
        finally:
            await host.stop(0)
        return host

    return asyncio.run(main()), fatal


def histogram(host: LocalHost, name: str) -> tuple[float, float]:
    registry = host.scheduler.metrics.registry
    return registry_sample(registry, f"{name}_count"), registry_sample(registry, f"{name}_sum")


def test_the_model_runs_on_its_own_thread_while_every_other_pool_is_busy() -> None:
    """Rendering, artifacts and housekeeping can take every worker thread: a page still reaches the model."""
    engine = ScriptedEngine()
    release = threading.Event()

    async def test(host: LocalHost) -> None:
        loop = asyncio.get_running_loop()
        blockers = [in_worker(release.wait) for _ in range(IO_WORKERS)]
        blockers += [loop.run_in_executor(None, release.wait) for _ in range(64)]  # asyncio's default pool too
        try:
            result, _ = await host.submit(page())
        finally:
            release.set()
            await asyncio.gather(*blockers)
        assert result.raw_text == "page 1"

    run_host(engine, test)
    assert engine.threads == {"model"}


def test_a_page_that_leaves_during_the_batch_wait_never_makes_an_empty_batch(caplog) -> None:
    engine = ScriptedEngine()

    async def test(host: LocalHost) -> None:
        leaving = asyncio.ensure_future(host.submit(page()))
        while not host.scheduler.queue:
            await asyncio.sleep(0)
        leaving.cancel()
        result, _ = await host.submit(page())
        assert result.raw_text == "page 1"

    with caplog.at_level(logging.ERROR):
        host, _ = run_host(engine, test, ocr_batch_wait_ms=200)
    assert [len(batch) for batch in engine.batches] == [1]
    assert histogram(host, "deepseek_ocr_batch_size") == (1, 1)  # no batch of 0 observed
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


def test_queue_lookups_never_compare_page_images(monkeypatch) -> None:
    compared = []
    monkeypatch.setattr(Image.Image, "__eq__", lambda self, other: compared.append(1) or self is other)
    engine = ScriptedEngine()

    async def test(host: LocalHost) -> None:
        waiting = [asyncio.ensure_future(host.submit(page(size=(400, 400)))) for _ in range(12)]
        waiting[5].cancel()  # taken out of the queue while others wait
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert isinstance(outcomes.pop(5), asyncio.CancelledError)
        assert all(isinstance(result, PageResult) for result, _ in outcomes)

    run_host(engine, test, ocr_max_batch_size=4, ocr_batch_wait_ms=20)
    assert compared == []


def test_an_engine_answering_the_wrong_number_of_pages_fails_that_batch_only() -> None:
    answers = iter([[PageResult("only one", "stop", 1)]])
    engine = ScriptedEngine(lambda batch: next(answers, None) or [PageResult("ok", "stop", 1) for _ in batch])

    async def test(host: LocalHost) -> None:
        first = await asyncio.gather(*(host.submit(page()) for _ in range(2)), return_exceptions=True)
        assert all(isinstance(outcome, RuntimeError) and "1 result(s) for a batch of 2" in str(outcome) for outcome in first)
        result, _ = await host.submit(page())
        assert result.raw_text == "ok"

    host, fatal = run_host(engine, test, ocr_max_batch_size=2, ocr_batch_wait_ms=500)
    assert host.status != "error" and not fatal


def test_a_batch_out_of_device_memory_is_retried_page_by_page() -> None:
    def script(batch: list[PageRequest]) -> list[PageResult]:
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [PageResult(f"{batch[0].image.width}", "stop", 1)]

    engine = ScriptedEngine(script)

    async def test(host: LocalHost) -> None:
        outcomes = await asyncio.gather(*(host.submit(page(size=(60 + i, 64))) for i in range(3)))
        assert [result.raw_text for result, _ in outcomes] == ["60", "61", "62"]

    run_host(engine, test, ocr_max_batch_size=3, ocr_batch_wait_ms=500)
    assert [len(batch) for batch in engine.batches] == [3, 1, 1, 1]


def test_a_page_that_does_not_fit_even_alone_fails_alone_with_a_503_naming_mode_and_tokens() -> None:
    big = (2000, 1000)

    def script(batch: list[PageRequest]) -> list[PageResult]:
        if len(batch) > 1 or batch[0].image.size == big:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return [PageResult("fits", "stop", 1)]

    engine = ScriptedEngine(script)

    async def test(host: LocalHost) -> None:
        small, large = await asyncio.gather(
            host.submit(page(GUNDAM)), host.submit(page(GUNDAM, big)),
            return_exceptions=True,
        )
        assert small[0].raw_text == "fits"
        assert isinstance(large, Unavailable) and large.status_code == 503
        tokens = vision_tokens(GUNDAM, *big)
        assert tokens == 256 + 2 * 144  # a 2:1 page: two 768 tiles
        assert "'gundam'" in large.detail and f"{tokens} vision tokens" in large.detail

    host, fatal = run_host(engine, test, ocr_max_batch_size=2, ocr_batch_wait_ms=500)
    assert host.status != "error" and not fatal


def test_a_device_failure_fails_waiting_pages_with_503_and_ends_the_process() -> None:
    def script(batch: list[PageRequest]) -> list[PageResult]:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    engine = ScriptedEngine(script)

    async def test(host: LocalHost) -> None:
        outcomes = await asyncio.gather(*(host.submit(page()) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(outcome, EngineDead) and outcome.status_code == 503 for outcome in outcomes)
        with pytest.raises(ServiceError) as refused:
            await host.submit(page())
        assert refused.value.status_code == 503

    host, fatal = run_host(engine, test, ocr_max_batch_size=1)
    assert host.status == "error" and "device failed" in host.detail
    assert fatal == [True]


def test_a_dead_scheduler_loop_turns_health_503_and_the_request_503(start_client, monkeypatch) -> None:
    client = start_client(raise_server_exceptions=False)
    engine_type = type(client.app.state.model.engine)
    monkeypatch.setattr(engine_type, "max_batch_size", property(lambda self: 1 / 0))  # breaks the loop itself
    response = client.post("/api/ocr", files={"image": ("a.png", image_bytes())})
    assert response.status_code == 503, response.text
    assert "scheduler died" in response.json()["detail"]
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "error"
    assert "scheduler died" in health.json()["detail"]


def test_stopping_gives_the_grace_then_fails_what_is_left_and_stops_generation() -> None:
    started = threading.Event()

    def script(batch: list[PageRequest]) -> list[PageResult]:
        started.set()
        batch[0].abandoned.wait(WAIT_S)  # a generation that runs until it is told to stop
        return [PageResult("stopped", "length", 1)]

    engine = ScriptedEngine(script)
    requests = [page(), page()]

    async def test(host: LocalHost) -> None:
        waiting = [asyncio.ensure_future(host.submit(request)) for request in requests]
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        await host.stop(0.05)
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(o, Unavailable) and "shut down" in o.detail for o in outcomes)
        assert host.status == "draining"

    run_host(engine, test, ocr_max_batch_size=1)
    assert requests[0].abandoned.is_set()  # the running generation was told to stop
    assert len(engine.batches) == 1  # the queued page never ran


def test_a_default_mode_of_another_family_is_refused_before_the_weights_load(start_client, tmp_path: Path) -> None:
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text('{"model_type": "deepseek_ocr2"}')
    health = start_client(checkpoint=weightless, ocr_default_mode="tiny").get("/health").json()
    assert health["status"] == "error"
    assert "DEEPSEEK_OCR_DEFAULT_MODE='tiny' is not a mode of deepseek-ocr-2" in health["detail"]


def test_a_page_that_fails_its_batch_fails_alone_and_its_batch_mates_are_read() -> None:
    def script(batch: list[PageRequest]) -> list[PageResult]:
        if any(request.image.width == 1 for request in batch):
            raise ValueError("SizeDict(height=0, width=1024)")  # what the processor says of a 3000x1 strip
        return [PageResult("fine", "stop", 1) for _ in batch]

    engine = ScriptedEngine(script)

    async def test(host: LocalHost) -> None:
        outcomes = await asyncio.gather(*(host.submit(page(size=size))
                                          for size in ((64, 64), (1, 64), (64, 64))), return_exceptions=True)
        assert isinstance(outcomes[1], ValueError)
        assert [outcomes[0][0].raw_text, outcomes[2][0].raw_text] == ["fine", "fine"]

    host, fatal = run_host(engine, test, ocr_max_batch_size=3, ocr_batch_wait_ms=500)
    assert [len(batch) for batch in engine.batches] == [3, 1, 1, 1] and not fatal
