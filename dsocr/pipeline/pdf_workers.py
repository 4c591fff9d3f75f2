"""PDFs are opened and rendered in worker processes: PDFium is not thread-safe, and a crafted page can render for
minutes (nested form objects, hundreds of thousands of path operations), which only a process can be stopped
from. Each call has a time budget (DEEPSEEK_OCR_PDF_PAGE_TIMEOUT_S); past it, or when the request it serves is
cancelled (its client left), the worker is killed and a fresh one takes its place. Uploaded images are decoded
and made ready there too (dsocr.pipeline.page_images) when they go to a model server: the per-page CPU work runs
on as many cores as there are workers (DEEPSEEK_OCR_PDF_WORKERS), and the server's process only moves bytes."""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import Gauge

from dsocr.errors import BadUpload, InvalidField, PayloadTooLarge, ServiceError, UnsupportedType
from dsocr.pipeline import documents, page_images
from dsocr.pipeline.documents import PageImage
from dsocr.serving.workers import in_worker, in_worker_later

log = logging.getLogger("deepseek_ocr.pdf")

# Errors a worker may answer with, by name: they cross the process boundary as (name, detail).
ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls for cls in (BadUpload, InvalidField, PayloadTooLarge, UnsupportedType)
}
# A fresh interpreter per worker: forking a process that holds the model and its threads is not safe.
CONTEXT = multiprocessing.get_context("spawn")
PR_SET_PDEATHSIG = 1


def serve(conn: Connection) -> None:
    """A worker's loop: one call at a time, `(document key, PDF bytes or None, operation, arguments)`: "select"
    and "render" on a PDF, "image" to make an uploaded image ready (its bytes in place of the PDF's). The last
    document stays open, so that the pages of one upload are sent once."""
    # Ctrl-C and a SIGTERM sent to the whole group (systemd) stop the service, which stops its workers after
    # draining; a service killed outright takes its workers with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    document, loaded = None, None
    while True:
        try:
            key, data, operation, args = conn.recv()
        except (EOFError, OSError):  # the service is gone
            return
        try:
            if operation == "image":  # an uploaded image made ready; the open document stays open
                reply: tuple[Any, ...] = ("ok", page_images.prepare_upload(data, *args))
            else:
                if data is not None:
                    if document is not None:
                        document.close()
                    document, loaded = None, None
                    document, loaded = documents.open_pdf(data), key
                if loaded != key:
                    raise BadUpload("The PDF is not open in this worker")
                reply = ("ok", _on_document(document, operation, args))
        except ServiceError as exc:
            reply = ("error", type(exc).__name__, exc.detail)
        except Exception as exc:  # PDFium (or an image decoder) fails in many ways on broken files
            what = "the image" if operation == "image" else "the PDF"
            reply = ("error", "BadUpload", f"Cannot read {what}: {type(exc).__name__}: {exc}")
        conn.send(reply)


def _on_document(document: Any, operation: str, args: tuple) -> Any:
    if operation == "select":
        return documents.select_pages(document, *args)
    number, dpi, max_pixels, max_side, for_server, previews = args
    image = documents.render_page(document, number, dpi, max_pixels, max_side)
    return page_images.prepare(image, for_server, previews)


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the service's process dies, even mid-render (a render can take minutes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the worker still stops at its next read
        pass


class WorkerGone(Exception):
    """The worker process died (killed, crashed) before or while it answered."""


class Worker:
    def __init__(self) -> None:
        self.conn, child = CONTEXT.Pipe()
        self.process = CONTEXT.Process(target=serve, args=(child,), name="dsocr-pdf", daemon=True)
        self.process.start()
        child.close()  # only the worker holds its end: the worker sees EOF when the service dies
        self.loaded: int | None = None  # the document the worker has open
        self.gone = False

    @property
    def usable(self) -> bool:
        return not self.gone and self.process.is_alive()

    async def call(self, key: int, data: bytes, operation: str, args: tuple, timeout_s: float) -> Any:
        """The operation's result; asyncio.TimeoutError past `timeout_s`. The document is sent when the worker does
        not have it open yet."""
        message = (key, None if self.loaded == key and operation != "image" else data, operation, args)
        opened = self.loaded if operation == "image" else key  # an image leaves the worker's document open
        self.loaded = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            await asyncio.wait_for(in_worker(self._send, message), timeout_s)
        except (OSError, EOFError):
            self.gone = True
            raise WorkerGone() from None
        answered = loop.create_future()
        loop.add_reader(self.conn.fileno(), lambda: answered.done() or answered.set_result(None))
        try:
            await asyncio.wait_for(answered, max(deadline - loop.time(), 0))
        finally:
            loop.remove_reader(self.conn.fileno())
        try:
            reply = await in_worker(self._recv)
        except (EOFError, OSError):
            self.gone = True
            raise BadUpload("Cannot read the PDF: its renderer crashed") from None
        if reply[0] == "error":
            raise ERRORS.get(reply[1], BadUpload)(reply[2])
        self.loaded = opened
        return reply[1]

    # The pipe is written and read on I/O threads, blocking: uvloop leaves a descriptor it watched non-blocking, and a
    # message longer than the socket's buffer would then fail half sent or half read.

    def _send(self, message: tuple) -> None:
        os.set_blocking(self.conn.fileno(), True)
        self.conn.send(message)

    def _recv(self) -> Any:
        os.set_blocking(self.conn.fileno(), True)
        return self.conn.recv()

    def kill(self) -> None:
        """Kills the process; its pipe is closed (and the process reaped) off the event loop, once the process is
        gone, so that an I/O thread still reading it never reads a reused descriptor."""
        self.gone = True
        self.process.kill()
        in_worker_later(self._reap)

    def _reap(self) -> None:
        self.process.join(5)
        self.conn.close()


