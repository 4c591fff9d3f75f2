"""The process around the app: the history opened at startup, SIGTERM's drain, SIGHUP's reload of the API keys,
and the loop that sweeps expired runs and history entries."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Callable

from fastapi import FastAPI

from dsocr.api.middleware.auth import ApiKeys
from dsocr.api.sse import streams_end
from dsocr.store.history import HistoryStore
from dsocr.pipeline.runs import RunStore
from dsocr.serving.submitter import PageSubmitter
from dsocr.store.changes import in_store
from settings import SettingsError

log = logging.getLogger("deepseek_ocr")

# How often expired runs (and history entries) are looked for, at most.
SWEEP_INTERVAL_S = 60


def open_history(app: FastAPI) -> HistoryStore | None:
    """The history, opened; one that cannot be opened (a corrupt database, an unwritable folder) is logged and
    turned off rather than stopping the service."""
    history_store: HistoryStore | None = app.state.history
    if history_store is None:
        return None
    try:
        history_store.open()
    except Exception as exc:
        log.error("history turned off: cannot open it in %s (DEEPSEEK_OCR_HISTORY_DIR): %s: %s",
                  history_store.folder, type(exc).__name__, exc)
        history_store.close()
        app.state.history = None
    return app.state.history


def reload_keys_on_sighup(api_keys: ApiKeys) -> None:
    """SIGHUP re-reads DEEPSEEK_OCR_API_KEYS_FILE (under uvicorn's main thread; tests' in-process clients call
    `reload` themselves)."""
    if threading.current_thread() is not threading.main_thread() or api_keys.keys_file is None:
        return
    loop = asyncio.get_running_loop()

    def reload() -> None:
        try:
            api_keys.reload()
        except (OSError, SettingsError) as exc:  # a key that could never match: SettingsError, naming its line
            log.error("SIGHUP: cannot re-read DEEPSEEK_OCR_API_KEYS_FILE (%s); the keys stay as they were", exc)

    signal.signal(signal.SIGHUP, lambda signum, frame: loop.call_soon_threadsafe(reload))


def drain_on_sigterm(app: FastAPI, host: PageSubmitter, grace_s: float) -> None:
    """Under uvicorn, SIGTERM first drains: new requests get 503, /health says "draining", admitted work gets
    `grace_s` to finish (then fails with 503); only then is uvicorn told to stop. A fatal model error stops
    uvicorn at once, with a non-zero exit. Outside uvicorn's main thread (tests' in-process clients) neither
    applies."""
    uvicorn_handler = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(uvicorn_handler):
        return
    loop = asyncio.get_running_loop()
    stop_server: Callable[[], None] = lambda: uvicorn_handler(signal.SIGTERM, None)  # noqa: E731
    draining: list[asyncio.Task] = []

    async def drain() -> None:
        log.info("SIGTERM: draining for up to %g s (DEEPSEEK_OCR_SHUTDOWN_GRACE_S)", grace_s)
        # The job worker claims nothing more; what it holds and cannot finish in time goes back to the queue.
        await asyncio.gather(app.state.jobs.stop_working(grace_s), host.stop(grace_s))
        streams_end(app).set()  # streams still open (progress, job events) end with a final event
        stop_server()

    def start_draining() -> None:
        if draining:  # a second SIGTERM: stop now
            stop_server()
        else:
            draining.append(asyncio.create_task(drain()))

    def fatal() -> None:
        app.state.exit_code = 1
        stop_server()

    signal.signal(signal.SIGTERM, lambda signum, frame: loop.call_soon_threadsafe(start_draining))
    host.on_fatal = fatal


def start_sweeping(runs: RunStore, history_store: HistoryStore | None, run_ttl_s: float) -> asyncio.Task:
    """The sweep loop, looking every SWEEP_INTERVAL_S, or sooner when runs expire sooner."""
    return asyncio.create_task(sweep(runs, history_store, min(SWEEP_INTERVAL_S, max(run_ttl_s, 1))))


async def sweep(runs: RunStore, history_store: HistoryStore | None, interval_s: float) -> None:
    """Removes expired runs and history entries now and then; a failed round is logged, the next one runs."""
    while True:
        await asyncio.sleep(interval_s)
        for housekeeping in (runs.sweep, history_store.prune if history_store else None):
            if housekeeping is None:
                continue
            try:
                await in_store(housekeeping)
            except Exception:
                log.exception("housekeeping (%s) failed; trying again in %g s", housekeeping.__qualname__, interval_s)
