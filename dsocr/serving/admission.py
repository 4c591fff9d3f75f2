"""Admission control: a bounded number of OCR requests in the service at once (the slot is taken before the
upload is read)."""

from __future__ import annotations

from dsocr.errors import Unavailable
from dsocr.serving.metrics import Metrics

# Seconds an overloaded service asks clients to wait before retrying.
OVERLOAD_RETRY_AFTER_S = 5


class Admission:
    def __init__(self, max_admitted: int, metrics: Metrics, max_pages: int | None = None) -> None:
        self.max_admitted = max_admitted
        self.max_pages = max_pages
        self.metrics = metrics
        self.admitted = 0
        self.pages = 0  # pages of admitted requests, decoded or rendered, not yet answered

    def enter(self) -> None:
        """Takes a slot, or refuses at once with 503 when all are taken."""
        if self.admitted >= self.max_admitted:
            raise Unavailable(
                f"Server busy: {self.max_admitted} requests are queued or running (DEEPSEEK_OCR_MAX_QUEUE); retry later",
                headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_S)},
                reason="overloaded",
            )
        self.admitted += 1
        self.metrics.admitted.set(self.admitted)

    def leave(self) -> None:
        self.admitted -= 1
        self.metrics.admitted.set(self.admitted)

    def hold_pages(self, count: int) -> None:
        """Counts a request's pages against DEEPSEEK_OCR_MAX_QUEUE_PAGES, or refuses it with 503 (unless nothing
        else is held: a request alone is never refused for its size here, DEEPSEEK_OCR_MAX_PDF_PAGES bounds it)."""
        if self.max_pages is not None and self.pages and self.pages + count > self.max_pages:
            raise Unavailable(
                f"Server busy: {self.pages} pages are queued or running and this request has {count} "
                f"(DEEPSEEK_OCR_MAX_QUEUE_PAGES={self.max_pages}); retry later",
                headers={"Retry-After": str(OVERLOAD_RETRY_AFTER_S)},
                reason="overloaded",
            )
        self.pages += count
        self.metrics.admitted_pages.set(self.pages)

    def release_pages(self, count: int) -> None:
        self.pages -= count
        self.metrics.admitted_pages.set(self.pages)