class PdfWorkers:
    """`count` worker processes, started with the service (or when first needed), each kept while it behaves and
    replaced when it is killed."""

    def __init__(self, count: int, timeout_s: float, busy: Gauge | None = None) -> None:
        self.count = count
        self.timeout_s = timeout_s
        self.busy = busy  # deepseek_ocr_pdf_workers_busy
        self.keys = itertools.count(1)
        self.free: asyncio.Semaphore | None = None
        self.idle: list[Worker] = []
        self.workers: set[Worker] = set()

    def document(self, data: bytes, dpi: float, max_pixels: int, max_side: int, for_server: bool = False,
                 previews: bool = False) -> "PdfSource":
        """An uploaded PDF whose pages are rendered at `dpi`, within `max_pixels` and `max_side` pixels a side, and
        made ready as dsocr.pipeline.page_images.prepare makes them."""
        return PdfSource(self, next(self.keys), data, (dpi, max_pixels, max_side, for_server, previews))

    async def image(self, data: bytes, max_pixels: int, max_side: int, for_server: bool, previews: bool) -> PageImage:
        """An uploaded image made ready in a worker (dsocr.pipeline.page_images.prepare_upload)."""
        return await self.call(next(self.keys), data, "image", (max_pixels, max_side, for_server, previews),
                               "Decoding the image")

    async def call(self, key: int, data: bytes, operation: str, args: tuple, what: str) -> Any:
        """Runs one operation in a free worker. Past the time budget the worker is killed and the request gets 422
        naming `what`; a cancelled call (the client left) kills its worker too."""
        if self.free is None:
            self.free = asyncio.Semaphore(self.count)
        async with self.free:
            worker = self._take(key)
            self._count_busy(1)
            try:
                try:
                    result = await worker.call(key, data, operation, args, self.timeout_s)
                except WorkerGone:  # it died while idle (OOM killer, a signal): nothing ran, a fresh one runs it
                    self._retire(worker)
                    worker = self._take(key)
                    result = await worker.call(key, data, operation, args, self.timeout_s)
            except BaseException as exc:
                if not isinstance(exc, ServiceError) or not worker.usable:
                    self._retire(worker)
                if isinstance(exc, WorkerGone):
                    raise BadUpload("Cannot read the PDF: its renderer stopped") from None
                if isinstance(exc, asyncio.TimeoutError):
                    why = ("the image is too large to decode" if operation == "image"
                           else "the PDF is too complex to render")
                    raise InvalidField(
                        f"{what} took longer than {self.timeout_s:g} s (DEEPSEEK_OCR_PDF_PAGE_TIMEOUT_S): {why}"
                    ) from None
                raise
            finally:
                self._count_busy(-1)
                if worker in self.workers:
                    self.idle.append(worker)
            return result

    def start(self) -> None:
        """Starts the workers now, so that the first PDF does not wait for an interpreter to start."""
        log.info("%d page worker processes (DEEPSEEK_OCR_PDF_WORKERS)", self.count)
        while len(self.workers) < self.count:
            worker = Worker()
            self.workers.add(worker)
            self.idle.append(worker)

    def _take(self, key: int) -> Worker:
        """An idle worker, the one that has the document open if there is one; a new one when none is idle."""
        for dead in [w for w in self.idle if not w.usable]:
            self.idle.remove(dead)
            self._retire(dead)
        if not self.idle:
            worker = Worker()
            self.workers.add(worker)
            return worker
        worker = next((w for w in self.idle if w.loaded == key), self.idle[-1])
        self.idle.remove(worker)
        return worker

    def _count_busy(self, change: int) -> None:
        if self.busy is not None:
            self.busy.inc(change)

    def _retire(self, worker: Worker) -> None:
        if worker in self.workers:  # once: a reaped process's id may belong to another process by now
            self.workers.discard(worker)
            worker.kill()

    def stop(self) -> None:
        for worker in list(self.workers):
            self._retire(worker)
        self.idle.clear()


class PdfSource:
    """One uploaded PDF, read through the workers: its page selection checked at once, its pages rendered when
    they are needed, on as many workers as are free (a long document's pages on every core). Workers are handed
    out first come, first served, so the pages of other documents take turns with a long one's."""

    def __init__(self, workers: PdfWorkers, key: int, data: bytes, render_args: tuple) -> None:
        self.workers = workers
        self.key = key
        self.data = data
        self.render_args = render_args

    async def select(self, page_spec: str | None, max_pages: int) -> list[int]:
        return await self.workers.call(self.key, self.data, "select", (page_spec, max_pages), "Opening the PDF")

    async def render(self, number: int) -> PageImage:
        return await self.workers.call(self.key, self.data, "render", (number, *self.render_args),
                                       f"Page {number} of the PDF")
