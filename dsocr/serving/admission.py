"""Admission control: a bounded number of OCR requests in the service at once (the slot is taken before the
upload is read)."""

from __future__ import annotations

from dsocr.errors import Unavailable
from dsocr.serving.metrics import Metrics

# Seconds an overloaded service asks clients to wait before retrying.
OVERLOAD_RETRY_AFTER_S = 5


class Admission:
    def __init__(self, max_admitted: int, metrics: Metrics) -> None:
        self.max_admitted = max_admitted
        self.metrics = metrics
        self.admitted = 0

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
