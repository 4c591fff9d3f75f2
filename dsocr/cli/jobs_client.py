"""The jobs API as the converter uses it: submit one document, follow its job, fetch its result and figures.
Every request is retried where retrying is safe: 503 and 429 after their Retry-After, lost connections and
gateway errors with backoff; a submit is safe to retry because it carries an Idempotency-Key."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

FINAL = frozenset({"succeeded", "partial", "failed", "cancelled"})
# Lost connections: tries, and the backoff between them (doubling from the first, capped); about 3 minutes in all.
CONNECTION_TRIES = 9
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Answers that mean "not now": waited out for at most BUSY_PATIENCE_S per request, each wait as the server asks
# (within bounds), or DEFAULT_RETRY_AFTER_S when it does not say.
BUSY_STATUSES = frozenset({429, 503})
GATEWAY_STATUSES = frozenset({502, 504})  # a proxy that lost the service for a moment
BUSY_PATIENCE_S = 3600.0
DEFAULT_RETRY_AFTER_S = 5.0
MAX_RETRY_AFTER_S = 300.0
MIN_RETRY_AFTER_S = 0.5  # "Retry-After: 0" must not turn into a busy loop
# A job is followed by long-polling: each GET answers when the job changes, or after this long.
POLL_WAIT_S = 30
# Long enough for a long-poll and for a large upload's answer; connecting should be quick.
TIMEOUT = httpx.Timeout(POLL_WAIT_S + 90, connect=10)

Sleep = Callable[[float], Awaitable[None]]


# Answers that every other request would get too: a wrong or missing API key, a server without the jobs API.
FATAL_STATUSES = frozenset({401, 403})


class RequestFailed(Exception):
    """A request the server refused (`status`), or that could not be made; the message is what the summary says.
    `fatal`: every other request would fail the same way (the server out of reach, the key refused)."""

    def __init__(self, message: str, status: int | None = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.fatal = fatal or status in FATAL_STATUSES


def retry_after_s(response: httpx.Response) -> float:
    """The wait a busy answer asks for: Retry-After in seconds or as a date, within bounds."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        delay = float(value)
    else:
        try:
            delay = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            delay = DEFAULT_RETRY_AFTER_S
    return min(max(delay, MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S)


def refusal(response: httpx.Response) -> str:
    """The server's reason for an error answer: its `detail`, or the start of its body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = response.text.strip()[:200] or response.reason_phrase
    return f"{detail} (HTTP {response.status_code})"


class JobsClient:
    def __init__(self, server_url: str, api_key: str | None, transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self.server_url = server_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=self.server_url, headers=headers, timeout=TIMEOUT,
                                      transport=transport, follow_redirects=True)
        self.sleep = sleep

    async def close(self) -> None:
        await self.http.aclose()

    async def submit(self, path: Path, file_name: str, content_type: str, fields: dict[str, str],
                     idempotency_key: str) -> dict[str, Any]:
        """POST /api/jobs with one file; the job as the 202 answer describes it."""
        response = await self._send("POST", "/api/jobs", upload=(path, file_name, content_type), data=fields,
                                    headers={"Idempotency-Key": idempotency_key})
        if response.status_code == 404:
            raise RequestFailed(f"{self.server_url} has no jobs API (POST /api/jobs answered 404): is it this "
                                "service, and a version with jobs?", 404, fatal=True)
        if response.status_code != 202:
            raise RequestFailed(refusal(response), response.status_code)
        return response.json()

    async def job(self, job_id: str, wait_s: float = 0) -> dict[str, Any] | None:
        """The job's status (after up to `wait_s` of long-polling); None when the server does not know it."""
        response = await self._send("GET", f"/api/jobs/{job_id}", params={"wait": wait_s} if wait_s else None)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RequestFailed(refusal(response), response.status_code)
        return response.json()

    async def follow(self, job_id: str, on_change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Long-polls the job until it ends; `on_change` sees every status on the way. Its final status."""
        while True:
            view = await self.job(job_id, POLL_WAIT_S)
            if view is None:
                raise RequestFailed(f"the job {job_id} was removed from the server before it ended")
            on_change(view)
            if view["status"] in FINAL:
                return view

    async def result(self, job_id: str) -> dict[str, Any]:
        response = await self._send("GET", f"/api/jobs/{job_id}/result")
        if response.status_code != 200:
            raise RequestFailed(refusal(response), response.status_code)
        return response.json()

    async def download(self, link: str) -> bytes:
        """An artifact of a result (a figure crop) by the link in its answer: a path from the server's root."""
        response = await self._send("GET", urljoin(self.server_url + "/", link))
        if response.status_code != 200:
            raise RequestFailed(f"{link}: {refusal(response)}", response.status_code)
        return response.content

    async def _send(self, method: str, url: str, upload: tuple[Path, str, str] | None = None,
                    **options: Any) -> httpx.Response:
        """One request, sent again while the server is busy or out of reach. An upload's file is opened anew for
        every try, so that a retry sends it whole."""
        connection_failures = 0
        busy_s = 0.0
        while True:
            try:
                if upload is None:
                    response = await self.http.request(method, url, **options)
                else:
                    path, file_name, content_type = upload
                    with open(path, "rb") as file:
                        response = await self.http.request(method, url, files={"file": (file_name, file, content_type)},
                                                           **options)
            except httpx.TransportError as exc:
                connection_failures += 1
                if connection_failures >= CONNECTION_TRIES:
                    raise RequestFailed(f"cannot reach {self.server_url}: {exc or type(exc).__name__}",
                                        fatal=True) from None
                await self.sleep(min(BACKOFF_FIRST_S * 2 ** (connection_failures - 1), BACKOFF_MAX_S))
                continue
            except OSError as exc:  # the upload's file, gone or unreadable since it was found
                raise RequestFailed(f"cannot read the file: {exc.strerror or exc}") from None
            if response.status_code in GATEWAY_STATUSES and connection_failures + 1 < CONNECTION_TRIES:
                connection_failures += 1
                await self.sleep(min(BACKOFF_FIRST_S * 2 ** (connection_failures - 1), BACKOFF_MAX_S))
                continue
            if response.status_code in BUSY_STATUSES:
                delay = retry_after_s(response)
                if busy_s + delay > BUSY_PATIENCE_S:
                    raise RequestFailed(f"the server stayed busy for {busy_s / 60:.0f} minutes: "
                                        f"{refusal(response)}", response.status_code)
                busy_s += delay
                await self.sleep(delay)
                continue
            return response
