"""The service's log: its own lines and uvicorn's, as text or as one JSON object a line, each with the id of the
request it was written for; probe access lines left out unless asked for; no progress bars."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import time
from datetime import datetime, timezone

SERVICE_LOGGER = "deepseek_ocr"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Access lines of these paths are left out by default: a load balancer probes every few seconds. Matched at the
# end of the path, which may have a root path in front (uvicorn's --root-path).
PROBE_PATH = re.compile(r"^(?!.*/api/)[^?]*/(health(/live|/ready)?|metrics)/?(\?.*)?$")
TEXT_FORMAT = "%(levelname)s:     %(name)s: %(message)s"
# asyncio's message when accept() fails for want of file descriptors or memory (asyncio/selector_events.py).
ACCEPT_FAILED = "socket.accept() out of system resource"
# uvicorn's warning for each connection whose request it cannot parse (uvicorn/protocols/http/h11_impl.py).
INVALID_REQUEST = "Invalid HTTP request received."
REPEATED_LINE_INTERVAL_S = 60

# The id of the request being served (set by dsocr.api.middleware.request_ids), for every line logged meanwhile.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being served (or "-") on every record as `request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id.get() or "-"
        return True


class TextFormatter(logging.Formatter):
    """uvicorn's look, with the request id after lines written while a request was served."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", "-")
        if request_id != "-" and not hasattr(record, "fields"):  # a summary line names its id itself
            line += f" [request {request_id}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, and a summary line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "-")
        if request_id != "-":
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class ProbeFilter(logging.Filter):
    """Drops uvicorn's access lines for the probe paths."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        path = str(args[2]) if len(args) > 2 else ""
        return PROBE_PATH.search(path) is None


class RepeatedLineFilter(logging.Filter):
    """At most one line a minute of those starting with `prefix`, the next one through counting those left out: for
    lines a client can cause once per connection, which a flood of connections turns into megabytes of log."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.next_line_at = 0.0
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if now < self.next_line_at:
            self.left_out += 1
            return False
        self.rewrite(record, f" ({self.left_out} more such since the last line)" if self.left_out else "")
        self.next_line_at, self.left_out = now + REPEATED_LINE_INTERVAL_S, 0
        return True

    def rewrite(self, record: logging.LogRecord, left_out: str) -> None:
        record.msg, record.args = "%s%s", (record.getMessage(), left_out)


class AcceptFailureFilter(RepeatedLineFilter):
    """asyncio logs a traceback for every accept() that fails for want of file descriptors, and retries a second
    later: one line without the traceback instead, saying what to bound."""

    def __init__(self) -> None:
        super().__init__(ACCEPT_FAILED)

    def rewrite(self, record: logging.LogRecord, left_out: str) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        record.msg = ("socket.accept() failed (%s): connections wait until descriptors are free; bound them with "
                      "DEEPSEEK_OCR_MAX_CONNECTIONS below `ulimit -n`, and in the proxy in front%s")
        record.args = (cause or "out of system resources", left_out)
        record.exc_info, record.exc_text = None, None


def configure_logging(log_format: str = "text", level: str = "info", probes: bool = False) -> None:
    """Sets the service's handler and uvicorn's handlers to one format; can be called again (settings change)."""
    # transformers and huggingface_hub draw progress bars (loading weights, downloads) unless told not to.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    service = logging.getLogger(SERVICE_LOGGER)
    if not service.handlers:
        service.addHandler(logging.StreamHandler())
    service.setLevel(level.upper())
    # uvicorn keeps its own look in text; in JSON every line is JSON.
    loggers = (service, *(logging.getLogger(name) for name in UVICORN_LOGGERS)) if log_format == "json" else (service,)
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, ProbeFilter)]:
        access.removeFilter(old)
    if not probes:
        access.addFilter(ProbeFilter())
    logging.getLogger("uvicorn.error").setLevel(level.upper())
    event_loop = logging.getLogger("asyncio")
    if not any(isinstance(f, AcceptFailureFilter) for f in event_loop.filters):
        event_loop.addFilter(AcceptFailureFilter())
    server = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, RepeatedLineFilter) for f in server.filters):
        server.addFilter(RepeatedLineFilter(INVALID_REQUEST))
