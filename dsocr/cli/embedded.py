"""The service inside the converting process, for a run without `--server`: the real app, imported by uvicorn as
`uvicorn app:app` imports it (so every DEEPSEEK_OCR_* setting applies), served on a free loopback port in this
process's event loop, for the same client to talk to. Its signal handlers need the main thread, which is why it
runs in the event loop and not in a thread of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import httpx

if TYPE_CHECKING:
    import uvicorn

READY_POLL_S = 0.2
# Folders the service writes, kept in a scratch folder unless set: a conversion leaves only its outputs behind.
SCRATCH_FOLDERS = {"DEEPSEEK_OCR_DATA_DIR": "data", "DEEPSEEK_OCR_RUNS_DIR": "runs",
                   "DEEPSEEK_OCR_HISTORY_DIR": "history"}
# In a data folder the person keeps (DEEPSEEK_OCR_DATA_DIR), the key the embedded service is given: jobs belong to
# the key that submitted them, so the next run needs the same one to find them again.
KEY_FILE = "convert-api-key"
QUIET_DEFAULTS = {
    "DEEPSEEK_OCR_LOG_LEVEL": "warning",  # the progress display is the interface; warnings and errors still show
    "DEEPSEEK_OCR_PAGE_PREVIEWS": "false",  # page previews are for the web page, not for files
}


class ServiceFailed(Exception):
    """The embedded service did not start, or cannot serve; the message says why."""


@dataclass
class Embedded:
    url: str
    api_key: str
    stopped: asyncio.Task  # done when the service has stopped, for whatever reason


@asynccontextmanager
async def embedded_service(model: str | None, stream: TextIO) -> AsyncIterator[Embedded]:
    """The app served until the block ends. Only this process knows the API key it is given (and the data folder,
    when one is kept), so that nothing else on the machine can use the loopback port meanwhile."""
    import uvicorn

    with tempfile.TemporaryDirectory(prefix="dsocr-convert-") as scratch:
        environment = {name: os.path.join(scratch, folder) for name, folder in SCRATCH_FOLDERS.items()
                       if not os.environ.get(name)}
        environment.update({name: value for name, value in QUIET_DEFAULTS.items() if not os.environ.get(name)})
        kept = os.environ.get("DEEPSEEK_OCR_DATA_DIR")
        api_key = _kept_key(Path(kept)) if kept else secrets.token_urlsafe(32)
        environment.update({"DEEPSEEK_OCR_API_KEYS": api_key, "DEEPSEEK_OCR_API_KEYS_FILE": ""})
        if model:
            environment["DEEPSEEK_OCR_MODEL_PATH"] = model
        os.environ.update(environment)
        config = uvicorn.Config("app:app", lifespan="on", access_log=False, log_level="warning")
        try:
            config.load()  # here, not in the task: a configuration error ends the command with its one line
        except SystemExit as exc:  # the app's own words ("Invalid configuration: ..."), or uvicorn's exit status
            raise ServiceFailed(exc.code if isinstance(exc.code, str) else "the app could not be loaded (see the "
                                "lines above)") from None
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        server = uvicorn.Server(config)
        stopped = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            await _wait_ready(server, stopped, url, api_key, stream)
            yield Embedded(url, api_key, stopped)
        finally:
            server.should_exit = True
            await asyncio.wait([stopped])
            listener.close()


def _kept_key(data_dir: Path) -> str:
    """The key kept in the data folder, made on first use; readable by its owner only."""
    path = data_dir / KEY_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key + "\n")
    return key


async def _wait_ready(server: uvicorn.Server, stopped: asyncio.Task, url: str, api_key: str, stream: TextIO) -> None:
    """Until /health says ready; the model's failure, or a service that stopped, ends the wait with its reason."""
    while not server.started:
        if stopped.done():
            raise ServiceFailed("the embedded service did not start (see the lines above)")
        await asyncio.sleep(READY_POLL_S)
    told = False
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {api_key}"}) as http:
        while True:
            if stopped.done():
                raise ServiceFailed("the embedded service stopped while loading the model (see the lines above)")
            response = await http.get("/health")
            if response.status_code == 200:
                return
            body = response.json()
            if body.get("status") == "error":
                raise ServiceFailed(f"the model cannot serve: {body.get('detail') or body}")
            if not told:
                print(f"Loading the model ({os.environ.get('DEEPSEEK_OCR_MODEL_PATH') or 'the default checkpoint'})...",
                      file=stream, flush=True)
                told = True
            await asyncio.sleep(READY_POLL_S)
