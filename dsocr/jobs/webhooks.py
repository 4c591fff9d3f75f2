"""Webhooks: when a job ends, its summary is POSTed to the job's callbackUrl, signed with the shared secret
(`X-DeepSeek-OCR-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`), retried with backoff.
Deliveries are rows of the store (an outbox), so a restart does not drop them; only hosts an operator listed
(DEEPSEEK_OCR_WEBHOOK_HOSTS) are ever called."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from urllib.parse import urlsplit

import httpx

from dsocr.errors import InvalidField
from dsocr.store.changes import Changes, in_store
from dsocr.store.jobs import JobStore

log = logging.getLogger("deepseek_ocr.webhooks")

SIGNATURE_HEADER = "X-DeepSeek-OCR-Signature"
TIMEOUT_S = 10
LEASE_S = 60
# Retries after 1, 2, 4 ... seconds, at most 5 minutes apart, for MAX_ATTEMPTS deliveries (about an hour).
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_ATTEMPTS = 16
DEFAULT_PORTS = {"http": 80, "https": 443}


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def host_allowed(scheme: str, host: str, port: int | None, hosts: list[str]) -> bool:
    """Whether DEEPSEEK_OCR_WEBHOOK_HOSTS allows this host and port: an entry `host:port` allows that port, a bare
    `host` any port of that host. Names are compared as written (no DNS is asked), case aside."""
    port = port or DEFAULT_PORTS[scheme]
    for entry in hosts:
        parts = urlsplit(f"//{entry.strip()}")
        if (parts.hostname or "") == host.lower() and parts.port in (None, port):
            return True
    return False


def check_callback_url(url: str, hosts: list[str]) -> str:
    """The callback URL, if an operator allowed its host; else a 422 (no request is ever made to it)."""
    if len(url) > 2000:
        raise InvalidField("callbackUrl is longer than 2000 characters")
    if not url.isascii() or not url.isprintable() or " " in url:
        raise InvalidField("callbackUrl must be plain ASCII, without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)  # what the sender will make of it: refused here, not when the job ends
    except (ValueError, httpx.InvalidURL):
        raise InvalidField("callbackUrl is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidField("callbackUrl must be an http(s) URL with a host")
    if "@" in parts.netloc:
        raise InvalidField("callbackUrl must not carry credentials")
    if port == 0:
        raise InvalidField("callbackUrl's port must be 1 to 65535")
    if not hosts:
        raise InvalidField("Callbacks are turned off on this service (DEEPSEEK_OCR_WEBHOOK_HOSTS is empty)")
    if not host_allowed(parts.scheme.lower(), parts.hostname, port, hosts):
        raise InvalidField(f"callbackUrl's host {parts.netloc!r} is not one this service may call "
                           "(DEEPSEEK_OCR_WEBHOOK_HOSTS)")
    return url


class WebhookSender:
    """Delivers due webhooks one at a time, from any replica (a delivery is leased while it is tried)."""

    def __init__(self, store: JobStore, changes: Changes, secret: str, hosts: list[str]) -> None:
        self.store = store
        self.changes = changes
        self.secret = secret
        self.hosts = hosts
        self.client = httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._serve(), name="webhooks")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.aclose()

    async def _serve(self) -> None:
        while True:
            try:
                delivery = await in_store(self.store.due_webhook, LEASE_S)
            except Exception as exc:
                log.warning("cannot look for due webhooks: %s", exc)
                delivery = None
            if delivery is None:
                await self.changes.wait("webhook", BACKOFF_MAX_S)
                continue
            try:
                await self._deliver(delivery)
            except Exception:  # one delivery's trouble never stops the others'
                log.exception("webhook for job %s failed", delivery["job_id"])

    async def _deliver(self, delivery: dict) -> None:
        body = delivery["body"].encode("utf-8")
        try:
            check_callback_url(delivery["url"], self.hosts)  # the list may have changed since the submit
        except InvalidField as exc:
            await in_store(self.store.webhook_failed, delivery["id"], exc.detail, None)
            log.warning("webhook for job %s not sent: %s", delivery["job_id"], exc.detail)
            return
        headers = {"Content-Type": "application/json", "User-Agent": "deepseek-ocr-service"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(time.time()))
        try:
            response = await self.client.post(delivery["url"], content=body, headers=headers)
            error = None if response.is_success else f"answered {response.status_code}"
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
            await in_store(self.store.webhook_delivered, delivery["id"])
            return
        attempts = delivery["attempts"]
        retry_at = None if attempts >= MAX_ATTEMPTS else time.time() + min(BACKOFF_BASE_S * 2 ** (attempts - 1),
                                                                          BACKOFF_MAX_S)
        log.warning("webhook for job %s failed (attempt %d): %s%s", delivery["job_id"], attempts, error,
                    "" if retry_at else "; giving up")
        await in_store(self.store.webhook_failed, delivery["id"], error, retry_at)
