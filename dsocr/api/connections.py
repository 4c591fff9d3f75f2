"""Connections as uvicorn accepts them, guarded: at most DEEPSEEK_OCR_MAX_CONNECTIONS open at once (one more is
closed as soon as it is accepted, before the file descriptors run out), and a request head that has not arrived
DEEPSEEK_OCR_HEADER_TIMEOUT_S after its first byte (or after the connection opened) closes the connection. Without
them one client opening connections that never finish their head holds every file descriptor. uvicorn uses this
protocol when started with `--http dsocr.api.connections:GuardedH11Protocol` (start.sh and the container do)."""

from __future__ import annotations

import asyncio
import functools
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from settings import Settings, load_settings

log = logging.getLogger("deepseek_ocr.connections")

# A line about connections refused for the cap at most this often.
REFUSED_LOG_INTERVAL_S = 60


@functools.cache
def _settings() -> Settings:
    """The settings, read once per process (the app reads the same environment)."""
    return load_settings()


class GuardedH11Protocol(H11Protocol):
    refused = 0  # connections closed for the cap since the last line about them
    refused_logged_at: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.head_deadline: asyncio.TimerHandle | None = None
        if len(self.connections) > _settings().ocr_max_connections:
            self._refuse()
            return
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        if self.head_deadline is None and self.conn.their_state is h11.IDLE:
            self._start_head_deadline()  # the first byte of a kept-alive connection's next request
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        """Between requests uvicorn's keep-alive timeout rules; while a head is awaited, the deadline does."""
        if self.conn.their_state is h11.IDLE:
            if self.head_deadline is None:
                self._start_head_deadline()
        else:
            self._stop_head_deadline()

    def _start_head_deadline(self) -> None:
        self.head_deadline = self.loop.call_later(_settings().ocr_header_timeout_s, self._head_too_slow)

    def _stop_head_deadline(self) -> None:
        if self.head_deadline is not None:
            self.head_deadline.cancel()
            self.head_deadline = None

    def _head_too_slow(self) -> None:
        self.head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _refuse(self) -> None:
        """Closed at once, before any byte is read: past the cap, a connection costs nothing but its accept."""
        self.transport.abort()
        cls = GuardedH11Protocol
        cls.refused += 1
        now = self.loop.time()
        if cls.refused_logged_at is None or now - cls.refused_logged_at >= REFUSED_LOG_INTERVAL_S:
            log.warning("%d connection(s) closed at once: %d are open, DEEPSEEK_OCR_MAX_CONNECTIONS=%d",
                        cls.refused, len(self.connections), _settings().ocr_max_connections)
            cls.refused, cls.refused_logged_at = 0, now
