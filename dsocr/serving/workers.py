"""Threads for the work around the model (decoding and rendering uploads, artifacts, run and history
housekeeping): a bounded pool of their own, apart from the model's thread, so that none of it can keep the
model waiting for a thread, and none of it shares asyncio's default pool with anything else."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

IO_WORKERS = 4
_pool = ThreadPoolExecutor(max_workers=IO_WORKERS, thread_name_prefix="dsocr-io")


async def in_worker(function: Callable[..., T], *args: Any) -> T:
    """Runs `function(*args)` on a worker thread of the pool and waits for it."""
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(function, *args))


def in_worker_later(function: Callable[..., Any], *args: Any) -> None:
    """Runs `function(*args)` on a worker thread of the pool, without waiting for it."""
    _pool.submit(function, *args)
